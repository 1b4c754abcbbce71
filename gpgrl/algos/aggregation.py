"""Loss aggregation: per-token losses [N, T] -> one scalar, invariant to micro-batching and world size.

This module owns the five aggregation modes and the `AGGREGATIONS` registry. Every mode is written as
per-sequence coefficients c_i,

    loss = sum_i c_i * sum_t m_it * l_it,

computed ONCE per optimizer step from GLOBAL counts (`Normaliser`). Because the loss is then a plain sum over
sequences, summing the micro-batch losses (accumulation) and summing across processes (DDP) give exactly the
full-batch loss, whatever the split, provided each micro-batch uses its rows of the precomputed weights.

| mode                     | c_i                                          | used by                          |
|--------------------------|----------------------------------------------|----------------------------------|
| token-mean               | 1 / total_tokens                             | DAPO, verl default, open-r1 GPG  |
| seq-mean-token-mean      | 1 / (num_sequences * len_i)                  | GRPO, multimodal GPG             |
| seq-mean-token-sum       | 1 / num_sequences                            | verl option                      |
| seq-mean-token-sum-norm  | 1 / (num_sequences * max_len)                | Dr.GRPO (TRL constant N * L_max) |
| group-token-mean         | 1 / (num_groups * sum_{j in g(i)} len_j)     | GPG paper Eq. 5                  |

A zero denominator (an empty sequence, group or step) gives weight 0, never inf or NaN.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple

import torch
from torch import Tensor

from gpgrl.algos.groups import group_index


class Normaliser(NamedTuple):
    """GLOBAL counts over the whole optimizer step (all processes, all micro-batches)."""

    num_sequences: int
    """Completions in the step."""
    num_groups: int
    """Groups (prompts) in the step."""
    total_tokens: int
    """Completion tokens (mask sum) in the step."""
    max_len: int
    """Completion length limit (max_new_tokens), the Dr.GRPO constant."""


def _safe_reciprocal(values: Tensor) -> Tensor:
    """1 / x where x > 0, else 0."""
    return torch.where(values > 0, 1.0 / values.clamp_min(1e-30), torch.zeros_like(values))  # [N]


def _constant(lengths: Tensor, denominator: float) -> Tensor:
    """The same coefficient 1 / denominator for every sequence."""
    full = torch.full(lengths.shape, float(denominator), dtype=torch.float32, device=lengths.device)  # [N]
    return _safe_reciprocal(full)  # [N]


def token_mean(lengths: Tensor, group_ids: Tensor, norm: Normaliser) -> Tensor:
    """c_i = 1 / total_tokens."""
    return _constant(lengths, norm.total_tokens)  # [N]


def seq_mean_token_mean(lengths: Tensor, group_ids: Tensor, norm: Normaliser) -> Tensor:
    """c_i = 1 / (num_sequences * len_i); 0 for empty sequences."""
    return _safe_reciprocal(norm.num_sequences * lengths.to(torch.float32))  # [N]


def seq_mean_token_sum(lengths: Tensor, group_ids: Tensor, norm: Normaliser) -> Tensor:
    """c_i = 1 / num_sequences."""
    return _constant(lengths, norm.num_sequences)  # [N]


def seq_mean_token_sum_norm(lengths: Tensor, group_ids: Tensor, norm: Normaliser) -> Tensor:
    """c_i = 1 / (num_sequences * max_len) (Dr.GRPO's constant normaliser)."""
    return _constant(lengths, norm.num_sequences * norm.max_len)  # [N]


def group_token_mean(lengths: Tensor, group_ids: Tensor, norm: Normaliser) -> Tensor:
    """c_i = 1 / (num_groups * tokens of i's group) (GPG Eq. 5).

    Group token counts come from the given rows, so every group must be complete in them (groups are never
    split across processes; compute the weights before splitting into micro-batches).
    """
    index, k = group_index(group_ids)  # [N], K
    lengths = lengths.to(torch.float32)  # [N]
    group_tokens = lengths.new_zeros(k).index_add_(0, index, lengths)  # [K]
    return _safe_reciprocal(norm.num_groups * group_tokens[index])  # [N]


def sequence_weights(mode: str, lengths: Tensor, group_ids: Tensor, norm: Normaliser) -> Tensor:
    """Per-sequence coefficients c_i [N] (float32) for `mode`, from GLOBAL counts.

    Args:
        mode: an `AGGREGATIONS` key.
        lengths: [N] completion lengths (mask row sums) of the rows this process holds.
        group_ids: [N] group ids of those rows (whole groups).
        norm: global counts of the optimizer step.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; choices: {', '.join(AGGREGATIONS)}")
    return AGGREGATIONS[mode](lengths, group_ids, norm)  # [N]


def aggregate(token_loss: Tensor, mask: Tensor, seq_weights: Tensor) -> Tensor:
    """sum_i w_i * sum_t m_it * l_it. Masked-out positions are dropped (even if inf/NaN).

    Args:
        token_loss: [N, T] per-token loss.
        mask: [N, T] completion mask (bool or 0/1).
        seq_weights: [N] coefficients from `sequence_weights` (rows matching token_loss).
    """
    kept = torch.where(mask.bool(), token_loss, torch.zeros_like(token_loss))  # [N, T]
    return (kept.sum(dim=1) * seq_weights.to(token_loss.dtype)).sum()  # []


AGGREGATIONS = MappingProxyType({
    "token-mean": token_mean,
    "seq-mean-token-mean": seq_mean_token_mean,
    "seq-mean-token-sum": seq_mean_token_sum,
    "seq-mean-token-sum-norm": seq_mean_token_sum_norm,
    "group-token-mean": group_token_mean,
})
"""Aggregation mode -> fn(lengths [N], group_ids [N], norm) -> per-sequence coefficients [N]."""
