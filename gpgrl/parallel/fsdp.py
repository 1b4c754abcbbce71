"""FSDP2: torch's `fully_shard` on every decoder layer and on the root, driven directly (no accelerate state).

Parameters, gradients and AdamW state are sharded over the processes (gloo on CPU, NCCL on GPUs). Gradients are
reduce-scattered after every micro-batch's backward (averaged over processes, as DDP does), so unsharded gradients
never accumulate. Generation and evaluation unshard every layer once for the whole block and reshard after, instead
of an all-gather per forward. Checkpoints hold full state dicts (model and optimizer, keyed by parameter name)
written by the main process, so a run resumes exactly, on any number of processes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from gpgrl.parallel.base import OptimizerFactory, Strategy, filled_copy


def decoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules to shard one by one: those whose class the model names in `_no_split_modules` (its decoder
    layers, and a vision tower's blocks), found under a peft wrapper too."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"{type(base).__name__} names no decoder-layer class in _no_split_modules: parallel.strategy="
                         "fsdp2 cannot find the layers to shard; use zero3, or ddp")
    return blocks


def _whole(value: Any) -> float:
    return float(value.full_tensor() if isinstance(value, DTensor) else value)


class FSDP2(Strategy):
    name = "fsdp2"
    shares_prompt_forward = False  # two forwards before one backward would run the reduce-scatter hooks twice

    def prepare(self, model: torch.nn.Module, make_optimizer: OptimizerFactory) -> tuple[Any, Any, Any]:
        device = self.accelerator.device
        mesh = init_device_mesh(device.type, (self.accelerator.num_processes,))
        options: dict[str, Any] = {"mesh": mesh}
        if self.cfg.parallel.mixed_precision == "bf16":
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if self.cfg.parallel.cpu_offload:
            options["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())  # pinning needs a GPU
        else:
            model.to(device)
        for block in decoder_blocks(model):
            fully_shard(block, **options)
        fully_shard(model, **options)
        optimizer, scheduler = make_optimizer(model)
        self.model, self.optimizer = model, optimizer
        return model, optimizer, scheduler

    def sync_context(self, last: bool):
        return contextlib.nullcontext()  # reduce-scatter every micro-batch: no unsharded gradients pile up

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        loss.backward()

    def clip_and_step(self, max_norm: float, loss: float) -> tuple[float, bool]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
        grad_norm = _whole(norm)
        applied = math.isfinite(loss) and math.isfinite(grad_norm)
        if applied:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, applied

    def _modules(self) -> list[FSDPModule]:
        return [m for m in self.model.modules() if isinstance(m, FSDPModule)]

    @contextlib.contextmanager
    def whole_model(self) -> Iterator[torch.nn.Module]:
        """Every layer unsharded once (one all-gather each) and kept so across the block's forwards."""
        modules = self._modules()
        inner = [m for m in modules if m is not self.model]  # the root keeps its own reshard behaviour
        for m in modules:
            m.unshard()
        for m in inner:
            m.set_reshard_after_forward(False, recurse=False)
        try:
            yield self.model
        finally:
            for m in inner:
                m.set_reshard_after_forward(True, recurse=False)
            for m in modules:
                m.reshard()

    def _full(self) -> StateDictOptions:
        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def final_model(self, build: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
        state = get_model_state_dict(self.model, options=self._full())  # whole on the main process, {} elsewhere
        return filled_copy(build, state, self.accelerator.is_main_process)

    def full_state(self) -> dict[str, torch.Tensor]:
        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True))  # on every process

    def state_parts(self) -> dict[str, Any]:
        return {"model": get_model_state_dict(self.model, options=self._full()),
                "optimizer": get_optimizer_state_dict(self.model, self.optimizer, options=self._full())}

    def load_parts(self, parts: dict[str, Any], directory: Path) -> None:
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, parts["model"], options=options)
        set_optimizer_state_dict(self.model, self.optimizer, parts["optimizer"], options=options)
