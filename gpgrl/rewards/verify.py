r"""math-verify answer checking in worker processes, with a wall-clock limit per answer.

Owns `score_answer` (is a completion's boxed or anchored final answer equal to the gold answer? math-verify,
in this process, unbounded) and `verify_batch` (the same for many pairs, each in a worker process under a
wall-clock limit), which the `accuracy` and `cosine` rewards use.

Why processes: math-verify turns LaTeX into sympy, and some answers never finish (`\boxed{10^{10^{10^{10}}}}`
makes sympy evaluate a number with ten billion digits) or take tens of seconds (a `\frac` nested 2,000 deep).
math-verify's own timeout is `signal.alarm`, which only works in a process's main thread, so gpgrl never relies
on it. Each worker (`python -m gpgrl.rewards.verify`) reads one JSON line `[gold, completion]` and answers one
JSON number; a worker that exceeds its limit is killed and replaced, and that pair scores None (no verdict). A
worker that dies (a crash, or a MemoryError under its address-space cap) is replaced the same way. Workers start on
first use (about a second: importing sympy), are shared by every caller in the process, and exit when it does.
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 5.0
"""Wall-clock limit of one gold/completion check (math-verify's own default is 5 s per parse and per verify)."""
WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Worker processes verifying in parallel."""
WORKER_MEMORY_BYTES = 2 * 1024**3
"""Address-space cap of a worker (POSIX): a runaway sympy number raises MemoryError instead of eating RAM."""
STARTUP_TIMEOUT_S = 120.0
"""How long a new worker may take to import math-verify before verification is declared broken."""
_CACHE_SIZE = 8192
_READY = "ready"
_EOF = object()


class VerifyError(RuntimeError):
    """The verification workers cannot be started (the message holds the worker's own error output)."""


# ---------------------------------------------------------------- in-process scoring (what a worker runs)


@functools.cache
def _prediction_config() -> tuple[Any, ...]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    # as the reference accuracy reward (GPG_SPEC §6): the answer must be boxed or anchored ("the answer is …");
    # a bare last number in the text does not count
    return (LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),
            ExprExtractionConfig(try_extract_without_anchor=False))


@functools.lru_cache(maxsize=1024)
def _parse_gold(gold: str) -> list[Any]:
    """A gold answer; a plain string such as '47', '-3' or '1/2' is read as LaTeX math (`$gold$`)."""
    from math_verify import parse

    try:
        if "$" in gold or "\\boxed" in gold:
            return parse(gold, parsing_timeout=None)
        return parse(f"${gold}$", parsing_timeout=None) or parse(gold, parsing_timeout=None)
    except Exception:
        return []


def score_answer(gold: str, completion: str) -> float:
    r"""1.0 if the completion's boxed or anchored final answer equals `gold` (math-verify), else 0.0.

    Runs in the calling process with no time limit: use `verify_batch` on untrusted completions.

    >>> score_answer("1/2", r"so \boxed{0.5}"), score_answer("72", r"\boxed{71}")
    (1.0, 0.0)
    >>> score_answer("-77", "The final answer is 42 - 49 - 70 = 1."), score_answer("42", r"\boxed{6 \times 7}")
    (0.0, 0.0)
    """
    from math_verify import parse, verify

    gold_parsed = _parse_gold(gold)
    try:
        pred = parse(completion, extraction_config=_prediction_config(), parsing_timeout=None)
        if _restates_a_number(gold_parsed, pred):
            return 0.0
        return 1.0 if gold_parsed and pred and verify(gold_parsed, pred, timeout_seconds=None) else 0.0
    except Exception:
        return 0.0


def _restates_a_number(gold_parsed: list[Any], pred: list[Any]) -> bool:
    """A numeric gold is not answered by an unevaluated sum, difference or product of numbers: 'the final answer
    is 42 - 49 - 70 = 1' restates the question, and math-verify would find 42 - 49 - 70 equal to -77 (a policy
    found this and was paid for it). An equation's right-hand side is the answer (x = -77); percentages, powers
    and fractions (50 %, 10^{3}, 1/2) still count."""
    import sympy

    if not gold_parsed or not pred or not isinstance(gold_parsed[0], sympy.Number):
        return False
    answer = pred[0]
    if isinstance(answer, sympy.Eq):
        answer = answer.rhs
    if isinstance(answer, sympy.Add):
        return True
    return isinstance(answer, sympy.Mul) and all(isinstance(a, sympy.Integer) for a in answer.args)


def _limit_memory() -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = WORKER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(hard, WORKER_MEMORY_BYTES)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when its parent dies, even mid-computation (no orphan burning CPU)."""
    if not sys.platform.startswith("linux"):
        return  # elsewhere the worker exits at the end of its current item, when stdin closes
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        pass


def _serve() -> None:
    """Worker main loop: `[gold, completion]` lines in, one JSON number per line out (stdout is the channel)."""
    import logging

    _die_with_parent()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the channel
    logging.disable(logging.CRITICAL)  # math-verify warns that its own timeout is off: the parent enforces one
    _limit_memory()
    _prediction_config()
    out.write(json.dumps(_READY) + "\n")
    for line in sys.stdin:
        gold, completion = json.loads(line)
        out.write(json.dumps(score_answer(gold, completion)) + "\n")


# ---------------------------------------------------------------- the worker pool


def _worker_env() -> dict[str, str]:
    """The parent's environment, with gpgrl importable even when it is only on the parent's sys.path."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


class _Spawner:
    """Starts worker processes from one long-lived daemon thread.

    Linux delivers a worker's parent-death signal when the *thread* that started it exits, and reward functions
    run in short-lived threads; starting every worker here ties the workers to the process's lifetime instead.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._requests: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def popen(self) -> subprocess.Popen:
        if self._pid != os.getpid():  # a forked child: the parent's thread and queue waiters are not ours
            self._reset()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, daemon=True, name="gpgrl-verify-spawner")
                self._thread.start()
        reply: queue.Queue = queue.Queue(maxsize=1)
        self._requests.put(reply)
        result = reply.get()
        if isinstance(result, BaseException):
            raise VerifyError(f"cannot start the math-verify worker ({sys.executable} -m gpgrl.rewards.verify): "
                              f"{result}") from result
        return result

    def _serve(self) -> None:
        while True:
            reply = self._requests.get()
            try:
                reply.put(subprocess.Popen([sys.executable, "-m", "gpgrl.rewards.verify"], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_worker_env()))
            except Exception as err:
                reply.put(err)


_SPAWNER = _Spawner()


class _Worker:
    """One `python -m gpgrl.rewards.verify` process; a reader thread turns its output lines into pool events."""

    def __init__(self, events: queue.Queue) -> None:
        self.proc = _SPAWNER.popen()
        self.started = time.monotonic()
        self.ready = False
        self.item: int | None = None
        self.deadline = 0.0
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=self._read, args=(events,), daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _read(self, events: queue.Queue) -> None:
        with self.proc.stdout:
            for line in self.proc.stdout:
                try:
                    events.put((self, json.loads(line)))
                except ValueError:
                    continue  # not a protocol line
        events.put((self, _EOF))

    def _drain_stderr(self) -> None:
        with self.proc.stderr:
            for line in self.proc.stderr:
                self.stderr_tail.append(line.decode(errors="replace").rstrip())

    def send(self, index: int, gold: str, completion: str, timeout_s: float) -> bool:
        """Hand one pair to the worker; False if it is gone (broken pipe)."""
        self.item, self.deadline = index, time.monotonic() + timeout_s
        try:
            self.proc.stdin.write((json.dumps([gold, completion]) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        try:
            self.proc.stdin.close()
        except OSError:
            pass  # the pipe's other end is gone; the reader threads close stdout and stderr


@dataclass(frozen=True)
class VerifyResult:
    """Scores aligned with the input pairs (None = no verdict) and how many pairs timed out or crashed."""

    scores: list[float | None]
    timeouts: int = 0
    crashes: int = 0


class _Batch:
    """One `verify_batch` call: dispatch pairs to idle workers, collect answers, replace overdue workers."""

    def __init__(self, pool: VerifyPool, pairs: Sequence[tuple[str, str]], timeout_s: float) -> None:
        self.pool, self.pairs, self.timeout_s = pool, pairs, timeout_s
        self.scores: list[float | None] = [None] * len(pairs)
        self.pending = collections.deque(range(len(pairs)))
        self.outstanding = len(pairs)
        self.timeouts = self.crashes = 0

    def run(self) -> VerifyResult:
        while self.outstanding:
            self._dispatch()
            try:
                worker, message = self.pool.events.get(timeout=self._wait_s())
            except queue.Empty:
                worker, message = None, None
            if worker is not None and worker in self.pool.workers:
                self._handle(worker, message)
            self._expire()
        return VerifyResult(self.scores, self.timeouts, self.crashes)

    def _dispatch(self) -> None:
        for worker in list(self.pool.workers):
            if not (worker.ready and worker.item is None and self.pending):
                continue
            index = self.pending.popleft()
            if worker.proc.poll() is not None or not worker.send(index, *self.pairs[index], self.timeout_s):
                worker.item = None  # it died while idle: not this pair's fault, retry it on a fresh worker
                self.pending.appendleft(index)
                self.pool.replace(worker)

    def _wait_s(self) -> float:
        deadlines = [w.deadline for w in self.pool.workers if w.item is not None]
        deadlines += [w.started + STARTUP_TIMEOUT_S for w in self.pool.workers if not w.ready]
        return max(0.0, min(deadlines, default=time.monotonic() + 1.0) - time.monotonic())

    def _handle(self, worker: _Worker, message: Any) -> None:
        if message == _READY:
            worker.ready = True
            self.pool.failed_starts = 0
        elif message is _EOF:
            if not worker.ready:
                self.pool.start_failed(worker)
            self._finish(worker, None, crashed=True)
        elif worker.item is not None:
            index, worker.item = worker.item, None
            self.scores[index] = float(message)
            self.pool.remember(self.pairs[index], float(message))
            self.outstanding -= 1

    def _expire(self) -> None:
        now = time.monotonic()
        for worker in list(self.pool.workers):
            if worker.item is not None and now >= worker.deadline:
                self._finish(worker, None, crashed=False)
            elif not worker.ready and now >= worker.started + STARTUP_TIMEOUT_S:
                self.pool.start_failed(worker)
                self._finish(worker, None, crashed=True)

    def _finish(self, worker: _Worker, score: float | None, crashed: bool) -> None:
        """The worker's current pair (if any) gets `score`; the worker is replaced."""
        if worker.item is not None:
            self.scores[worker.item] = score
            self.outstanding -= 1
            if crashed:
                self.crashes += 1
            else:
                self.timeouts += 1
        self.pool.replace(worker)


class VerifyPool:
    """Worker processes shared by every caller in this process; one batch at a time (callers queue up)."""

    def __init__(self, size: int = WORKERS) -> None:
        self.size = size
        self.workers: list[_Worker] = []
        self.events: queue.Queue = queue.Queue()
        self.failed_starts = 0
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()
        self._pid = os.getpid()

    def verify(self, pairs: Sequence[tuple[str, str]], timeout_s: float) -> VerifyResult:
        if self._pid != os.getpid():  # a forked child: the workers and their reader threads are the parent's
            self.workers, self.events, self._lock, self._pid = [], queue.Queue(), threading.Lock(), os.getpid()
        with self._lock:
            cached = [self._cache.get(p) for p in pairs]
            todo = [i for i, c in enumerate(cached) if c is None]
            if not todo:
                return VerifyResult(list(cached))
            while len(self.workers) < self.size:
                self.workers.append(_Worker(self.events))
            result = _Batch(self, [pairs[i] for i in todo], timeout_s).run()
        for i, score in zip(todo, result.scores, strict=True):
            cached[i] = score
        return VerifyResult(cached, result.timeouts, result.crashes)

    def remember(self, pair: tuple[str, str], score: float) -> None:
        self._cache[pair] = score
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    def replace(self, worker: _Worker) -> None:
        worker.kill()
        if worker in self.workers:
            self.workers[self.workers.index(worker)] = _Worker(self.events)

    def start_failed(self, worker: _Worker) -> None:
        self.failed_starts += 1
        if self.failed_starts >= 3:
            self.close()
            self.failed_starts = 0
            detail = "\n".join(worker.stderr_tail) or "(no output)"
            raise VerifyError(f"the math-verify worker process ({sys.executable} -m gpgrl.rewards.verify) failed to "
                              f"start 3 times in a row; its last output:\n{detail}")

    def close(self) -> None:
        workers, self.workers = self.workers, []
        for worker in workers:
            worker.kill()


_POOL = VerifyPool()
atexit.register(_POOL.close)


def verify_batch(golds: Sequence[str], completions: Sequence[str],
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> VerifyResult:
    r"""`score_answer` for every (gold, completion) pair, each under a wall-clock limit of `timeout_s` seconds.

    A pair whose check exceeds the limit, or whose worker dies, scores None and is counted in the result.
    Safe to call from any thread; results of finished pairs are cached (the last 8,192).

    >>> verify_batch(["47", "1/2"], [r"the answer is \boxed{47}", r"\boxed{0.4}"]).scores
    [1.0, 0.0]
    """
    if len(golds) != len(completions):
        raise ValueError(f"verify_batch got {len(golds)} gold answers for {len(completions)} completions")
    if timeout_s <= 0:
        raise ValueError(f"verify_batch timeout_s={timeout_s} must be > 0")
    pairs = [(str(g), str(c)) for g, c in zip(golds, completions, strict=True)]
    return _POOL.verify(pairs, timeout_s) if pairs else VerifyResult([])


if __name__ == "__main__":
    _serve()
