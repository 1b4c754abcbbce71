"""Tests for gpgrl.algos.groups: dense group index, group statistics, the single degenerate test."""

import pytest
import torch

from gpgrl.algos.groups import DEGENERATE_TOL, group_index, group_stats


def test_group_index_maps_arbitrary_ids_to_dense_index():
    # unique sorted ids are [3, 7] -> 7 becomes 1, 3 becomes 0
    index, k = group_index(torch.tensor([7, 3, 7, 3]))
    assert k == 2
    assert index.dtype == torch.long
    assert index.tolist() == [1, 0, 1, 0]


def test_group_stats_hand_example_with_non_contiguous_ids():
    # group 10 = {1, 0}:    mean 0.5, unbiased var = (0.25 + 0.25) / 1 = 0.5, std = sqrt(0.5) = 0.70710678
    # group 3  = {0, 0}:    mean 0,   std 0, degenerate
    # group 7  = {2, 4, 3}: mean 3,   unbiased var = (1 + 1 + 0) / 2 = 1, std = 1, size 3
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 4.0, 3.0])
    group_ids = torch.tensor([10, 3, 10, 3, 7, 7, 7])
    stats = group_stats(rewards, group_ids)
    torch.testing.assert_close(stats.mean, torch.tensor([0.5, 0.0, 0.5, 0.0, 3.0, 3.0, 3.0]))
    s = 0.70710678
    torch.testing.assert_close(stats.std, torch.tensor([s, 0.0, s, 0.0, 1.0, 1.0, 1.0]))
    assert stats.degenerate.tolist() == [False, True, False, True, False, False, False]
    assert stats.size.tolist() == [2, 2, 2, 2, 3, 3, 3]
    assert stats.size.dtype == torch.long


def test_degenerate_is_a_range_test_at_the_shared_tolerance():
    # ranges: group 0 -> 0.5 * tol (degenerate), group 1 -> 2 * tol (informative)
    tol = DEGENERATE_TOL
    rewards = torch.tensor([1.0, 1.0 + 0.5 * tol, 1.0, 1.0 + 2 * tol], dtype=torch.float64)
    stats = group_stats(rewards, torch.tensor([0, 0, 1, 1]))
    assert stats.degenerate.tolist() == [True, True, False, False]


def test_integer_rewards_are_cast_to_float():
    stats = group_stats(torch.tensor([1, 0]), torch.tensor([0, 0]))
    assert stats.mean.is_floating_point()
    assert stats.mean.tolist() == [0.5, 0.5]


def test_group_of_size_one_raises():
    with pytest.raises(ValueError, match="group of size 1.*generations_per_prompt >= 2"):
        group_stats(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]))


def test_group_stats_matches_a_per_group_loop():
    gen = torch.Generator().manual_seed(0)
    group_ids = torch.tensor([4, 9, 4, 1, 9, 1, 4, 9, 1, 1])
    rewards = torch.rand(10, generator=gen, dtype=torch.float64)
    stats = group_stats(rewards, group_ids)
    for gid in group_ids.unique():
        rows = group_ids == gid
        torch.testing.assert_close(stats.mean[rows], rewards[rows].mean().expand(int(rows.sum())))
        torch.testing.assert_close(stats.std[rows], rewards[rows].std().expand(int(rows.sum())))
        assert (stats.size[rows] == rows.sum()).all()
