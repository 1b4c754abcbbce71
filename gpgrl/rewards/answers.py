r"""The one place a reward reads a completion's answer from.

Completions arrive as text, or (TRL's convention for conversational data) as a list of messages whose first
`content` is the text; `completion_text` accepts both. The multimodal references (R1-V, VisualThinker, Visual-RFT)
ask for `<think>…</think><answer>…</answer>`: `answer_part` is then the content of the first complete
`<answer>…</answer>` block, stripped, and otherwise the whole completion, stripped. Every answer-checking reward
(`accuracy`, `cosine`, `task_score`, `label`, `choice`, `iou`, `giou`) reads its answer through `answer_part`; the
format rewards (`boxed_format`, `think_format`) look at the whole completion.

>>> answer_part("<think>a red disc</think> <answer> Red </answer>"), answer_part("  blue. ")
('Red', 'blue.')
>>> completion_text([{"role": "assistant", "content": "<answer>3</answer>"}])
'<answer>3</answer>'
"""

from __future__ import annotations

import re
from typing import Any

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def completion_text(completion: Any) -> str:
    """The text of a completion given as a string or as a list of {role, content} messages (TRL)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[0], dict):
        return "".join(str(m.get("content", "")) for m in completion if m.get("role", "assistant") == "assistant")
    return str(completion)


def tagged_answer(completion: Any) -> str | None:
    """The stripped content of the first `<answer>…</answer>` block, or None when there is none."""
    match = ANSWER_TAG.search(completion_text(completion))
    return match.group(1).strip() if match else None


def answer_part(completion: Any) -> str:
    """What a reward reads as the answer: the `<answer>` block's content if any, else the whole completion."""
    tagged = tagged_answer(completion)
    return tagged if tagged is not None else completion_text(completion).strip()
