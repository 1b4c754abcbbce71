"""Group bookkeeping shared by every group-baseline estimator.

This module owns the ONE definition of a zero-variance ("degenerate") group, used everywhere in gpgrl:
a group is degenerate iff ``max(r) - min(r) <= DEGENERATE_TOL`` (a range test, exact for equal rewards), and
the per-sample group statistics (mean, unbiased std, size) computed without a Python loop over groups.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

DEGENERATE_TOL: float = 1e-6
"""A group whose reward range max(r) - min(r) is at most this is degenerate (no group-relative signal)."""


def group_index(group_ids: Tensor) -> tuple[Tensor, int]:
    """Map arbitrary integer group ids to a dense index.

    Args:
        group_ids: [N] integer ids, any values, any order (need not be contiguous or sorted).

    Returns:
        (index, K): index [N] long in 0..K-1 (the same index for the same id) and the number of groups K.

    Example:
        >>> group_index(torch.tensor([7, 3, 7, 3]))
        (tensor([1, 0, 1, 0]), 2)
    """
    unique, index = torch.unique(group_ids, return_inverse=True)  # [K], [N]
    return index.long(), int(unique.numel())


class GroupStats(NamedTuple):
    """Per-sample view of group statistics (every sample carries its own group's values)."""

    mean: Tensor
    """[N] float: mean reward of the sample's group."""
    std: Tensor
    """[N] float: unbiased (Bessel-corrected) reward std of the sample's group."""
    degenerate: Tensor
    """[N] bool: the sample's group is zero-variance (range <= DEGENERATE_TOL)."""
    size: Tensor
    """[N] long: number of samples in the sample's group."""


def _group_sum(values: Tensor, index: Tensor, k: int) -> Tensor:
    """Sum values [N] into their groups: [K]."""
    return values.new_zeros(k).index_add_(0, index, values)  # [K]


def _group_range(values: Tensor, index: Tensor, k: int) -> Tensor:
    """max - min of values [N] within each group: [K]."""
    gmax = values.new_full((k,), -torch.inf).scatter_reduce_(0, index, values, "amax")  # [K]
    gmin = values.new_full((k,), torch.inf).scatter_reduce_(0, index, values, "amin")  # [K]
    return gmax - gmin  # [K]


def group_stats(rewards: Tensor, group_ids: Tensor) -> GroupStats:
    """Mean, unbiased std, degenerate flag and size of each sample's group (vectorised).

    Args:
        rewards: [N] rewards (cast to the default float dtype if not floating point).
        group_ids: [N] integer group ids (arbitrary values, see `group_index`).

    Raises:
        ValueError: a group has a single sample (its unbiased std is undefined and it has no baseline).

    Example:
        >>> s = group_stats(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([5, 5, 2, 2]))
        >>> s.mean, s.degenerate
        (tensor([0.5000, 0.5000, 1.0000, 1.0000]), tensor([False, False,  True,  True]))
    """
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())  # [N]
    index, k = group_index(group_ids)  # [N], K
    counts = _group_sum(torch.ones_like(rewards), index, k)  # [K]
    if bool((counts < 2).any()):
        raise ValueError("group of size 1: a group-baseline estimator needs generations_per_prompt >= 2 "
                         f"(group sizes found: {sorted(set(counts.long().tolist()))})")
    mean = _group_sum(rewards, index, k) / counts  # [K]
    centred = rewards - mean[index]  # [N]
    std = (_group_sum(centred * centred, index, k) / (counts - 1)).sqrt()  # [K]
    degenerate = _group_range(rewards, index, k) <= DEGENERATE_TOL  # [K]
    return GroupStats(mean=mean[index], std=std[index], degenerate=degenerate[index],  # [N] each
                      size=counts.long()[index])
