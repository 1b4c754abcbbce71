"""DeepSpeed ZeRO-2 / ZeRO-3 with gpgrl's step semantics.

DeepSpeed would step the optimizer after a fixed number of backwards; a gpgrl step runs a variable number of
micro-batches, so the engine is built with one micro-batch per accumulation and gpgrl sets the accumulation
boundary itself: exactly one optimizer step per gpgrl step. Clipping and the gradient norm come from the engine,
which skips the update (and drops the gradients) when the norm is not finite; a non-finite loss is turned into
non-finite gradients on the step's last backward so that it takes the same path. Under ZeRO-3, generation runs with
the parameters gathered (`GatheredParameters`) and ZeRO-3's per-module hooks off for the whole block, so each
process may run its own number of forwards. Checkpoints hold the consolidated weights
(main process) and DeepSpeed's own per-process optimizer partitions, so a run resumes exactly on the same number
of processes.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from gpgrl.config import ConfigError
from gpgrl.parallel.base import OptimizerFactory, Strategy, filled_copy

ENGINE_DIR, TAG = "deepspeed", "state"


def import_deepspeed() -> Any:
    """deepspeed, on the CPU accelerator when there is no GPU; a missing install names the extra."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    # DeepSpeed's collectives call torch's renamed all_gather_into_tensor / reduce_scatter_tensor on every step
    warnings.filterwarnings("ignore", message=r".*is deprecated\. Please use `torch\.distributed\.",
                            category=FutureWarning)
    try:
        import deepspeed
    except ImportError as err:
        raise ConfigError("parallel.strategy=zero2|zero3 needs DeepSpeed: `make install` installs it, or pip install "
                          "--no-build-isolation 'gpgrl[deepspeed]' after torch") from err
    return deepspeed


def hidden_size(model: torch.nn.Module) -> int:
    """The language model's hidden size (a vision-language model's text config's)."""
    config = model.config
    config = getattr(config, "text_config", None) or config
    return int(config.hidden_size)


def deepspeed_config(stage: int, max_grad_norm: float, bf16: bool, hidden: int) -> dict[str, Any]:
    """One micro-batch per accumulation (gpgrl sets the boundary), clipping by the engine, fp32 or bf16 state.

    Communication buckets are sized from the hidden size as transformers sizes DeepSpeed's "auto" values
    (DeepSpeed's fixed defaults, 5e8 elements, dominate the memory of a small model)."""
    zero: dict[str, Any] = {"stage": stage, "reduce_bucket_size": hidden * hidden,
                            "allgather_bucket_size": hidden * hidden}
    if stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=True,
                    stage3_prefetch_bucket_size=int(0.9 * hidden * hidden),
                    stage3_param_persistence_threshold=10 * hidden)
    return {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "zero_optimization": zero,
            "gradient_clipping": max_grad_norm, "zero_allow_untested_optimizer": True, "bf16": {"enabled": bf16},
            "steps_per_print": 2**31 - 1, "wall_clock_breakdown": False}


class ZeRO(Strategy):
    shares_prompt_forward = False  # the engine's hooks expect one forward per backward

    def __init__(self, accelerator: Any, cfg: Any, stage: int) -> None:
        super().__init__(accelerator, cfg)
        self.stage, self.name = stage, f"zero{stage}"
        self._finite = True  # every micro-batch loss of the current step so far

    def prepare(self, model: torch.nn.Module, make_optimizer: OptimizerFactory) -> tuple[Any, Any, Any]:
        deepspeed = import_deepspeed()
        optimizer, scheduler = make_optimizer(model)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = deepspeed_config(self.stage, self.cfg.optim.max_grad_norm, self.cfg.model.dtype == "bfloat16",
                                  hidden_size(base))
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config,
                                               dist_init_required=False)
        # the scheduler drives the client optimizer's param groups, which the engine's optimizer shares
        self.model, self.optimizer = engine, optimizer
        return engine, optimizer, scheduler

    def sync_context(self, last: bool):
        self.model.set_gradient_accumulation_boundary(last)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        self._finite = self._finite and bool(torch.isfinite(loss.detach()).all())
        if last:
            flag = torch.tensor(float(self._finite), device=self.accelerator.device)
            if self.accelerator.num_processes > 1:
                flag = self.accelerator.reduce(flag, reduction="sum")
            if int(flag) != self.accelerator.num_processes:
                loss = loss * float("nan")  # the engine's non-finite-norm path skips the update and drops grads
            self._finite = True
        self.model.backward(loss)

    def clip_and_step(self, max_norm: float, loss: float) -> tuple[float, bool]:
        self.model.step()
        norm = self.model.get_global_grad_norm()
        grad_norm = float("nan") if norm is None else float(norm)
        applied = bool(self.model.was_step_applied()) and math.isfinite(loss)
        return grad_norm, applied

    @contextlib.contextmanager
    def whole_model(self) -> Iterator[torch.nn.Module]:
        module = self.model.module
        if self.stage < 3:
            yield module
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None), \
                self._without_parameter_hooks():
            yield module

    @contextlib.contextmanager
    def _without_parameter_hooks(self) -> Iterator[None]:
        """ZeRO-3's per-module hooks gather and release parameters around every forward, and its root hook checks
        the step against the other processes: collectives that hang when the processes run different numbers of
        forwards (chunks, decode lengths, the main process's evaluation). With the parameters gathered they are
        taken off for the block and put back after, as TRL does (DeepSpeed offers no public switch)."""
        offload = self.model.optimizer.parameter_offload
        for param in offload.module.parameters():
            param.ds_active_sub_modules.clear()
        for hook in offload.forward_hooks + offload.backward_hooks:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        # the root's start-of-forward hook checks step counts against the other processes (a broadcast)
        root_hooks, start_id = offload.module._forward_pre_hooks, offload.fwd_pre_hook.id
        start = root_hooks.pop(start_id)
        try:
            yield
        finally:
            root_hooks[start_id] = start
            offload._register_deepspeed_module(offload.module)

    def _gathered(self, everywhere: bool) -> dict[str, torch.Tensor]:
        """The consolidated weights: on every process where they stay (`everywhere`), else on the main process's CPU
        ({} on the others)."""
        if not (everywhere or self.accelerator.is_main_process):
            with self.whole_model():  # a collective: every process takes part
                return {}
        with self.whole_model() as module:
            return {k: v.detach().clone() if everywhere else v.detach().cpu().clone()
                    for k, v in module.state_dict().items()}

    def full_state(self) -> dict[str, torch.Tensor]:
        return self._gathered(everywhere=True)

    def final_model(self, build: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
        return filled_copy(build, self._gathered(everywhere=False), self.accelerator.is_main_process)

    def state_parts(self) -> dict[str, Any]:
        return {"model": self._gathered(everywhere=False),
                "zero": {"stage": self.stage, "processes": self.accelerator.num_processes}}

    def write_shards(self, directory: Path) -> None:
        self.model.save_checkpoint(str(directory / ENGINE_DIR), tag=TAG, save_latest=False)

    def load_parts(self, parts: dict[str, Any], directory: Path) -> None:
        saved = parts.get("zero", {})
        if saved != {"stage": self.stage, "processes": self.accelerator.num_processes}:
            raise ConfigError(f"{directory} was written by {saved or 'another strategy'}; ZeRO resumes with the "
                              f"stage and number of processes that wrote it (now stage {self.stage}, "
                              f"{self.accelerator.num_processes} processes): launch it so")
        self.model.load_checkpoint(str(directory / ENGINE_DIR), tag=TAG, load_optimizer_states=True,
                                   load_lr_scheduler_states=False, load_module_strict=True)
