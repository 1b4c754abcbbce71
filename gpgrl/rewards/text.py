r"""The built-in rewards for text answers: math accuracy, length-shaped correctness, formats, penalties, and
reasoning-gym's own scorer.

Owns `accuracy` (math-verify in worker processes, `gpgrl.rewards.verify`), `cosine`, `boxed_format`,
`think_format`, `soft_overlong`, `repetition_penalty`, `task_score` and the `\boxed{}` extraction they share.
Parameterised built-ins are frozen dataclasses whose fields are their parameters (`Cosine(max_len=2000)`, set
from the config as `reward.kwargs.cosine.max_len=2000`); each instance is a reward function. The contract every
reward follows is described in `gpgrl.rewards`.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gpgrl.rewards.answers import answer_part, completion_text, tagged_answer
from gpgrl.rewards.verify import DEFAULT_TIMEOUT_S, verify_batch

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- \boxed{...} extraction

_BOXED = "\\boxed"


def _boxed_contents(text: str) -> list[str | None]:
    r"""Contents of every `\boxed` command in order; None for one without a balanced `{...}` argument.

    >>> _boxed_contents(r"a \boxed{ 1 } b \boxed{\frac{1}{2}} c \boxed{x")
    [' 1 ', '\\frac{1}{2}', None]
    """
    out: list[str | None] = []
    start = text.find(_BOXED)
    while start != -1:
        i = start + len(_BOXED)
        while i < len(text) and text[i].isspace():
            i += 1
        out.append(_balanced(text, i) if i < len(text) and text[i] == "{" else None)
        start = text.find(_BOXED, start + len(_BOXED))
    return out


def _balanced(text: str, open_at: int) -> str | None:
    """The text between text[open_at] == '{' and its matching '}', or None if it is never closed."""
    depth = 0
    for j in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[open_at + 1:j]
    return None


def last_boxed(text: str) -> str | None:
    r"""The content of the last well-formed `\boxed{...}`, stripped; None if there is none.

    >>> last_boxed(r"first \boxed{1}, then \boxed{ \frac{1}{2} }"), last_boxed("no box")
    ('\\frac{1}{2}', None)
    """
    boxed = [b for b in _boxed_contents(text) if b is not None]
    return boxed[-1].strip() if boxed else None


# ---------------------------------------------------------------- parameter checks of the built-ins


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _verdicts(name: str, answer: Sequence[Any], completions: Sequence[str], timeout_s: float) -> list[float | None]:
    """math-verify verdicts under a wall-clock limit per answer; timeouts and crashes are logged."""
    result = verify_batch([str(a) for a in answer], completions, timeout_s)
    if result.timeouts or result.crashes:
        logger.warning("%s: %d of %d answers took longer than timeout_s=%g s to verify and %d crashed the "
                       "verifier: scored None (0, counted invalid)", name, result.timeouts, len(completions),
                       timeout_s, result.crashes)
    return result.scores


# ---------------------------------------------------------------- accuracy and cosine (math-verify)


def verifiable(completion: Any) -> str:
    r"""The text math-verify checks: an `<answer>` block's content, boxed unless it holds a box (the tag is the
    anchor), else the whole completion (which must box or anchor its answer).

    >>> verifiable("<think>x</think><answer> 7 </answer>"), verifiable("so \\boxed{7}")
    ('\\boxed{7}', 'so \\boxed{7}')
    """
    tagged = tagged_answer(completion)
    if tagged is None:
        return completion_text(completion)
    return tagged if _BOXED in tagged else f"{_BOXED}{{{tagged}}}"



@dataclass(frozen=True)
class Accuracy:
    r"""1.0 if the completion's final answer equals the gold answer (math-verify), else 0.0; None on timeout.

    The prediction is extracted with math-verify's LaTeX extractor, `\boxed{...}` first
    (`boxed_match_priority=0`), then its plain-expression extractor, both with
    `try_extract_without_anchor=False` as in the reference code's accuracy reward: the answer must be boxed or
    anchored ("the final answer is 47"); a bare number somewhere in the text earns nothing. Several different
    boxed answers count as a set and are wrong. A numeric gold needs a numeric answer: an unevaluated expression
    such as "42 - 49 - 70" (the question restated) earns nothing, and an equation counts by its right-hand side.
    Gold strings without `$`/`\boxed` are parsed as `$gold$`. An
    unparseable gold or prediction gives 0.0. Each check runs in a worker process (`gpgrl.rewards.verify`) killed after
    `timeout_s` seconds: a check that takes longer gives None (RewardSet counts it invalid and scores it 0).

    >>> accuracy(["q"], [r"so the answer is \boxed{0.5}"], answer=["1/2"])
    [1.0]
    >>> accuracy(["q"] * 3, [r"\boxed{71}", "the answer is 47", r"\boxed{\dfrac{3}{4}}"], answer=["72", "47", "0.75"])
    [0.0, 1.0, 1.0]
    >>> accuracy(["q", "q"], [r"\boxed{48} and \boxed{47}", "I think 46, then 47"], answer=["47", "47"])
    [0.0, 0.0]

    An `<answer>…</answer>` block (the multimodal references' format) is the answer: its content is checked as if
    boxed, so the tag is the anchor.

    >>> accuracy(["q", "q"], ["<think>3 + 4 = 8?</think><answer>7</answer>", "<answer>8</answer>"], answer=["7", "7"])
    [1.0, 0.0]
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    """Wall-clock limit of one answer check, in seconds."""

    def __post_init__(self) -> None:
        _check(self.timeout_s > 0, f"timeout_s={self.timeout_s} must be > 0")

    def __call__(self, prompts: list[str], completions: list[str], answer: list[Any],
                 **kwargs: Any) -> list[float | None]:
        return _verdicts("accuracy", answer, [verifiable(c) for c in completions], self.timeout_s)


@dataclass(frozen=True)
class Cosine:
    r"""Correctness scaled by length in characters with a cosine schedule (GPG_SPEC §6; open-r1's cosine reward).

    With p = min(len(completion) / max_len, 1): r = long + (short - long) * (1 + cos(pi * p)) / 2, using
    (correct_short, correct_long) for a correct answer (`Accuracy`'s verdict) and (wrong_short, wrong_long)
    otherwise. The defaults are the GPG / open-r1 recipe values: correct in [0.5, 1], wrong in [-0.5, 0], both
    falling with length (open-r1 names: max_value_correct = correct_short, min_value_correct = correct_long,
    min_value_wrong = wrong_short, max_value_wrong = wrong_long). Departures from open-r1: p is capped at 1
    (open-r1's cosine cycles back up beyond max_len), and an unparseable gold counts as wrong (open-r1: 1.0).
    A verification timeout gives None.

    >>> half, full = r"\boxed{7}".ljust(50), r"\boxed{7}".ljust(150)  # p = 0.5 and p = 1 (capped) for max_len 100
    >>> Cosine(max_len=100)(["q"] * 4, [half, full, half, full], answer=["7", "7", "8", "8"])
    [0.75, 0.5, -0.25, -0.5]
    """

    max_len: int = 1000
    """Length (characters) at which a completion gets the 'long' value."""
    correct_short: float = 1.0
    correct_long: float = 0.5
    wrong_short: float = 0.0
    wrong_long: float = -0.5
    timeout_s: float = DEFAULT_TIMEOUT_S
    """Wall-clock limit of one answer check, in seconds."""

    def __post_init__(self) -> None:
        _check(self.max_len > 0, f"max_len={self.max_len} must be > 0")
        _check(self.timeout_s > 0, f"timeout_s={self.timeout_s} must be > 0")

    def value(self, length: int, correct: bool) -> float:
        short, long = (self.correct_short, self.correct_long) if correct else (self.wrong_short, self.wrong_long)
        progress = min(length / self.max_len, 1.0)
        return long + (short - long) * (1.0 + math.cos(math.pi * progress)) / 2.0

    def __call__(self, prompts: list[str], completions: list[str], answer: list[Any],
                 **kwargs: Any) -> list[float | None]:
        verdicts = _verdicts("cosine", answer, [verifiable(c) for c in completions], self.timeout_s)
        return [None if v is None else self.value(len(completion_text(c)), v == 1.0)
                for c, v in zip(completions, verdicts, strict=True)]


# ---------------------------------------------------------------- format rewards


_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)(/\d+)?")
_FRACTION = re.compile(r"[-+]?\\[dt]?frac\{\s*-?\d+\s*\}\{\s*\d+\s*\}")
_UNIT = re.compile(r"(\\(text|mbox|mathrm)\{[^{}]*\}|\\?%|\^\s*\{?\\circ\}?|\\\$|\$)")
_CHOICE = re.compile(r"\(?[A-Z]\)?")
PLACEHOLDERS = frozenset({"answer", "result", "final answer", "your answer", "the answer", "number", "value",
                          "solution", "answer here", "..."})
"""Box contents that name the answer instead of giving it (compared case-insensitively, spaces collapsed)."""


def _normalised(content: str) -> str:
    return " ".join(content.replace("\\,", "").replace("\\!", "").replace("\\ ", " ").split())


def is_number(content: str) -> bool:
    r"""Whether a box's content is one number: an integer, decimal, fraction (3/4, \frac{3}{4}) with an optional
    sign, thousands separators, `$`, `%`, degrees or a `\text{}` unit; not an expression of numbers.

    >>> [is_number(c) for c in ["47", "-1,000.5", r"\$18", r"\dfrac{3}{4}", r"12\text{ cm}", "12 + 35", "result"]]
    [True, True, True, True, True, False, False]
    """
    bare = _UNIT.sub("", _normalised(content)).replace(" ", "")
    bare = re.sub(r"(?<=\d),(?=\d{3}\b)", "", bare)
    return bool(_NUMBER.fullmatch(bare) or _FRACTION.fullmatch(bare))


def answer_kind(gold: Any) -> str:
    """The kind of answer a gold asks for: 'number', 'choice' (one capital letter, e.g. a multiple-choice
    option) or 'text' (anything else: an expression, a set, a word).

    >>> answer_kind("-77"), answer_kind(r"\\frac{1}{2}"), answer_kind("(B)"), answer_kind("x^2 + 1")
    ('number', 'number', 'choice', 'text')
    """
    text = _normalised(str(gold).strip().strip("$"))
    if is_number(text):
        return "number"
    return "choice" if _CHOICE.fullmatch(text) else "text"


def _prompt_boxes(prompt: Any) -> set[str]:
    """What the prompt itself shows inside `\\boxed{}` (a format example such as \\boxed{ANSWER}), lower-cased."""
    text = completion_text(prompt) if not isinstance(prompt, list) else " ".join(
        str(m.get("content", "")) for m in prompt if isinstance(m, dict))
    return {_normalised(b).lower() for b in _boxed_contents(text) if b is not None and b.strip()}


def has_kind(content: str, kind: str, prompt_boxes: set[str] = frozenset()) -> bool:
    """Whether a box's content is an answer of `kind`: a number for 'number', a letter for 'choice'; for 'text'
    anything that is not blank, not a placeholder word and not a box the prompt shows."""
    text = _normalised(content)
    if kind == "number":
        return is_number(text)
    if kind == "choice":
        return bool(_CHOICE.fullmatch(text))
    lowered = text.lower()
    return bool(text) and lowered not in PLACEHOLDERS and lowered not in prompt_boxes


def boxed_format(prompts: list[Any], completions: list[Any], answer: Sequence[Any] | None = None,
                 **kwargs: Any) -> list[float | None]:
    r"""1.0 iff the completion holds exactly one `\boxed{...}` with balanced braces whose content has the gold
    answer's kind (`answer_kind`): a number for a numeric gold, one letter for a choice, else any content that is
    not a placeholder word (`PLACEHOLDERS`) or a box shown in the prompt. Without an `answer` column every gold
    counts as 'text'.

    It pays for the form of an answer, never for naming one: a placeholder (`\boxed{result}`, `\boxed{ANSWER}`)
    or the question restated (`\boxed{12 + 35}`) earns nothing. Policies trained on the old rule (any non-blank
    box) learned exactly those (docs/results.md, history).

    >>> boxed_format(["q"] * 6, [r"\boxed{42}", r"\boxed{result}", r"\boxed{12 + 35}", r"\boxed{1} \boxed{2}",
    ...                          r"\boxed{1", "42"], answer=["47"] * 6)
    [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    golds = list(answer) if answer is not None else [None] * len(completions)
    out: list[float | None] = []
    for prompt, completion, gold in zip(prompts, completions, golds, strict=True):
        boxes = _boxed_contents(completion_text(completion))
        kind = "text" if gold is None else answer_kind(gold)
        ok = len(boxes) == 1 and boxes[0] is not None and (
            _normalised(boxes[0]) == _normalised(str(gold)) or has_kind(boxes[0], kind, _prompt_boxes(prompt)))
        out.append(1.0 if ok else 0.0)
    return out


_THINK_ANSWER = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def think_format(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float | None]:
    r"""1.0 iff the completion is `<think>…</think>` then `<answer>…</answer>` and nothing else, else 0.0.

    Each tag occurs exactly once, only whitespace may surround the two blocks, and the answer is non-blank
    (the reasoning may be empty). Newlines around the tags are optional (open-r1's stricter `format` reward
    requires them; the multimodal GPG recipes do not).

    >>> think_format(["q"] * 4, ["<think>\n2+2\n</think>\n<answer>\n4\n</answer>", "<think>x</think><answer>4</answer>",
    ...                          "<answer>4</answer>", "<think>a</think><answer>4</answer><answer>5</answer>"])
    [1.0, 1.0, 0.0, 0.0]
    """
    out: list[float | None] = []
    for completion in map(completion_text, completions):
        match = _THINK_ANSWER.fullmatch(completion)
        once = all(completion.count(tag) == 1 for tag in _TAGS)
        out.append(1.0 if match and once and match["answer"].strip() else 0.0)
    return out


# ---------------------------------------------------------------- length and repetition penalties


@dataclass(frozen=True)
class SoftOverlong:
    r"""DAPO's soft overlong punishment on the completion length |y| in tokens (DAPO Eq. 13).

    0 if |y| <= max_len - cache; ((max_len - cache) - |y|) / cache if |y| <= max_len; -1 beyond. `max_len` is
    L_max, normally rollout.max_new_tokens (DAPO: 20480 with cache 4096). Token lengths come from the
    `completion_lengths` column, which gpgrl's `gpgrl eval` passes (`RewardSet(...)(..., completion_lengths=...)`);
    without it the function raises, so it can never score silently.

    >>> SoftOverlong(max_len=10, cache=4)(["q"] * 4, ["a"] * 4, completion_lengths=[6, 8, 10, 11])
    [0.0, -0.5, -1.0, -1.0]
    """

    max_len: int
    """L_max: the maximum completion length in tokens."""
    cache: int
    """L_cache: the soft punishment interval below max_len, in tokens."""

    def __post_init__(self) -> None:
        _check(self.max_len > 0, f"max_len={self.max_len} must be > 0")
        _check(0 < self.cache <= self.max_len, f"cache={self.cache} must be in (0, max_len={self.max_len}]")

    def __call__(self, prompts: list[str], completions: list[str], completion_lengths: list[int] | None = None,
                 **kwargs: Any) -> list[float | None]:
        if completion_lengths is None:
            raise ValueError("soft_overlong needs the completions' token lengths in the 'completion_lengths' "
                             "column: call RewardSet(...)(prompts, completions, columns, completion_lengths=...)")
        start = self.max_len - self.cache
        return [0.0 if n <= start else (start - n) / self.cache if n <= self.max_len else -1.0
                for n in completion_lengths]


@dataclass(frozen=True)
class RepetitionPenalty:
    r"""n-gram repetition penalty (open-r1; Yeo et al. 2025, App. C.2): max_penalty * (1 - distinct / total).

    Words are the lower-cased whitespace-separated tokens; `total` counts the word n-grams of the completion,
    `distinct` the different ones. Completions with fewer than `ngram_size` words get 0.

    >>> RepetitionPenalty(ngram_size=2)(["q"] * 3, ["a b a b a b", "one two three", "short"])
    [-0.6, 0.0, 0.0]
    """

    ngram_size: int = 3
    """n of the word n-grams."""
    max_penalty: float = -1.0
    """Value when every n-gram repeats the first one (must be <= 0)."""

    def __post_init__(self) -> None:
        _check(self.ngram_size >= 1, f"ngram_size={self.ngram_size} must be >= 1")
        _check(self.max_penalty <= 0, f"max_penalty={self.max_penalty} must be <= 0 (it is a penalty)")

    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float | None]:
        out: list[float | None] = []
        for completion in map(completion_text, completions):
            words = completion.lower().split()
            grams = list(zip(*(words[i:] for i in range(self.ngram_size)), strict=False))
            if len(words) < self.ngram_size or not grams:
                out.append(0.0)
                continue
            out.append((1.0 - len(set(grams)) / len(grams)) * self.max_penalty + 0.0)  # + 0.0: no -0.0
        return out


# ---------------------------------------------------------------- reasoning-gym scorer


@functools.cache
def _scorer(task: str) -> Callable[[str | None, dict[str, Any]], float]:
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(task)


def _final_answer(completion: Any) -> str:
    """The answer part's last well-formed `\\boxed{...}` content, else its last non-blank line; stripped."""
    completion = answer_part(completion)
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed
    lines = [line.strip() for line in completion.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def task_score(prompts: list[str], completions: list[str], entry: list[dict[str, Any]],
               **kwargs: Any) -> list[float | None]:
    r"""The reasoning-gym task's own scorer applied to the final answer (last box, else last line).

    The scorer is `reasoning_gym.get_score_answer_fn(entry["metadata"]["source_dataset"])` (the `task`
    column is used when the entry has no source_dataset). Its values are passed through unchanged, and
    some give **partial credit** to wrong answers: countdown gives 0.05 to any well-formed wrong expression,
    gsm_symbolic 0.01, and the default scorer (basic_arithmetic, chain_sum, products, ...) gives
    len(gold)/len(answer) when the gold is a substring of the answer ('-130' for '-13' scores 0.75). Use
    `accuracy` for a strict 0/1 reward. A scorer that raises gives None (counted invalid by RewardSet).

    >>> e = {"question": "Calculate -7 + -6.", "answer": "-13",
    ...      "metadata": {"source_dataset": "basic_arithmetic"}}
    >>> task_score(["q"] * 3, [r"\boxed{-13}", "-12", r"\boxed{-130}"], entry=[e] * 3)
    [1.0, 0.0, 0.75]
    """
    tasks = kwargs.get("task") or [None] * len(completions)
    out: list[float | None] = []
    for completion, item, task in zip(completions, entry, tasks, strict=True):
        name = item.get("metadata", {}).get("source_dataset") or task
        if not name:
            raise ValueError("task_score: an entry has no metadata.source_dataset and there is no 'task' "
                             "column")
        try:
            out.append(float(_scorer(name)(_final_answer(completion), item)))
        except Exception:
            out.append(None)
    return out


accuracy = Accuracy()
cosine = Cosine()
repetition_penalty = RepetitionPenalty()
