"""Rollout engines: what samples a step's completions, chosen once by `rollout.engine`.

`hf` samples with gpgrl's own sampler on the trained model (its parameters made whole by the parallel strategy for
the round). `vllm` (`gpgrl.rollout.vllm_engine`, imported only when chosen) samples with a vLLM engine colocated in
every process and gets the trainer's weights after every optimizer step. Both sample chunk c of a round from the
chunk's own seed, so the samples do not depend on the number of processes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from gpgrl.rollout.inputs import PromptEncoder, PromptInputs
from gpgrl.rollout.sampling import Sample, SamplingParams, generate

Sampler = Callable[[Sequence[PromptInputs], int, SamplingParams, int], list[list[Sample]]]
"""(encoded prompts, completions per prompt, sampling settings, seed) -> one group of samples per prompt."""


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block on torch's RNG seeded with `seed`, leaving the global RNG state untouched."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class HFEngine:
    """gpgrl's sampler (`gpgrl.rollout.sampling.generate`) on the trained model."""

    name = "hf"

    def __init__(self, encoder: PromptEncoder) -> None:
        self.encoder = encoder

    @contextmanager
    def round(self, strategy: Any) -> Iterator[Sampler]:
        """A sampler for one resampling round; the model's parameters stay whole for the whole round."""
        with strategy.whole_model() as model:
            def sample(prompts: Sequence[PromptInputs], n: int, params: SamplingParams, seed: int):
                with seeded(seed):
                    return generate(model, self.encoder, prompts, n, params)

            yield sample

    def push_weights(self, strategy: Any) -> None:
        """Nothing to push: the sampler is the trained model."""


def plain_state(state: dict[str, Tensor], lora_scale: float | None) -> dict[str, Tensor]:
    """A policy's state dict as the base model's checkpoint names it: a peft model's LoRA adapters merged into their
    base weights (W + scale * B @ A), peft's prefixes and `.base_layer` dropped. `lora_scale` = lora_alpha / r, or
    None for a model without adapters."""
    if lora_scale is None:
        return state
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        name = re.sub(r"^base_model\.model\.", "", key).replace(".base_layer.", ".")
        if key.endswith(".base_layer.weight"):
            stem = key[: -len("base_layer.weight")]
            a, b = state.get(f"{stem}lora_A.default.weight"), state.get(f"{stem}lora_B.default.weight")
            if a is not None and b is not None:
                value = value + lora_scale * (b.to(value.dtype) @ a.to(value.dtype))  # [out, in]
        out[name] = value
    return out


def _vllm(encoder: PromptEncoder, cfg: Any, model_dir: Callable[[], str], accelerator: Any, eos_ids: set[int]):
    from gpgrl.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(encoder, cfg, model_dir(), accelerator, eos_ids)


ENGINES: dict[str, Callable[..., Any]] = {"hf": lambda encoder, *_: HFEngine(encoder), "vllm": _vllm}
"""rollout.engine -> builder(encoder, cfg, model_dir, accelerator, eos_ids)."""


def make_engine(name: str, encoder: PromptEncoder, cfg: Any, model_dir: Callable[[], str], accelerator: Any,
                eos_ids: set[int]) -> Any:
    """The engine `rollout.engine` names. `model_dir` gives a directory holding the initial policy (for vLLM, which
    loads it before the trainer's weights are pushed); `eos_ids` end a completion."""
    return ENGINES[name](encoder, cfg, model_dir, accelerator, eos_ids)


__all__ = ["ENGINES", "HFEngine", "Sampler", "make_engine", "plain_state", "seeded"]
