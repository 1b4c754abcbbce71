r"""Reward functions and the weighted reward set the trainer calls.

Owns the built-in rewards (`accuracy`, `boxed_format`, `task_score`, registered in `REWARDS`), loading a
reward by name (`load_reward_function`) and `RewardSet`, which calls several rewards, applies the
invalid-value policy and forms the weighted total.

Contract (TRL-style): `f(prompts, completions, **columns) -> list[float | None]`. `prompts` are the user
question texts, `completions` the generated texts, and every column is a list aligned with `completions`
(`answer`, and for reasoning-gym data `entry` and `task`). A function must accept unknown columns through
`**kwargs`; `None` means "no verdict" for that completion.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import math
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

from gpgrl.config import ConfigError, RewardConfig

RewardFunction = Callable[..., list[Any]]

MATH_VERIFY_TIMEOUT_S = 5
"""math-verify's per-call parse/verify timeout (signal.alarm based: main thread only)."""


class RewardError(RuntimeError):
    """A reward function misbehaved while scoring (raised, or returned the wrong number of values)."""


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


# ---------------------------------------------------------------- accuracy (math-verify)


def _timeout() -> int | None:
    """math-verify's timeouts use signal.alarm, which only works in the main thread: elsewhere, none."""
    return MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _parse_gold(gold: str, timeout: int | None) -> list[Any]:
    """Parse a gold answer; a plain string such as '47', '-3' or '1/2' is read as LaTeX math (`$gold$`)."""
    from math_verify import parse

    if "$" in gold or "\\boxed" in gold:
        return parse(gold, parsing_timeout=timeout)
    return parse(f"${gold}$", parsing_timeout=timeout) or parse(gold, parsing_timeout=timeout)


@functools.cache
def _prediction_config() -> tuple[Any, ...]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    # as the reference accuracy reward (GPG_SPEC §6): the answer must be boxed or anchored ("the answer is …");
    # a bare last number in the text does not count
    return (LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),
            ExprExtractionConfig(try_extract_without_anchor=False))


def _verify_one(gold: list[Any], completion: str, timeout: int | None) -> float:
    from math_verify import parse, verify

    try:
        pred = parse(completion, extraction_config=_prediction_config(), parsing_timeout=timeout)
        return 1.0 if gold and pred and verify(gold, pred, timeout_seconds=timeout) else 0.0
    except Exception:
        return 0.0


def accuracy(prompts: list[str], completions: list[str], answer: list[str],
             **kwargs: Any) -> list[float | None]:
    r"""1.0 if the completion's final answer equals the gold answer (math-verify), else 0.0.

    The prediction is extracted with math-verify's LaTeX extractor, `\boxed{...}` first
    (`boxed_match_priority=0`), then its plain-expression extractor, both with `try_extract_without_anchor=False`
    as in the reference code's accuracy reward: the answer must be boxed or anchored ("the final answer is 47");
    a bare number somewhere in the text earns nothing. Several
    different boxed answers count as a set and are wrong. Gold strings without `$`/`\boxed` are parsed
    as `$gold$`. An unparseable gold or prediction, and any exception, give 0.0. Timeouts: 5 s per parse
    and per verify in the main thread; none in other threads (math-verify's alarm only works there).

    >>> accuracy(["q"], [r"so the answer is \boxed{0.5}"], answer=["1/2"])
    [1.0]
    >>> accuracy(["q"], [r"\boxed{71}"], answer=["72"])
    [0.0]
    >>> accuracy(["q", "q"], ["the answer is 47", r"\boxed{-3}"], answer=["47", "-3"])
    [1.0, 1.0]
    >>> accuracy(["q"], [r"47 + 1 = 48, so \boxed{48} and \boxed{47}"], answer=["47"])
    [0.0]
    >>> accuracy(["q"], ["I think 46, then 47"], answer=["47"])
    [0.0]
    """
    timeout = _timeout()
    golds: dict[str, list[Any]] = {}
    out: list[float | None] = []
    for completion, gold in zip(completions, answer, strict=True):
        if gold not in golds:
            try:
                golds[gold] = _parse_gold(str(gold), timeout)
            except Exception:
                golds[gold] = []
        out.append(_verify_one(golds[gold], completion, timeout))
    return out


# ---------------------------------------------------------------- format and task scorer


def boxed_format(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float | None]:
    r"""1.0 iff the completion holds exactly one `\boxed{...}` with balanced braces and non-blank content.

    >>> boxed_format(["q"] * 5, [r"\boxed{42}", r"\boxed{}", r"\boxed{1} \boxed{2}", r"\boxed{1", "42"])
    [1.0, 0.0, 0.0, 0.0, 0.0]
    """
    out: list[float | None] = []
    for completion in completions:
        boxes = _boxed_contents(completion)
        out.append(1.0 if len(boxes) == 1 and boxes[0] is not None and boxes[0].strip() else 0.0)
    return out


@functools.cache
def _scorer(task: str) -> Callable[[str | None, dict[str, Any]], float]:
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(task)


def _final_answer(completion: str) -> str:
    """The last well-formed `\\boxed{...}` content, else the last non-blank line; stripped."""
    boxed = [b for b in _boxed_contents(completion) if b is not None]
    if boxed:
        return boxed[-1].strip()
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


REWARDS: Mapping[str, RewardFunction] = MappingProxyType(
    {"accuracy": accuracy, "boxed_format": boxed_format, "task_score": task_score})


# ---------------------------------------------------------------- loading by name


def _load_module(spec: str, where: str) -> ModuleType:
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        return _load_file(Path(spec), where)
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as err:
        if err.name and spec.startswith(err.name):
            raise ConfigError(f"{where}: module {spec!r} not found; check the spelling, that it is installed "
                              "or on PYTHONPATH, or give a file as path/to/file.py:function") from err
        raise ConfigError(f"{where}: importing module {spec!r} failed: {err}") from err


def _load_file(path: Path, where: str) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"{where}: file {str(path)!r} does not exist (relative paths start at "
                          f"{Path.cwd()})")
    name = f"gpgrl_user_reward_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{where}: cannot import {str(path)!r} as a Python module (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered first, as importlib does (dataclasses and pickling need it)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ConfigError(f"{where}: running {str(path)!r} failed: {err!r}") from err
    return module


def load_reward_function(name: str) -> RewardFunction:
    """A reward function: a built-in name (see REWARDS), 'package.module:function' or 'path/file.py:function'.

    Raises ConfigError saying what to fix in reward.functions.
    """
    where = f"reward.functions entry {name!r}"
    if name in REWARDS:
        return REWARDS[name]
    if ":" not in name:
        close = difflib.get_close_matches(name, list(REWARDS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown {where}: {hint}built-ins are {', '.join(REWARDS)}; a custom reward is "
                          "given as 'package.module:function' or 'path/to/file.py:function'")
    module_spec, _, attr = name.rpartition(":")
    if not module_spec or not attr:
        raise ConfigError(f"{where} must look like 'package.module:function' or 'path/to/file.py:function'")
    module = _load_module(module_spec, where)
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(attr, public, n=1, cutoff=0.6)
        hint = (f"; did you mean {close[0]!r}?" if close
                else f"; callables there: {', '.join(public) or 'none'}")
        raise ConfigError(f"{where}: {module_spec!r} has no attribute {attr!r}{hint}")
    function = getattr(module, attr)
    if not callable(function):
        raise ConfigError(f"{where}: {module_spec}:{attr} is a {type(function).__name__}, not a function")
    return function


# ---------------------------------------------------------------- the weighted reward set


@dataclass(frozen=True)
class RewardOutput:
    """Scores of one batch of completions.

    total: weighted sum per completion. per_function: each function's values after the invalid-value
    policy. invalid: per function, how many values were None, NaN or infinite (and replaced by 0.0).
    """

    total: list[float]
    per_function: dict[str, list[float]]
    invalid: dict[str, int]


def _as_float(value: Any, name: str, position: int) -> float | None:
    """A finite float, or None for None/NaN/inf; anything non-numeric is a RewardError."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise RewardError(f"reward function {name!r} returned {value!r} at position {position}: expected a "
                          "number or None") from err
    return number if math.isfinite(number) else None


def _labels(names: Sequence[str]) -> tuple[str, ...]:
    """Short metric names: 'pkg.mod:fn' and 'path/file.py:fn' become 'fn' unless two would collide."""
    short = tuple(n.rsplit(":", 1)[-1] for n in names)
    return short if len(set(short)) == len(short) else tuple(names)


class RewardSet:
    """Several reward functions with one weight each; calling it scores a batch of completions.

    Invalid-value policy: a None, NaN or infinite value becomes 0.0 for that function and is counted in
    `RewardOutput.invalid`. A function that returns the wrong number of values, returns a non-number, or
    raises is a RewardError naming it (the original exception is chained). Every function runs even with
    weight 0, so its values can be logged.
    """

    def __init__(self, names: Sequence[str], weights: Sequence[float]) -> None:
        names, weights = tuple(names), tuple(float(w) for w in weights)
        if not names or len(names) != len(weights):
            raise ConfigError(f"reward.weights has {len(weights)} entries but reward.functions has "
                              f"{len(names)}: give one weight per function (at least one function)")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"reward.functions lists {', '.join(map(repr, duplicates))} more than once: "
                              "give each function once and combine weights")
        bad = [f"{n}={w}" for n, w in zip(names, weights, strict=True) if not math.isfinite(w)]
        if bad:
            raise ConfigError(f"reward.weights must be finite numbers: {', '.join(bad)}")
        self.names = names
        self.weights = weights
        self.functions = tuple(load_reward_function(n) for n in names)
        self.labels = _labels(names)

    @classmethod
    def from_config(cls, cfg: RewardConfig) -> RewardSet:
        return cls(cfg.functions, cfg.weights)

    def __repr__(self) -> str:
        terms = " + ".join(f"{w:g}*{n}" for n, w in zip(self.names, self.weights, strict=True))
        return f"RewardSet({terms})"

    def __call__(self, prompts: Sequence[str], completions: Sequence[str],
                 columns: Mapping[str, Sequence[Any]]) -> RewardOutput:
        """Score `completions`; `prompts` and every column must be aligned with them."""
        _check_aligned(prompts, completions, columns)
        per_function: dict[str, list[float]] = {}
        invalid: dict[str, int] = {}
        for name, label, function in zip(self.names, self.labels, self.functions, strict=True):
            values = _call(name, function, prompts, completions, columns)
            cleaned = [_as_float(v, name, i) for i, v in enumerate(values)]
            invalid[label] = sum(v is None for v in cleaned)
            per_function[label] = [0.0 if v is None else v for v in cleaned]
        total = [sum(w * per_function[n][i] for n, w in zip(self.labels, self.weights, strict=True))
                 for i in range(len(completions))]
        return RewardOutput(total, per_function, invalid)


def _check_aligned(prompts: Sequence[str], completions: Sequence[str],
                   columns: Mapping[str, Sequence[Any]]) -> None:
    n = len(completions)
    if len(prompts) != n:
        raise RewardError(f"got {len(prompts)} prompts for {n} completions: pass one prompt per completion")
    for key, column in columns.items():
        if key in ("prompts", "completions"):
            raise RewardError(f"column {key!r} clashes with the reward-function argument of the same name")
        if len(column) != n:
            raise RewardError(f"column {key!r} has {len(column)} values for {n} completions")


def _call(name: str, function: RewardFunction, prompts: Sequence[str], completions: Sequence[str],
          columns: Mapping[str, Sequence[Any]]) -> list[Any]:
    try:
        values = function(list(prompts), list(completions), **{k: list(v) for k, v in columns.items()})
    except Exception as err:
        raise RewardError(f"reward function {name!r} raised {type(err).__name__}: {err}") from err
    try:
        values = list(values)
    except TypeError as err:
        raise RewardError(f"reward function {name!r} returned {type(values).__name__}: expected a "
                          "list") from err
    if len(values) != len(completions):
        raise RewardError(f"reward function {name!r} returned {len(values)} values for {len(completions)} "
                          "completions: return one value (or None) per completion")
    return values
