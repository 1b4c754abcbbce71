"""The scope of normalisation: the whole optimizer step (gpgrl) or each micro-batch (HF-Trainer reference code).

This module owns `step_weights`: the per-sequence loss coefficients c_i [N] of one optimizer step, with α
folded in, and the step's α summary. Two scopes:

- ``micro_groups = 0`` (every preset but `gpg-ref-microbatch`): the aggregation's denominators and α come
  from the whole step's GLOBAL counts, so the update does not depend on micro-batching, accumulation or
  world size (c_i = α · aggregation weight).
- ``micro_groups = k > 0``: the step is cut, in group order, into local micro-batches of k whole groups.
  Each is aggregated with its OWN counts (a token mean over its own tokens, degenerate groups included), and
  the micro-batches are averaged, as HF Trainer's division by gradient_accumulation_steps and DDP's mean over
  ranks do. α is counted over windows of ``alpha_groups`` groups (one reference micro-step over all its
  ranks; 0 means k) and scales its window's sequences. This is open-r1's GPGTrainer (GPG_SPEC §2.1):
  loss = α_micro-step · local token mean, so α re-weights micro-batches against each other and changes the
  update's direction, not only its scale.

A window whose groups are all degenerate has no signal and weight 0 (the reference would divide 0 by
inverse_alpha = 0).

Toy case (hand-derived): groups of 2 with lengths (1, 3 | 2, 2 | 4, 4 | 1, 1), group 1 degenerate,
micro_groups = 1, alpha_groups = 2, token-mean: 4 micro-batches with tokens 4, 4, 8, 2, so the token-mean
weights are 1/(4·4), 1/(4·4), 1/(4·8), 1/(4·2); window 0 (groups 0, 1) has α = 4/2 = 2, window 1 has α = 1;
c = (1/8, 1/8 | 1/8, 1/8 | 1/32, 1/32 | 1/8, 1/8).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gpgrl.algos.aggregation import Normaliser, sequence_weights
from gpgrl.algos.alpha import AlphaResult
from gpgrl.algos.groups import group_index

AlphaOf = Callable[[int, int, int, int], AlphaResult]
"""fn(num_samples, num_degenerate, total_tokens, valid_tokens) -> AlphaResult (e.g. Algorithm.alpha_factor)."""


def blocks(index: Tensor, size: int) -> tuple[Tensor, int]:
    """Block id [N] of each sequence (its group's dense index // size; one block when size is 0) and the count."""
    block = index // size if size > 0 else torch.zeros_like(index)  # [N]
    return block, int(block.max()) + 1 if block.numel() else 0


def _aggregated(aggregation: str, lengths: Tensor, group_ids: Tensor, chunk: Tensor, count: int,
                max_len: int) -> Tensor:
    """Aggregation weights [N] computed within each chunk from its own counts, divided by the chunk count."""
    weights = torch.zeros(lengths.shape, dtype=torch.float32)  # [N]
    for c in range(count):
        rows = chunk == c  # [N]
        norm = Normaliser(num_sequences=int(rows.sum()), num_groups=int(group_ids[rows].unique().numel()),
                          total_tokens=int(lengths[rows].sum()), max_len=max_len)
        weights[rows] = sequence_weights(aggregation, lengths[rows], group_ids[rows], norm) / count  # [n_c]
    return weights  # [N]


def _summary(results: list[AlphaResult], degenerate: Tensor) -> AlphaResult:
    """One step-level AlphaResult: the single window's, or the mean α of the windows with signal."""
    if len(results) == 1:
        return results[0]
    alphas = [r.alpha for r in results if r.has_signal]
    valid_fraction = 1.0 - float(degenerate.float().mean())
    return AlphaResult(alpha=sum(alphas) / len(alphas) if alphas else 0.0, has_signal=bool(alphas),
                       valid_fraction=valid_fraction)


def step_weights(aggregation: str, alpha_of: AlphaOf, lengths: Tensor, group_ids: Tensor, degenerate: Tensor,
                 max_len: int, micro_groups: int = 0, alpha_groups: int = 0) -> tuple[Tensor, AlphaResult]:
    """Per-sequence coefficients c_i [N] (float32, α included) of one optimizer step, and its α summary.

    Args:
        aggregation: an `AGGREGATIONS` key.
        alpha_of: the α correction from counts (Algorithm.alpha_factor).
        lengths: [N] completion lengths of the step's sequences (whole groups).
        group_ids: [N] group ids; groups are ordered by id.
        degenerate: [N] bool, the sequence's group has zero reward variance.
        max_len: completion length limit (the Dr.GRPO constant).
        micro_groups: groups per local micro-batch (0 = the whole step).
        alpha_groups: groups per α window, a multiple of micro_groups (0 = micro_groups).
    """
    index, _ = group_index(group_ids)  # [N]
    chunk, chunks = blocks(index, micro_groups)  # [N]
    window, windows = blocks(index, alpha_groups or micro_groups)  # [N]
    weights = _aggregated(aggregation, lengths, group_ids, chunk, chunks, max_len)  # [N]
    results = []
    for w in range(windows):
        rows = window == w  # [N]
        result = alpha_of(int(rows.sum()), int(degenerate[rows].sum()), int(lengths[rows].sum()),
                          int(lengths[rows & ~degenerate].sum()))
        weights[rows] *= result.alpha  # [n_w]
        results.append(result)
    return weights, _summary(results, degenerate)  # [N]
