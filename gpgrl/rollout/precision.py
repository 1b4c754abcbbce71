"""bf16 autocast for sampling and training forwards (LM head kept in fp32), and the KV-cache argument names."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor


def _unwrap(model):
    """The module under a DistributedDataParallel wrapper (peft models delegate attribute access)."""
    return getattr(model, "module", model)


def _fp32_linear(head: torch.nn.Linear, hidden: Tensor) -> Tensor:
    with torch.autocast(hidden.device.type, enabled=False):
        bias = head.bias.float() if head.bias is not None else None
        return F.linear(hidden.float(), head.weight.float(), bias)


@contextmanager
def _fp32_head(model) -> Iterator[None]:
    """Run the output projection in fp32 inside autocast (a bf16 head doubles the log-prob error)."""
    head = _unwrap(model).get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        yield
        return
    saved = head.__dict__.get("forward")
    head.forward = functools.partial(_fp32_linear, head)
    try:
        yield
    finally:
        if saved is None:
            del head.forward
        else:
            head.forward = saved


@contextmanager
def precision(model, autocast_bf16: bool) -> Iterator[None]:
    """bf16 autocast with an fp32 LM head when `autocast_bf16`, else nothing."""
    if not autocast_bf16:
        yield
        return
    device_type = next(model.parameters()).device.type
    with _fp32_head(model), torch.autocast(device_type, dtype=torch.bfloat16):
        yield


def cache_kwargs(model, cache) -> dict:
    """The forward argument that passes a KV cache: `cache` (transformers >= 5, where `past_key_values` is
    deprecated) or `past_key_values` (older)."""
    base = getattr(model, "module", model)
    forward = base.get_base_model().forward if hasattr(base, "get_base_model") else base.forward
    return {_cache_argument(getattr(forward, "__func__", forward)): cache}


@functools.cache
def _cache_argument(forward) -> str:
    """The KV-cache parameter of a model class's `forward`, read once per class (`inspect.signature` costs ~0.3 ms,
    once per decode step otherwise)."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def output_cache(output):
    """The KV cache a forward returned (`cache` in transformers >= 5, `past_key_values` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
