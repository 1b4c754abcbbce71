"""Loading reward functions by name and running several of them as one weighted, time-limited reward set.

Owns `load_reward_function` (a built-in name from `gpgrl.rewards.registry.REWARDS`, `package.module:function`
or `path/to/file.py:function`, with its keyword arguments), and `RewardSet`, which runs several rewards in
parallel under a time limit, applies the error and invalid-value policies and forms the weighted total.
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
import sys
import threading
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from gpgrl.config import ConfigError, RewardConfig
from gpgrl.rewards.registry import REWARDS

RewardFunction = Callable[..., Any]

logger = logging.getLogger(__name__)


class RewardError(RuntimeError):
    """A reward function misbehaved while scoring (raised, timed out, or returned the wrong values)."""


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
        if hint is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key} must be true or false, got {value!r}")
            out[key] = value
            continue
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

    def start(self, function: RewardFunction, kwargs: dict, timeout_s: float) -> _Call:
        threading.Thread(target=self._run, args=(function, kwargs, timeout_s), daemon=True,
                         name=f"gpgrl-reward-{self.name}").start()
        return self

    def _run(self, function: RewardFunction, kwargs: dict, timeout_s: float) -> None:
        try:
            values = function(**kwargs)  # every argument by keyword, as TRL calls reward functions
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
                    "call it with parsing_timeout=None and timeout_seconds=None, or use "
                    "gpgrl.rewards.verify.verify_batch)")
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
class TrainerState:
    """What gpgrl passes as `trainer_state`: the attributes of transformers' TrainerState a reward reads."""

    global_step: int = 0
    """Optimizer steps completed (the step being scored is global_step + 1)."""
    max_steps: int = 0
    epoch: float = 0.0
    """Epochs of the prompt stream started (an integer here)."""


def trl_inputs(examples: Sequence[Any], texts: Sequence[str]) -> tuple[list[Any], list[Any]]:
    """(prompts, completions) as TRL hands them to reward functions: for a conversational example its messages and
    `[{"role": "assistant", "content": text}]`, otherwise the prompt text and the completion text."""
    prompts = [list(ex.messages) if ex.messages else ex.question for ex in examples]
    completions = [[{"role": "assistant", "content": text}] if ex.messages else text
                   for ex, text in zip(examples, texts, strict=True)]
    return prompts, completions


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


def function_name(function: Any) -> str:
    """The name a reward given as a Python callable goes by (its module and qualified name)."""
    if isinstance(function, str):
        return function
    inner = getattr(function, "func", function)  # functools.partial
    qualname = getattr(inner, "__qualname__", None) or type(inner).__qualname__
    return f"{getattr(inner, '__module__', None) or type(inner).__module__}:{qualname}"


def _labels(names: Sequence[str]) -> tuple[str, ...]:
    """Short metric names: 'pkg.mod:fn', 'path/file.py:fn' and a callable's 'mod:outer.<locals>.fn' become 'fn'
    unless two would collide."""
    short = tuple(n.rsplit(":", 1)[-1].rsplit(".", 1)[-1] for n in names)
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

    def __init__(self, names: Sequence[str | RewardFunction], weights: Sequence[float],
                 kwargs: Mapping[str, Any] | None = None, timeout_s: float = 300.0, on_error: str = "raise") -> None:
        given = tuple(names)
        names, weights = tuple(function_name(n) for n in given), tuple(float(w) for w in weights)
        _check_names(names, weights)
        if on_error not in ON_ERROR:
            raise ConfigError(f"reward.on_error={on_error!r} is not one of {', '.join(map(repr, ON_ERROR))}")
        if not timeout_s >= 0:
            raise ConfigError(f"reward.timeout_s={timeout_s} must be >= 0 (0 = no limit)")
        self.names, self.weights = names, weights
        self.labels = _labels(names)
        self.timeout_s, self.on_error = float(timeout_s), on_error
        params = _kwargs_by_name(names, self.labels, kwargs or {})
        self.functions = tuple(load_reward_function(n, params.get(n)) if isinstance(g, str) else
                               _bind(g, params.get(n) or {}, f"reward.kwargs.{n}")
                               for n, g in zip(names, given, strict=True))

    @classmethod
    def from_config(cls, cfg: RewardConfig) -> RewardSet:
        return cls(cfg.functions, cfg.weights, cfg.kwargs, cfg.timeout_s, cfg.on_error)

    def __repr__(self) -> str:
        terms = " + ".join(f"{w:g}*{n}" for n, w in zip(self.names, self.weights, strict=True))
        return f"RewardSet({terms})"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], columns: Mapping[str, Sequence[Any]],
                 completion_lengths: Sequence[int] | None = None, completion_ids: Sequence[Any] | None = None,
                 trainer_state: Any = None) -> RewardOutput:
        """Score `completions`; `prompts`, every column, `completion_lengths` (tokens) and `completion_ids` are
        aligned with them. Each function is called as TRL calls it: every argument by keyword (`prompts=`,
        `completions=`, `completion_ids=`, each column under its own name, `trainer_state=`), plus gpgrl's
        `completion_lengths` when given."""
        columns = dict(columns)
        if completion_lengths is not None:
            columns["completion_lengths"] = [int(n) for n in completion_lengths]
        if completion_ids is not None:
            columns["completion_ids"] = [list(map(int, ids)) for ids in completion_ids]
        _check_aligned(prompts, completions, columns)
        kwargs = {"prompts": list(prompts), "completions": list(completions),
                  **{k: list(v) for k, v in columns.items()}, "trainer_state": trainer_state}
        calls = [_Call(n).start(f, kwargs, self.timeout_s) for n, f in zip(self.names, self.functions, strict=True)]
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
        if key in ("prompts", "completions", "trainer_state"):
            raise RewardError(f"column {key!r} clashes with the reward-function argument of the same name")
        if len(column) != n:
            raise RewardError(f"column {key!r} has {len(column)} values for {n} completions")
