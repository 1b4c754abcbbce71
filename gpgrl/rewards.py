r"""Reward functions and the weighted reward set the trainer and `gpgrl eval` call.

Owns the built-in rewards (registered by name in `REWARDS`): `accuracy`, `cosine`, `boxed_format`,
`think_format`, `soft_overlong`, `repetition_penalty`, `task_score`; loading a reward by name with its keyword
arguments (`load_reward_function`); and `RewardSet`, which runs several rewards in parallel under a time limit,
applies the error and invalid-value policies and forms the weighted total.

Contract (TRL-style): `f(prompts, completions, **columns) -> list[float | None]`, sync or `async def`.
`prompts` are the user question texts, `completions` the generated texts, and every column is a list aligned
with `completions`: `answer`, the dataset's other columns (for reasoning-gym data `entry` and `task`), and
`completion_lengths` (tokens per completion) when the caller passes them. A function must accept unknown
columns through `**kwargs`; `None` means "no verdict" for that completion.

Parameterised built-ins are frozen dataclasses whose fields are their parameters (`Cosine(max_len=2000)`,
set from the config as `reward.kwargs.cosine.max_len=2000`); each instance is a reward function.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import logging
import math
import re
import sys
import threading
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

from gpgrl.config import ConfigError, RewardConfig
from gpgrl.verify import DEFAULT_TIMEOUT_S, verify_batch

RewardFunction = Callable[..., Any]

logger = logging.getLogger(__name__)


class RewardError(RuntimeError):
    """A reward function misbehaved while scoring (raised, timed out, or returned the wrong values)."""


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
    unparseable gold or prediction gives 0.0. Each check runs in a worker process (`gpgrl.verify`) killed after
    `timeout_s` seconds: a check that takes longer gives None (RewardSet counts it invalid and scores it 0).

    >>> accuracy(["q"], [r"so the answer is \boxed{0.5}"], answer=["1/2"])
    [1.0]
    >>> accuracy(["q"] * 3, [r"\boxed{71}", "the answer is 47", r"\boxed{\dfrac{3}{4}}"], answer=["72", "47", "0.75"])
    [0.0, 1.0, 1.0]
    >>> accuracy(["q", "q"], [r"\boxed{48} and \boxed{47}", "I think 46, then 47"], answer=["47", "47"])
    [0.0, 0.0]
    """

    timeout_s: float = DEFAULT_TIMEOUT_S
    """Wall-clock limit of one answer check, in seconds."""

    def __post_init__(self) -> None:
        _check(self.timeout_s > 0, f"timeout_s={self.timeout_s} must be > 0")

    def __call__(self, prompts: list[str], completions: list[str], answer: list[Any],
                 **kwargs: Any) -> list[float | None]:
        return _verdicts("accuracy", answer, completions, self.timeout_s)


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
        verdicts = _verdicts("cosine", answer, completions, self.timeout_s)
        return [None if v is None else self.value(len(text), v == 1.0)
                for text, v in zip(completions, verdicts, strict=True)]


# ---------------------------------------------------------------- format rewards


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
    for completion in completions:
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
        for completion in completions:
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


def _final_answer(completion: str) -> str:
    """The last well-formed `\\boxed{...}` content, else the last non-blank line; stripped."""
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

REWARDS: Mapping[str, Any] = MappingProxyType({
    "accuracy": Accuracy, "cosine": Cosine, "boxed_format": boxed_format, "think_format": think_format,
    "soft_overlong": SoftOverlong, "repetition_penalty": RepetitionPenalty, "task_score": task_score})
"""Built-in rewards by name: a function, or a dataclass whose fields are the reward's parameters."""


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


def _unknown(name: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(REWARDS), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(f"unknown {where}: {hint}built-ins are {', '.join(REWARDS)}; a custom reward is "
                       "given as 'package.module:function' or 'path/to/file.py:function'")


def _user_function(name: str, where: str) -> RewardFunction:
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


def _typed(cls: type, kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`kwargs` checked against the dataclass fields of a parameterised built-in (names and number types)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out = {}
    for key, value in kwargs.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{where}.{key}: unknown parameter; {hint}parameters are {', '.join(names)}")
        hint = hints[key]
        ok = (isinstance(value, int) if hint is int else isinstance(value, (int, float)))
        if isinstance(value, bool) or not ok:
            raise ConfigError(f"{where}.{key} must be {'an integer' if hint is int else 'a number'}, got {value!r}")
        out[key] = float(value) if hint is float else value
    return out


def _bind(function: RewardFunction, kwargs: Mapping[str, Any], where: str) -> RewardFunction:
    """A user function with its configured keyword arguments bound (names checked against its signature)."""
    if not kwargs:
        return function
    try:
        inspect.signature(function).bind_partial(None, None, **kwargs)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}: the function does not accept these keyword arguments") from err
    except ValueError:
        pass  # no introspectable signature (a builtin): let the call decide
    return functools.partial(function, **kwargs)


def load_reward_function(name: str, kwargs: Mapping[str, Any] | None = None) -> RewardFunction:
    """A reward function: a built-in name (see REWARDS), 'package.module:function' or 'path/file.py:function'.

    `kwargs` are its parameters (for a built-in, the fields of its dataclass; for your own function, keyword
    arguments bound with functools.partial). Raises ConfigError saying what to fix in reward.functions or
    reward.kwargs.
    """
    where, kwargs_key = f"reward.functions entry {name!r}", f"reward.kwargs.{name}"
    kwargs = dict(kwargs or {})
    if name in REWARDS:
        builtin = REWARDS[name]
        if not isinstance(builtin, type):
            if kwargs:
                raise ConfigError(f"{kwargs_key}: the built-in {name!r} takes no parameters")
            return builtin
        try:
            return builtin(**_typed(builtin, kwargs, kwargs_key))
        except TypeError as err:  # a required parameter is missing
            required = [f.name for f in dataclasses.fields(builtin) if f.default is dataclasses.MISSING]
            raise ConfigError(f"{kwargs_key}: {name} needs {', '.join(required)} (e.g. "
                              f"{kwargs_key}.{required[0]}=...)") from err
        except ValueError as err:
            raise ConfigError(f"{kwargs_key}: {err}") from err
    if ":" not in name:
        raise _unknown(name, where)
    return _bind(_user_function(name, where), kwargs, kwargs_key)


# ---------------------------------------------------------------- running one function (thread, time limit)


@dataclass
class _Call:
    """One reward function running in a daemon thread (sync) or an event loop in that thread (async)."""

    name: str
    values: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def start(self, function: RewardFunction, args: tuple, kwargs: dict, timeout_s: float) -> _Call:
        threading.Thread(target=self._run, args=(function, args, kwargs, timeout_s), daemon=True,
                         name=f"gpgrl-reward-{self.name}").start()
        return self

    def _run(self, function: RewardFunction, args: tuple, kwargs: dict, timeout_s: float) -> None:
        try:
            values = function(*args, **kwargs)
            if inspect.isawaitable(values):
                try:
                    values = asyncio.run(_bounded(values, timeout_s))
                except TimeoutError:
                    self.timed_out = True
                    return
            self.values = values
        except Exception as err:
            self.error = err
        finally:
            self.done.set()


async def _bounded(awaitable: Any, timeout_s: float) -> Any:
    """Await with the reward time limit, so an async reward is cancelled rather than abandoned."""
    return await asyncio.wait_for(awaitable, timeout_s if timeout_s > 0 else None)


def _wait(calls: Sequence[_Call], timeout_s: float) -> None:
    """Wait until every call is done or the shared deadline passes; unfinished ones are marked timed out."""
    deadline = time.monotonic() + timeout_s if timeout_s > 0 else math.inf
    for call in calls:
        remaining = deadline - time.monotonic()
        if not call.done.wait(None if remaining == math.inf else max(0.0, remaining)):
            call.timed_out = True


def _values(call: _Call, n: int, timeout_s: float) -> list[float | None]:
    """The call's values as finite floats or None; any failure is a RewardError naming the function."""
    name = call.name
    if call.timed_out:
        raise RewardError(f"reward function {name!r} did not finish within reward.timeout_s={timeout_s:g} s")
    if call.error is not None:
        hint = ""
        if "threaded environment" in str(call.error):
            hint = (" (reward functions run in worker threads, where math-verify's signal-based timeout fails: "
                    "call it with parsing_timeout=None and timeout_seconds=None, or use gpgrl.verify.verify_batch)")
        raise RewardError(f"reward function {name!r} raised {type(call.error).__name__}: {call.error}{hint}"
                          ) from call.error
    try:
        values = list(call.values)
    except TypeError as err:
        raise RewardError(f"reward function {name!r} returned {type(call.values).__name__}: expected a "
                          "list") from err
    if len(values) != n:
        raise RewardError(f"reward function {name!r} returned {len(values)} values for {n} "
                          "completions: return one value (or None) per completion")
    return [_as_float(v, name, i) for i, v in enumerate(values)]


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


# ---------------------------------------------------------------- the weighted reward set


@dataclass(frozen=True)
class RewardOutput:
    """Scores of one batch of completions.

    total: weighted sum per completion. per_function: each function's values after the policies (every
    replaced value is 0.0). invalid: per function, how many values were replaced by 0.0 for any reason (None,
    NaN or infinite values, verification timeouts, failed calls). errors: per function, how many of those came
    from a call that raised, timed out or returned malformed values under `on_error="zero"`.
    """

    total: list[float]
    per_function: dict[str, list[float]]
    invalid: dict[str, int]
    errors: dict[str, int] = field(default_factory=dict)


def _labels(names: Sequence[str]) -> tuple[str, ...]:
    """Short metric names: 'pkg.mod:fn' and 'path/file.py:fn' become 'fn' unless two would collide."""
    short = tuple(n.rsplit(":", 1)[-1] for n in names)
    return short if len(set(short)) == len(short) else tuple(names)


ON_ERROR = ("raise", "zero")


def _check_names(names: tuple[str, ...], weights: tuple[float, ...]) -> None:
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


def _kwargs_by_name(names: tuple[str, ...], labels: tuple[str, ...],
                    kwargs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """reward.kwargs keyed by function name (a key may be the full name or its short label)."""
    out: dict[str, dict[str, Any]] = {}
    for key, params in kwargs.items():
        matches = [n for n, label in zip(names, labels, strict=True) if key in (n, label)]
        if not matches:
            close = difflib.get_close_matches(str(key), list(labels), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"reward.kwargs.{key}: {hint}not one of reward.functions ({', '.join(names)})")
        if not isinstance(params, Mapping):
            raise ConfigError(f"reward.kwargs.{key} must be a mapping of parameter names to values, got {params!r}")
        out[matches[0]] = dict(params)
    return out


class RewardSet:
    """Several reward functions with one weight each; calling it scores a batch of completions.

    The functions run in parallel, each in its own thread (an `async def` function in an event loop there),
    under one shared wall-clock limit of `timeout_s` seconds (0 = none). Every function runs even with weight 0,
    so its values can be logged.

    Invalid-value policy: a None, NaN or infinite value becomes 0.0 for that function and is counted in
    `RewardOutput.invalid`. Error policy (`on_error`): a function that raises, exceeds the limit, returns the
    wrong number of values or a non-number is a RewardError naming it with "raise" (the original exception is
    chained); with "zero" all its values for that batch become 0.0, are counted in both `invalid` and `errors`,
    and a warning with the error is logged. A timed-out synchronous function cannot be stopped: its thread is
    abandoned (an async one is cancelled).
    """

    def __init__(self, names: Sequence[str], weights: Sequence[float], kwargs: Mapping[str, Any] | None = None,
                 timeout_s: float = 300.0, on_error: str = "raise") -> None:
        names, weights = tuple(names), tuple(float(w) for w in weights)
        _check_names(names, weights)
        if on_error not in ON_ERROR:
            raise ConfigError(f"reward.on_error={on_error!r} is not one of {', '.join(map(repr, ON_ERROR))}")
        if not timeout_s >= 0:
            raise ConfigError(f"reward.timeout_s={timeout_s} must be >= 0 (0 = no limit)")
        self.names, self.weights = names, weights
        self.labels = _labels(names)
        self.timeout_s, self.on_error = float(timeout_s), on_error
        params = _kwargs_by_name(names, self.labels, kwargs or {})
        self.functions = tuple(load_reward_function(n, params.get(n)) for n in names)

    @classmethod
    def from_config(cls, cfg: RewardConfig) -> RewardSet:
        return cls(cfg.functions, cfg.weights, cfg.kwargs, cfg.timeout_s, cfg.on_error)

    def __repr__(self) -> str:
        terms = " + ".join(f"{w:g}*{n}" for n, w in zip(self.names, self.weights, strict=True))
        return f"RewardSet({terms})"

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], columns: Mapping[str, Sequence[Any]],
                 completion_lengths: Sequence[int] | None = None) -> RewardOutput:
        """Score `completions`; `prompts`, every column and `completion_lengths` (tokens) are aligned with them."""
        columns = dict(columns)
        if completion_lengths is not None:
            columns["completion_lengths"] = [int(n) for n in completion_lengths]
        _check_aligned(prompts, completions, columns)
        args = (list(prompts), list(completions))
        kwargs = {k: list(v) for k, v in columns.items()}
        calls = [_Call(n).start(f, args, kwargs, self.timeout_s) for n, f in zip(self.names, self.functions,
                                                                                   strict=True)]
        _wait(calls, self.timeout_s)
        per_function: dict[str, list[float]] = {}
        invalid: dict[str, int] = {}
        errors: dict[str, int] = {}
        for label, call in zip(self.labels, calls, strict=True):
            values, errors[label] = self._outcome(call, len(completions))
            invalid[label] = sum(v is None for v in values)
            per_function[label] = [0.0 if v is None else v for v in values]
        total = [sum(w * per_function[n][i] for n, w in zip(self.labels, self.weights, strict=True))
                 for i in range(len(completions))]
        return RewardOutput(total, per_function, invalid, errors)

    def _outcome(self, call: _Call, n: int) -> tuple[list[float | None], int]:
        """The call's values and how many were lost to an error (policy `on_error`)."""
        try:
            return _values(call, n, self.timeout_s), 0
        except RewardError as err:
            if self.on_error == "raise":
                raise
            logger.warning("%s; reward.on_error=zero: its %d values in this batch are scored 0 and counted", err, n)
            return [None] * n, n


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
