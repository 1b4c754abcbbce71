"""Tests for gpgrl.algos.advantages: every estimator on hand-derived examples."""

import pytest
import torch

from gpgrl.algos.advantages import (
    ADVANTAGES,
    ZEROES_DEGENERATE,
    dr_grpo,
    gpg,
    grpo,
    reinforce_pp,
    reinforce_pp_baseline,
    rloo,
)

# Shared example: group 5 = {1, 0, 0, 0} (informative), group 2 = {1, 1} (degenerate).
# group 5: mean 0.25, r - mean = [0.75, -0.25, -0.25, -0.25],
#          unbiased var = (0.5625 + 3 * 0.0625) / 3 = 0.25, std = 0.5
REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
GROUPS = torch.tensor([5, 5, 5, 5, 2, 2])
LENGTHS = torch.tensor([1, 2, 1, 1, 3, 2])


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_registry_names():
    assert list(ADVANTAGES) == ["gpg", "grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"]
    assert set(ZEROES_DEGENERATE) == set(ADVANTAGES)


def test_gpg_f_norm_none():
    # F_norm = 1: r - mean; degenerate group exactly 0
    torch.testing.assert_close(gpg(REWARDS, GROUPS), _t([0.75, -0.25, -0.25, -0.25, 0.0, 0.0]))


def test_gpg_f_norm_group_std():
    # divide by group std + eps = 0.5001: 0.75 / 0.5001 = 1.4997000599880024,
    #                                     -0.25 / 0.5001 = -0.4999000199960008
    p, n = 1.4997000599880024, -0.4999000199960008
    torch.testing.assert_close(gpg(REWARDS, GROUPS, f_norm="group_std"), _t([p, n, n, n, 0, 0]))


def test_gpg_f_norm_batch_std():
    # batch rewards [1, 0, 0, 0, 1, 1]: mean 0.5, unbiased var = 6 * 0.25 / 5 = 0.3, std = 0.5477225575051661
    # 0.75 / (0.5477225575051661 + 1e-4) = 1.3690564393981302; -0.25 / (...) = -0.45635214646604333
    p, n = 1.3690564393981302, -0.45635214646604333
    torch.testing.assert_close(gpg(REWARDS, GROUPS, f_norm="batch_std"), _t([p, n, n, n, 0, 0]))


def test_gpg_unknown_f_norm_lists_choices():
    with pytest.raises(ValueError, match="none, group_std, batch_std"):
        gpg(REWARDS, GROUPS, f_norm="std")


def test_grpo():
    # (r - mean) / (std + 1e-4), std = 0.5 -> same numbers as gpg group_std
    expected = _t([1.4997000599880024, -0.4999000199960008, -0.4999000199960008, -0.4999000199960008, 0, 0])
    torch.testing.assert_close(grpo(REWARDS, GROUPS), expected)


def test_dr_grpo():
    torch.testing.assert_close(dr_grpo(REWARDS, GROUPS), _t([0.75, -0.25, -0.25, -0.25, 0.0, 0.0]))


def test_rloo_closed_form_and_leave_one_out():
    # group 5 (G=4): 4/3 * 0.75 = 1; 4/3 * -0.25 = -1/3
    #   leave-one-out: 1 - mean(0, 0, 0) = 1; 0 - mean(1, 0, 0) = -1/3
    # group 8 (G=2) = {3, 1}: 2/1 * (+-1) = +-2; leave-one-out 3 - 1 = 2, 1 - 3 = -2
    rewards = torch.cat([REWARDS, _t([3.0, 1.0])])
    group_ids = torch.cat([GROUPS, torch.tensor([8, 8])])
    expected = _t([1.0, -1 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 2.0, -2.0])
    torch.testing.assert_close(rloo(rewards, group_ids), expected)


def test_reinforce_pp_per_sample_whitening():
    # batch mean 0.5, unbiased std sqrt(0.3) = 0.5477225575051661; +-0.5 / (std + 1e-4) = +-0.9127042929320867
    a = 0.9127042929320867
    torch.testing.assert_close(reinforce_pp(REWARDS, GROUPS), _t([a, -a, -a, -a, a, a]))


def test_reinforce_pp_token_weighted_whitening():
    # tokens: r=1 carried by 1 + 3 + 2 = 6 tokens, r=0 by 2 + 1 + 1 = 4 tokens (10 in all)
    # mean 0.6; unbiased var = (6 * 0.4^2 + 4 * 0.6^2) / 9 = 2.4 / 9, std = 0.5163977794943222
    # 0.4 / (std + 1e-4) = 0.7744466982832348; -0.6 / (std + 1e-4) = -1.161670047424852
    p, n = 0.7744466982832348, -1.161670047424852
    torch.testing.assert_close(reinforce_pp(REWARDS, GROUPS, lengths=LENGTHS), _t([p, n, n, n, p, p]))


def test_reinforce_pp_token_weighting_matches_whitening_the_token_tensor():
    tokens = REWARDS.repeat_interleave(LENGTHS)  # [10] one entry per token
    whitened = (tokens - tokens.mean()) / (tokens.std() + 1e-4)  # [10]
    first_token = torch.cumsum(LENGTHS, 0) - LENGTHS  # index of each sample's first token
    torch.testing.assert_close(reinforce_pp(REWARDS, GROUPS, lengths=LENGTHS), whitened[first_token])


def test_reinforce_pp_baseline_per_sample():
    # centred = [0.75, -0.25, -0.25, -0.25, 0, 0], mean 0, unbiased var = 0.75 / 5 = 0.15,
    # std 0.3872983346207417
    # 0.75 / (std + 1e-4) = 1.9359918021698286; -0.25 / (std + 1e-4) = -0.6453306007232762
    n = -0.6453306007232762
    expected = _t([1.9359918021698286, n, n, n, 0.0, 0.0])
    torch.testing.assert_close(reinforce_pp_baseline(REWARDS, GROUPS), expected)


def test_reinforce_pp_baseline_token_weighted_moves_degenerate_groups():
    # centred values with token weights [1, 2, 1, 1, 3, 2]: mean = (0.75 - 0.5 - 0.25 - 0.25) / 10 = -0.025
    # deviations [0.775, -0.225 x3, 0.025 x2]
    # var = (0.600625 + 4 * 0.050625 + 5 * 0.000625) / 9 = 0.80625 / 9
    # std = 0.2993047499344662; divide by std + 1e-4
    n, d = -0.7514910837227802, 0.08349900930253114
    expected = _t([2.588469288378465, n, n, n, d, d])
    torch.testing.assert_close(reinforce_pp_baseline(REWARDS, GROUPS, lengths=LENGTHS), expected)


@pytest.mark.parametrize("name", list(ADVANTAGES))
def test_degenerate_groups_exactly_zero_iff_flagged(name):
    # group 1 rewards differ only by float residue below the tolerance; group 0 is informative
    rewards = torch.tensor([0.1, 0.1 + 1e-7, 0.1, 0.3, 0.9, 0.2], dtype=torch.float32)
    group_ids = torch.tensor([1, 1, 1, 0, 0, 0])
    kwargs = {"lengths": torch.tensor([4, 1, 2, 3, 5, 1])} if name.startswith("reinforce") else {}
    adv = ADVANTAGES[name](rewards, group_ids, **kwargs)
    assert adv.dtype == torch.float32
    assert torch.isfinite(adv).all()
    assert bool((adv[:3] == 0.0).all()) == ZEROES_DEGENERATE[name]
    assert (adv[3:] != 0.0).all()


@pytest.mark.parametrize("name", ["gpg", "grpo", "dr_grpo", "rloo"])
def test_group_baseline_estimators_reject_groups_of_one(name):
    with pytest.raises(ValueError, match="group of size 1"):
        ADVANTAGES[name](torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]))


def test_reinforce_pp_baseline_all_degenerate_is_zero():
    # centred rewards are exactly 0 everywhere; whitening zeros gives (0 - 0) / (0 + eps) = 0
    adv = reinforce_pp_baseline(_t([1.0, 1.0, 0.0, 0.0]), torch.tensor([0, 0, 1, 1]),
                                lengths=torch.tensor([1, 3, 2, 5]))
    assert adv.tolist() == [0.0, 0.0, 0.0, 0.0]
