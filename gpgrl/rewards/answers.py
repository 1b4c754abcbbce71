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
_BOXED = "\\boxed"


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


def answer_end(text: str) -> int | None:
    r"""Where the first complete answer ends: after the brace closing the first `\boxed{...}`, or after the first
    `</answer>` (whichever comes first); None while there is none. What `rollout.stop_after_answer` stops at.

    >>> answer_end(r"so \boxed{\frac{1}{2}}. More"), answer_end("<answer>4</answer>\n"), answer_end(r"\boxed{1")
    (22, 18, None)
    """
    ends = []
    tag = text.find("</answer>")
    if tag != -1:
        ends.append(tag + len("</answer>"))
    start = text.find(_BOXED)
    if start != -1:
        i = start + len(_BOXED)
        while i < len(text) and text[i].isspace():
            i += 1
        depth = 0
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0 and text[j] == "}":
                ends.append(j + 1)
                break
            if depth == 0:
                break  # \boxed not followed by a brace
    return min(ends) if ends else None
