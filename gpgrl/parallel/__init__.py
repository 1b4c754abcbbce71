"""How several processes share the training state: one `Strategy` interface, chosen once by `parallel.strategy`.

ddp (`base`): every process holds everything (accelerate). fsdp2 (`fsdp`): torch's fully_shard. zero2 / zero3
(`zero`): DeepSpeed, imported only when chosen (the `deepspeed` extra). `launcher` maps an accelerate config's
FSDP / DeepSpeed choice onto these names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpgrl.parallel.base import OptimizerFactory, Strategy
from gpgrl.parallel.launcher import launcher_strategy, resolve_strategy, strip_launcher_env


def _fsdp2(accelerator: Any, cfg: Any) -> Strategy:
    from gpgrl.parallel.fsdp import FSDP2

    return FSDP2(accelerator, cfg)


def _zero(stage: int) -> Callable[[Any, Any], Strategy]:
    def build(accelerator: Any, cfg: Any) -> Strategy:
        from gpgrl.parallel.zero import ZeRO

        return ZeRO(accelerator, cfg, stage)

    return build


STRATEGIES: dict[str, Callable[[Any, Any], Strategy]] = {"ddp": Strategy, "fsdp2": _fsdp2, "zero2": _zero(2),
                                                         "zero3": _zero(3)}


def make_strategy(name: str, accelerator: Any, cfg: Any) -> Strategy:
    """The strategy registered under `name` (a `parallel.strategy` value), bound to the run's processes."""
    return STRATEGIES[name](accelerator, cfg)


__all__ = ["STRATEGIES", "OptimizerFactory", "Strategy", "launcher_strategy", "make_strategy", "resolve_strategy",
           "strip_launcher_env"]
