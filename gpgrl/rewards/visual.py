r"""Rewards for visual tasks: class labels, multiple choice and boxes (the paper's multimodal recipes).

Every one reads the completion's answer through `gpgrl.rewards.answers.answer_part` (an `<answer>…</answer>` block's
content, else the whole completion) and compares it with the gold in the `answer` column. An answer that cannot be
read (no text, no option, no box) scores None: RewardSet counts it in `reward_invalid/<name>` and scores it 0;
nothing raises.

* `label` (classification as Visual-RFT): the answer equals the gold after normalisation: case folded, spaces and
  underscores removed, leading and trailing punctuation dropped ("Golden_Retriever." = "golden retriever").
  `substring=True` is Visual-RFT's own rule (one contains the other). `mention=True` reads a free-form answer
  against the candidate labels of a `labels` column (the shapes tasks give one): correct when the gold is the only
  candidate the answer names as a whole word ("The shape is red." is right for red; "red or blue" names two
  candidates and is wrong, so listing labels never pays).
* `choice` (CV-Bench, SAT): the chosen option is the gold one. An option is a letter, "(B)", "B.", "B)" or
  "Answer: B"; the gold is a letter in one of those forms or the option's text; options are read from an
  `options` or `choices` column (texts in letter order) or from the prompt ("(A) 3 (B) 4"), so an answer may also
  name the option's text.
* `iou`: the intersection over union of the first box in the answer and the gold box, in [0, 1]. A box is
  `[x1, y1, x2, y2]` or `(x1,y1),(x2,y2)` (Qwen2-VL's grounding format); the gold is a list of four numbers or a
  string in either format (optionally in `<answer>` tags). An inverted box has area 0.
* `giou`: as Visual-RFT's LISA grounding reward computes it: GIoU + 1, in [0, 2] (2 for the same box), and 2.0 when
  the answer text equals the gold text.

>>> label(["q"] * 3, ["<answer> Golden_Retriever. </answer>", "retriever", ""], answer=["golden retriever"] * 3)
[1.0, 0.0, None]
>>> Label(mention=True)(["q"] * 3, ["The shape is red.", "red or blue", "a shape"], answer=["red"] * 3,
...                     labels=[["red", "blue", "green"]] * 3)
[1.0, 0.0, None]
>>> choice(["How many? (A) 3 (B) 4"] * 3, ["(B)", "The answer is A.", "4"], answer=["B"] * 3)
[1.0, 0.0, 1.0]
>>> iou(["q"] * 3, ["[0, 0, 10, 10]", "<answer>(0,0),(10,5)</answer>", "no box"], answer=[[0, 0, 10, 10]] * 3)
[1.0, 0.5, None]
>>> giou(["q"] * 2, ["[0, 0, 10, 10]", "[20, 0, 30, 10]"], answer=["[0, 0, 10, 10]"] * 2)
[2.0, 0.6666666666666667]
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from gpgrl.rewards.answers import answer_part, tagged_answer

_PUNCT = string.punctuation + "“”‘’"


def normalise_label(text: str) -> str:
    """Case folded, spaces and underscores removed, surrounding punctuation dropped."""
    return text.casefold().replace(" ", "").replace("_", "").strip(_PUNCT)


@dataclass(frozen=True)
class Label:
    """1.0 when the answer names the gold class (see the module docstring), 0.0 otherwise, None for no answer."""

    substring: bool = False
    """Visual-RFT's rule: correct when either normalised string contains the other (never for an empty answer)."""
    mention: bool = False
    """Free-form answers: correct when the gold is the only candidate of the `labels` column the answer names."""

    def __post_init__(self) -> None:
        if self.substring and self.mention:
            raise ValueError("substring and mention are two different rules: choose one")

    def __call__(self, prompts: list[Any], completions: list[Any], answer: list[Any],
                 labels: list[Any] | None = None, **kwargs: Any) -> list[float | None]:
        if self.mention:
            if labels is None:
                raise ValueError("label with mention=true needs a 'labels' column: the candidate labels of each row")
            return [_mentioned(answer_part(c), str(g), list(cands))
                    for c, g, cands in zip(completions, answer, labels, strict=True)]
        out: list[float | None] = []
        for completion, gold in zip(completions, answer, strict=True):
            said, want = normalise_label(answer_part(completion)), normalise_label(str(gold))
            if not said:
                out.append(None)
                continue
            match = said == want or (self.substring and (said in want or want in said))
            out.append(1.0 if match else 0.0)
        return out


def _words(text: str) -> str:
    """Lower-case words joined by single spaces, underscores as spaces, other punctuation dropped."""
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.casefold()).split())


def _mentioned(said: str, gold: str, candidates: list[str]) -> float | None:
    """1.0 when the gold is the only candidate named (as whole words) in `said`; None when none is named."""
    text = f" {_words(said)} "
    named = {_words(str(c)) for c in candidates if f" {_words(str(c))} " in text}
    if not named:
        return None
    return 1.0 if named == {_words(gold)} else 0.0


# ---------------------------------------------------------------- multiple choice

_LETTER = re.compile(r"^\(?([A-Z])\)?(?:[.):,\s]|$)")
_ANSWER_IS = re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE)
_PROMPT_OPTIONS = re.compile(r"\(([A-Z])\)\s*([^()\n]+?)\s*(?=\([A-Z]\)|\n|$)")


def _letter(text: str) -> str | None:
    """The option letter a text names: a leading '(B)' / 'B.' / 'B', or 'answer is B'."""
    text = text.strip()
    match = _LETTER.match(text) or _ANSWER_IS.search(text)
    return match.group(1).upper() if match else None


def _options(prompt: Any, row_options: Any) -> dict[str, str]:
    """Letter -> option text, from an `options` column (texts in letter order) or the prompt's '(A) ...' list."""
    if isinstance(row_options, (list, tuple)) and row_options:
        return {chr(ord("A") + i): str(o) for i, o in enumerate(row_options)}
    text = prompt if isinstance(prompt, str) else " ".join(str(m.get("content", "")) for m in prompt or [])
    return {letter: option for letter, option in _PROMPT_OPTIONS.findall(text)}


def _chosen(said: str, options: dict[str, str]) -> str | None:
    letter = _letter(said)
    if letter is not None:
        return letter
    by_text = [k for k, v in options.items() if normalise_label(v) == normalise_label(said)]
    return by_text[0] if len(by_text) == 1 else None


def choice(prompts: list[Any], completions: list[Any], answer: list[Any], options: list[Any] | None = None,
           **kwargs: Any) -> list[float | None]:
    """1.0 when the answer chooses the gold option, 0.0 for another option, None when it names no option. The
    option texts come from an `options` column, else a `choices` column (CV-Bench), else the prompt."""
    options = options if options is not None else kwargs.get("choices")
    out: list[float | None] = []
    for i, (prompt, completion, gold) in enumerate(zip(prompts, completions, answer, strict=True)):
        table = _options(prompt, options[i] if options is not None else None)
        said = answer_part(completion)
        chosen = _chosen(said, table)
        want = _chosen(str(tagged_answer(str(gold)) or gold), table)
        if chosen is None and want is None:  # no options known: compare the texts
            out.append(None if not normalise_label(said) else float(normalise_label(said) == normalise_label(gold)))
            continue
        out.append(None if chosen is None else float(chosen == want))
    return out


# ---------------------------------------------------------------- boxes

_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_SQUARE = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")
_PAIRS = re.compile(r"\(" + _NUMBER + "," + _NUMBER + r"\)\s*,\s*\(" + _NUMBER + "," + _NUMBER + r"\)")


def parse_box(value: Any) -> tuple[float, float, float, float] | None:
    """The first box in a text ('[x1, y1, x2, y2]' or '(x1,y1),(x2,y2)'), or a list of four numbers; else None.

    >>> parse_box("box: [1, 2.5, 3, 4]"), parse_box("(1,2),(3,4)"), parse_box([1, 2, 3, 4]), parse_box("[1, 2]")
    ((1.0, 2.5, 3.0, 4.0), (1.0, 2.0, 3.0, 4.0), (1.0, 2.0, 3.0, 4.0), None)
    """
    if isinstance(value, (list, tuple)):
        flat = list(value[0]) + list(value[1]) if len(value) == 2 and isinstance(value[0], (list, tuple)) else value
        ok = len(flat) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat)
        return tuple(float(v) for v in flat) if ok else None  # type: ignore[return-value]
    text = str(value)
    found = [m for m in (_SQUARE.search(text), _PAIRS.search(text)) if m is not None]
    if not found:
        return None
    first = min(found, key=lambda m: m.start())
    return tuple(float(v) for v in first.groups())  # type: ignore[return-value]


def _area(box: tuple[float, ...]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (0 when the union is empty)."""
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def box_giou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Generalised IoU in [-1, 1]: IoU minus the share of the enclosing box that the union leaves empty."""
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = _area(a) + _area(b) - inter
    enclosing = _area((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
    iou_ = inter / union if union > 0 else 0.0
    return iou_ - (enclosing - union) / enclosing if enclosing > 0 else iou_


def _gold_box(gold: Any) -> tuple[float, float, float, float] | None:
    return parse_box(tagged_answer(gold) or gold) if isinstance(gold, str) else parse_box(gold)


class BoxReward:
    """Shared parsing of the box rewards; subclasses score a parsed (answer, gold) pair."""

    correct_at = 0.5
    """Evaluation counts a box as correct from this score (IoU >= 0.5)."""
    mean_name = "mean_iou"

    def score(self, said: tuple[float, ...], gold: tuple[float, ...], said_text: str, gold_text: str) -> float:
        raise NotImplementedError

    def __call__(self, prompts: list[Any], completions: list[Any], answer: list[Any], **kwargs: Any) -> list[
            float | None]:
        out: list[float | None] = []
        for completion, gold in zip(completions, answer, strict=True):
            text, box, want = answer_part(completion), parse_box(answer_part(completion)), _gold_box(gold)
            if want is None:
                raise ValueError(f"the gold answer {gold!r} is not a box: give [x1, y1, x2, y2] or (x1,y1),(x2,y2)")
            out.append(None if box is None else self.score(box, want, text, str(tagged_answer(str(gold)) or gold)))
        return out


class IoU(BoxReward):
    """The IoU of the answer's first box with the gold box (module docstring)."""

    def score(self, said: tuple[float, ...], gold: tuple[float, ...], said_text: str, gold_text: str) -> float:
        return box_iou(said, gold)


class GIoU(BoxReward):
    """Visual-RFT's grounding reward: GIoU + 1 in [0, 2]; 2.0 when the answer text equals the gold text."""

    correct_at = 1.5  # GIoU >= 0.5
    mean_name = "mean_giou_plus_1"

    def score(self, said: tuple[float, ...], gold: tuple[float, ...], said_text: str, gold_text: str) -> float:
        return 2.0 if said_text.strip() == gold_text.strip() else box_giou(said, gold) + 1.0


label = Label()
iou = IoU()
giou = GIoU()
