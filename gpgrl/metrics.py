"""Write-only metric sinks: metrics.jsonl, TensorBoard, optional Weights & Biases, and the live progress bar.

Nothing here is ever read back by the training loop. Only the main process creates sinks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    """Appends one JSON object per step to metrics.jsonl and mirrors scalars to TensorBoard / W&B."""

    def __init__(self, output_dir: Path, tensorboard: bool, wandb_project: str | None, config: dict,
                 purge_step: int = 1):
        """Appends to metrics.jsonl (the caller truncates it to the resumed step); TensorBoard events from
        `purge_step` on are discarded, so a resumed run does not show redone steps twice."""
        self.path = output_dir / "metrics.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        self._wandb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(output_dir / "tb"), purge_step=purge_step)
        if wandb_project is not None:
            try:
                import wandb
            except ImportError as err:
                raise RuntimeError("logging.wandb=true needs the wandb package: pip install 'gpgrl[wandb]'") \
                    from err
            self._wandb = wandb.init(project=wandb_project, config=config, dir=str(output_dir))

    def log(self, record: dict[str, Any]) -> None:
        clean = {k: _finite_or_none(v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        step = int(record["step"])
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for key, value in scalars.items():
                if key != "step":
                    self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _first_reward(m: dict[str, Any]) -> str:
    """The accuracy reward's mean (else the first reward function's), named."""
    keys = [k for k in m if k.startswith("reward/")]
    key = "reward/accuracy" if "reward/accuracy" in m else keys[0] if keys else None
    return f"{key.split('/', 1)[1]} {m[key]:.3f}" if key else ""


def figures(m: dict[str, Any]) -> str:
    """A step's reward, accuracy reward, α, informative fraction and tokens/s."""
    named = _first_reward(m)
    return (f"reward {m['reward_mean']:.3f}  {named + '  ' if named else ''}α {m['alpha']:.2f}  "
            f"informative {m['valid_group_fraction']:.2f}  {m['tokens_per_s']:.0f} tok/s")


def step_line(m: dict[str, Any], total: int, seconds_per_step: float) -> str:
    """One step as text: step, s/step, ETA, then `figures`."""
    eta = seconds_per_step * (total - m["step"])
    return (f"step {m['step']}/{total}  {seconds_per_step:.1f} s/step  ETA {int(eta // 60)}m{int(eta % 60):02d}s  "
            f"{figures(m)}")


class ProgressBar:
    """The live progress: on a terminal a bar with s/step, ETA, reward, the accuracy reward, α and the informative
    fraction; elsewhere (a log file) one line per step with the same figures."""

    def __init__(self, total: int, enabled: bool, console: Console, completed: int = 0):
        self._total, self._enabled, self._console = total, enabled, console
        self._seconds: list[float] = []
        self._live = enabled and console.is_terminal
        self._progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                  console=console, disable=not self._live)
        self._task = self._progress.add_task("train", total=total, completed=completed, info="")

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, m: dict[str, Any]) -> None:
        self._seconds.append(float(m["step_time_s"]))
        recent = self._seconds[-5:]
        per_step = sum(recent) / len(recent)
        if self._live:
            self._progress.update(self._task, completed=m["step"], info=f"{per_step:.1f} s/step  {figures(m)}")
        elif self._enabled:
            self._console.print(step_line(m, self._total, per_step), highlight=False, markup=False)
