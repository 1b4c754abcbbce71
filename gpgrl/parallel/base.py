"""The interface every parallel strategy offers the training loop, and DDP (through accelerate), the default.

A strategy owns what differs between DDP, FSDP2 and DeepSpeed ZeRO: wrapping the model and optimizer, the
backward of one micro-batch (gradient sync on the step's last one only where that is cheap), clipping and the
optimizer step, whole parameters for generation and evaluation, and the checkpointed state. The loop calls these
methods and never asks which strategy it holds. Every process calls every method (most are collectives) unless a
method says otherwise.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

OptimizerFactory = Callable[[torch.nn.Module], tuple[torch.optim.Optimizer, Any]]
"""Builds (optimizer, lr scheduler) for the model as the strategy will train it (e.g. over sharded parameters)."""


def filled_copy(build: Callable[[], torch.nn.Module], state: dict[str, torch.Tensor], main: bool
                ) -> torch.nn.Module | None:
    """On the main process, a fresh copy of the policy (`build`) holding the gathered `state`; None elsewhere."""
    if not main:
        return None
    plain = build()
    plain.load_state_dict(state)
    return plain


class Strategy:
    """Data-parallel training with every process holding the whole model (accelerate's DDP on several processes,
    the plain model on one)."""

    name = "ddp"
    shares_prompt_forward = True
    """Whether the shared prompt forward (two forwards of one micro-batch before its backward) may run; the
    model's own check (`can_share_prompts`) still applies."""

    def __init__(self, accelerator: Any, cfg: Any) -> None:
        self.accelerator, self.cfg = accelerator, cfg
        self.model: Any = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._plain: torch.nn.Module | None = None

    def plain_model(self) -> torch.nn.Module:
        """The model under accelerate's wrapper, unwrapped once in `prepare` (`unwrap_model` checks which packages
        are installed on every call, each sampling round otherwise)."""
        return self._plain

    # ------------------------------------------------------------ set-up

    def prepare(self, model: torch.nn.Module, make_optimizer: OptimizerFactory) -> tuple[Any, Any, Any]:
        """(the model to train, its optimizer, its lr scheduler)."""
        optimizer, scheduler = make_optimizer(model)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self._plain = self.accelerator.unwrap_model(self.model)
        return self.model, self.optimizer, scheduler

    # ------------------------------------------------------------ one step

    def sync_context(self, last: bool):
        """Context of one micro-batch's forward/backward; gradients are synchronised on the `last` one."""
        return contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        self.accelerator.backward(loss)

    def clip_and_step(self, max_norm: float, loss: float) -> tuple[float, bool]:
        """Clip to `max_norm` (0 = no clipping), step unless the loss or the gradient norm is non-finite, drop the
        gradients. Returns (the gradient norm before clipping, whether the update was applied)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = float(self.accelerator.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))
        applied = math.isfinite(loss) and math.isfinite(grad_norm)
        if applied:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, applied

    # ------------------------------------------------------------ whole parameters

    @contextlib.contextmanager
    def whole_model(self) -> Iterator[torch.nn.Module]:
        """The plain model with whole parameters, for generation and evaluation, for the whole block."""
        yield self.plain_model()

    def final_model(self, build: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
        """The trained model as one plain module (main process; None elsewhere). `build` makes a fresh copy of the
        policy, which strategies that shard the parameters fill with the gathered weights."""
        return self.plain_model()

    def full_state(self) -> dict[str, torch.Tensor]:
        """The model's whole state dict on every process (what a rollout engine is given after each update)."""
        return dict(self.plain_model().state_dict())

    # ------------------------------------------------------------ checkpoints

    def state_parts(self) -> dict[str, Any]:
        """The model's and the optimizer's state as checkpoint parts (complete on the main process)."""
        return {"model": self.plain_model().state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def write_shards(self, directory: Path) -> None:
        """Write what each process holds alone into the checkpoint's temporary `directory` (nothing for DDP)."""

    def load_parts(self, parts: dict[str, Any], directory: Path) -> None:
        """Restore `state_parts` (and the shards in checkpoint `directory`) on every process."""
        self.plain_model().load_state_dict(parts["model"])
        self.optimizer.load_state_dict(parts["optimizer"])
