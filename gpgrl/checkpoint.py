"""Checkpoints: atomic save, discovery of the newest complete one, and exact restore.

A checkpoint is a directory `checkpoint-<step>` in `train.output_dir` holding the trainable state (model,
optimizer, scheduler), every RNG state, the prompt-queue position and the loop's counters (including the byte
offsets of metrics.jsonl and completions.jsonl). It is written into a temporary directory that is renamed into
place only after a `complete.json` marker has been written last, so a crash or a full disk during a save
leaves the previous checkpoint intact and never a half-written one that looks complete. The resampling buffer
of GPG's β_th loop lives only inside one step, so it is always empty at a checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

MARKER = "complete.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class LoopState:
    """The training loop's own counters at the end of `step`."""

    step: int
    metrics_offset: int  # bytes of metrics.jsonl written up to this step
    completions_offset: int  # bytes of completions.jsonl written up to this step
    bad_steps_in_a_row: int


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from: torch (CPU and CUDA), Python's random, NumPy."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in `output_dir`, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = _NAME.match(path.name)
        if match and (path / MARKER).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = checkpoint_dirs(output_dir)
    return found[-1][1] if found else None


def staging_dir(output_dir: Path, step: int, create: bool = True) -> Path:
    """The temporary directory checkpoint-<step> is assembled in (emptied and created when `create`): every process
    can write its own shards there before the main process completes and renames it."""
    tmp = output_dir / f".tmp-checkpoint-{step:08d}"
    if create:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    return tmp


def save_checkpoint(output_dir: Path, loop: LoopState, parts: dict[str, Any], keep: int,
                    tmp: Path | None = None) -> Path:
    """Write `parts` (name -> object for torch.save) atomically as checkpoint-<step>; keep the newest `keep`.

    `tmp` is a `staging_dir` that may already hold the processes' shards; by default a fresh one. On any error
    (e.g. a full disk) the temporary directory is removed and the error re-raised; existing checkpoints are
    untouched.
    """
    final = output_dir / f"checkpoint-{loop.step:08d}"
    staged = tmp or staging_dir(output_dir, loop.step, create=False)
    try:
        tmp = tmp or staging_dir(output_dir, loop.step)
        for name, obj in parts.items():
            torch.save(obj, tmp / f"{name}.pt")
        (tmp / MARKER).write_text(json.dumps(asdict(loop)) + "\n")
        if final.exists():  # the same step saved again (e.g. a resumed run that is interrupted at once)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    for _, old in checkpoint_dirs(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> tuple[LoopState, dict[str, Any]]:
    """The loop state and every saved part of a complete checkpoint."""
    loop = LoopState(**json.loads((path / MARKER).read_text()))
    parts = {p.stem: torch.load(p, map_location="cpu", weights_only=False) for p in sorted(path.glob("*.pt"))}
    return loop, parts
