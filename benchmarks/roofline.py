"""This machine's limits on a model's own shapes, and the roofline time of a decode step or a training pass.

`matmul_rate` times `F.linear` on every distinct linear shape of the model at the batch's row count (the model's
GEMMs as the forward runs them, best of three), so "the limit" is what this CPU and this torch build reach on these
shapes, not a datasheet number. `memory_bandwidth` times a large copy. A decode step reads every weight once and
the KV cache of every row, and computes 2 FLOPs per weight per row plus attention over the context: its roofline time
is max(FLOPs / rate, bytes / bandwidth). A training forward + backward costs 3x the forward FLOPs of its tokens.
`roofline_fraction = roofline time / measured time` (1.0 = at the limit).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Limits:
    matmul_gflops: float
    """GFLOP/s of F.linear on the model's shapes at the measured row count."""
    bandwidth_gbs: float
    """GB/s of a large tensor copy (read + write)."""
    rows: int


def linear_shapes(model: torch.nn.Module) -> list[tuple[int, int]]:
    """(in, out) of every nn.Linear that a token passes through (LM head included), with repeats."""
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]


def weight_count(model: torch.nn.Module) -> int:
    """Weights a token multiplies with: every linear layer's, the LM head's included."""
    return sum(n_in * n_out for n_in, n_out in linear_shapes(model))


def _best_time(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def matmul_rate(model: torch.nn.Module, rows: int, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s reached by F.linear on each distinct linear shape of `model` with `rows` rows, weighted by use."""
    shapes = linear_shapes(model)
    counts: dict[tuple[int, int], int] = {}
    for shape in shapes:
        counts[shape] = counts.get(shape, 0) + 1
    flops = seconds = 0.0
    for (n_in, n_out), count in counts.items():
        x, w = torch.randn(rows, n_in, dtype=dtype), torch.randn(n_out, n_in, dtype=dtype)
        t = _best_time(lambda x=x, w=w: F.linear(x, w))
        flops += 2.0 * rows * n_in * n_out * count
        seconds += t * count
    return flops / seconds / 1e9


def memory_bandwidth(megabytes: int = 512) -> float:
    """GB/s of copying a `megabytes` fp32 tensor (each byte read once and written once)."""
    x = torch.empty(megabytes * 2**20 // 4)
    y = torch.empty_like(x)
    t = _best_time(lambda: y.copy_(x))
    return 2 * x.numel() * 4 / t / 1e9


def limits(model: torch.nn.Module, rows: int) -> Limits:
    return Limits(matmul_rate(model, rows), memory_bandwidth(), rows)


def _attention_dims(model: torch.nn.Module) -> tuple[int, int, int]:
    """(layers, query width, key/value width) of the language model's attention."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return config.num_hidden_layers, config.num_attention_heads * head, kv * head


def decode_step(model: torch.nn.Module, rows: int, context: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one decode step of `rows` rows over `context` cached tokens (fp32)."""
    layers, q_width, kv_width = _attention_dims(model)
    weights = weight_count(model)
    flops = 2.0 * rows * weights + 4.0 * rows * context * q_width * layers  # GEMMs + scores and weighted sum
    kv_bytes = 2.0 * layers * rows * context * kv_width * 4
    return flops, 4.0 * weights + kv_bytes


def forward_flops(model: torch.nn.Module, tokens: int, context: int = 0) -> float:
    """FLOPs of a forward over `tokens` tokens (attention over `context` tokens each, on average)."""
    layers, q_width, _ = _attention_dims(model)
    weights = weight_count(model)
    return 2.0 * tokens * weights + 4.0 * tokens * context * q_width * layers


def roofline_seconds(flops: float, bytes_: float, lim: Limits) -> float:
    return max(flops / (lim.matmul_gflops * 1e9), bytes_ / (lim.bandwidth_gbs * 1e9))
