"""Helpers shared by the benchmark scripts: statistics, memory, machine description, prompts, JSON output.

The benchmarks are not part of the installed package; run them from the repository root with the project's
virtual environment, e.g. `.venv/bin/python benchmarks/step_time.py --model tiny-random`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def median(values: Sequence[float]) -> float:
    """Median of the values (nan for none)."""
    return float(statistics.median(values)) if values else float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM) in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return platform.processor() or "unknown"


SIMD_FLAG_PREFIXES = ("avx", "fma", "f16c", "amx")


def simd_flags(cpuinfo: str | None = None) -> list[str]:
    """The CPU's vector-unit flags (AVX2, AVX-512 kinds, FMA, F16C, AMX) from /proc/cpuinfo, sorted; [] elsewhere.

    Matmul speed, hence every absolute time here, depends on them: machines of one name differ.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # pragma: no cover - not Linux
            return []
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return sorted(f for f in set(flags) if f.startswith(SIMD_FLAG_PREFIXES))
    return []


def machine() -> dict[str, Any]:
    """What the numbers were measured on, including the load average (other processes distort timings)."""
    import transformers

    return {"cpu": cpu_name(), "cpu_flags": simd_flags(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "loadavg": list(os.getloadavg()),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def default_prompts(model_name: str, n: int, seed: int = 0) -> list[str]:
    """The first `n` prompts a default-data gpgrl run with `train.seed=seed` draws, as chat-templated text."""
    from gpgrl.config import DataConfig, ModelConfig
    from gpgrl.data import PromptQueue, load_splits, render_prompt
    from gpgrl.models import load_tokenizer, resolve_model_source

    data = DataConfig()
    tokenizer = load_tokenizer(resolve_model_source(ModelConfig(name=model_name)))
    train, _ = load_splits(data)
    queue = PromptQueue(train, seed=seed)
    return [render_prompt(tokenizer, ex, data.system_prompt, data.prompt_template) for ex in queue.take(n)]


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"results written to {path}")
