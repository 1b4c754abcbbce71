"""Held-out evaluation: one completion per item (greedy by default), scored by the accuracy reward.

Owns `evaluate`, which training calls before and after the run, and the JSON files it produces
(`accuracy`, `n`, the boxed-answer rate and every completion with its score).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpgrl.data import Example
from gpgrl.rewards import accuracy, boxed_format
from gpgrl.rollout import SamplingParams, generate


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    n: int
    boxed_rate: float
    records: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "n": self.n, "boxed_rate": self.boxed_rate}


def evaluate(model, tokenizer, examples: Sequence[Example], render: Callable[[Example], str],
             params: SamplingParams, scorer: Callable[..., list[float | None]] = accuracy) -> EvalResult:
    """Generate one completion per example (prompt text from `render`) and score it; accuracy is the mean
    score (None counts as 0)."""
    if not examples:
        return EvalResult(0.0, 0, 0.0, [])
    prompts = [render(ex) for ex in examples]
    groups = generate(model, tokenizer, prompts, 1, params)
    texts = [g[0].text for g in groups]
    questions = [ex.question for ex in examples]
    scores = scorer(questions, texts, answer=[ex.answer for ex in examples],
                    **{k: [ex.columns[k] for ex in examples] for k in examples[0].columns})
    boxed = boxed_format(questions, texts)
    scores = [float(s) if s is not None else 0.0 for s in scores]
    records = [{"index": ex.index, "question": ex.question, "answer": ex.answer, "completion": t,
                "score": s, "truncated": g[0].truncated}
               for ex, t, s, g in zip(examples, texts, scores, groups, strict=True)]
    return EvalResult(sum(scores) / len(scores), len(scores), sum(boxed) / len(boxed), records)


def write_eval(result: EvalResult, path: Path) -> None:
    """`path` gets the summary; a sibling `<stem>_completions.jsonl` gets every completion."""
    path.write_text(json.dumps(result.summary(), indent=2) + "\n")
    with path.with_name(path.stem + "_completions.jsonl").open("w", encoding="utf-8") as fh:
        for record in result.records:
            fh.write(json.dumps(record) + "\n")
