"""Tests for gpgrl.algos.micro_steps: hand-derived weights, the reference's loss computed micro-step by micro-step,
and the claim that per-micro-batch α changes the update's direction."""

import pytest
import torch

from gpgrl.algos.aggregation import aggregate
from gpgrl.algos.alpha import ALPHAS, AlphaResult
from gpgrl.algos.micro_steps import blocks, step_weights
from gpgrl.algos.presets import ALGORITHMS, resolve_algorithm

# groups of 2 with lengths (1, 3 | 2, 2 | 4, 4 | 1, 1); group 1 degenerate (the module docstring's toy case)
LENGTHS = torch.tensor([1, 3, 2, 2, 4, 4, 1, 1])
GROUPS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
DEGENERATE = torch.tensor([False, False, True, True, False, False, False, False])


def test_toy_case_by_hand():
    weights, alpha = step_weights("token-mean", ALPHAS["samples"], LENGTHS, GROUPS, DEGENERATE, 8,
                                  micro_groups=1, alpha_groups=2)
    expected = torch.tensor([1 / 8, 1 / 8, 1 / 8, 1 / 8, 1 / 32, 1 / 32, 1 / 8, 1 / 8])
    torch.testing.assert_close(weights, expected)
    assert alpha == AlphaResult(alpha=1.5, has_signal=True, valid_fraction=0.75)  # mean of window α 2 and 1


def test_whole_step_scope_is_the_global_computation():
    weights, alpha = step_weights("token-mean", ALPHAS["samples"], LENGTHS, GROUPS, DEGENERATE, 8)
    assert alpha == AlphaResult(alpha=8 / 6, has_signal=True, valid_fraction=0.75)
    torch.testing.assert_close(weights, torch.full((8,), (8 / 6) / 18))  # 18 tokens in the step


def _reference_loss(token_loss, mask, degenerate, groups_per_rank, ranks, alpha_on):
    """open-r1 GPGTrainer + HF Trainer + DDP, written out: for each micro-step, each rank's loss is its local
    masked token mean divided by inverse_alpha (valid groups / groups of the micro-step over all ranks); DDP
    averages the ranks and HF divides by the number of accumulation steps."""
    rows_per_rank = 2 * groups_per_rank  # G = 2
    step_rows = rows_per_rank * ranks
    micro_steps = token_loss.shape[0] // step_rows
    total = token_loss.new_zeros(())
    for k in range(micro_steps):
        rows = slice(k * step_rows, (k + 1) * step_rows)
        groups = step_rows // 2
        valid = groups - int(degenerate[rows].sum()) // 2
        if valid == 0:  # the reference divides 0 by inverse_alpha = 0 (NaN); gpgrl gives the micro-step weight 0
            continue
        inverse_alpha = valid / groups if alpha_on else 1.0
        rank_losses = []
        for r in range(ranks):
            local = slice(k * step_rows + r * rows_per_rank, k * step_rows + (r + 1) * rows_per_rank)
            m = mask[local].to(token_loss.dtype)
            rank_losses.append((token_loss[local] * m).sum() / m.sum() / inverse_alpha)
        total = total + torch.stack(rank_losses).mean() / micro_steps
    return total


@pytest.mark.parametrize("groups_per_rank,ranks", [(1, 1), (1, 2), (2, 1), (2, 2)])
@pytest.mark.parametrize("alpha", ["samples", "none"])
def test_equals_the_reference_micro_step_by_micro_step(groups_per_rank, ranks, alpha):
    gen = torch.Generator().manual_seed(groups_per_rank * 10 + ranks)
    n, t = 16, 7  # 8 groups of 2
    lengths = torch.randint(1, t + 1, (n,), generator=gen)
    mask = torch.arange(t)[None, :] < lengths[:, None]  # [n, t]
    token_loss = torch.randn(n, t, generator=gen, dtype=torch.float64)  # [n, t]
    group_ids = torch.arange(n) // 2
    degenerate = torch.tensor([True, True, False, False, True, True, True, True] * 2)  # groups 0, 2, 3 of 4
    weights, _ = step_weights("token-mean", ALPHAS[alpha], lengths, group_ids, degenerate, t,
                              micro_groups=groups_per_rank, alpha_groups=groups_per_rank * ranks)
    expected = _reference_loss(token_loss, mask, degenerate, groups_per_rank, ranks, alpha == "samples")
    got = aggregate(token_loss, mask, weights.double())
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)  # float32 weights


def test_micro_batch_alpha_changes_direction_whole_step_alpha_only_scale():
    with_alpha = step_weights("token-mean", ALPHAS["samples"], LENGTHS, GROUPS, DEGENERATE, 8, 1, 2)[0]
    without = step_weights("token-mean", ALPHAS["none"], LENGTHS, GROUPS, DEGENERATE, 8, 1, 2)[0]
    informative = ~DEGENERATE
    ratio = with_alpha[informative] / without[informative]
    torch.testing.assert_close(ratio, torch.tensor([2.0, 2.0, 1.0, 1.0, 1.0, 1.0]))  # not one scalar
    step_ratio = (step_weights("token-mean", ALPHAS["samples"], LENGTHS, GROUPS, DEGENERATE, 8)[0]
                  / step_weights("token-mean", ALPHAS["none"], LENGTHS, GROUPS, DEGENERATE, 8)[0])
    torch.testing.assert_close(step_ratio, torch.full((8,), 8 / 6))


def test_window_without_signal_gets_zero_weight():
    degenerate = torch.tensor([True, True, True, True, False, False, False, False])
    weights, alpha = step_weights("token-mean", ALPHAS["samples"], LENGTHS, GROUPS, degenerate, 8, 1, 2)
    assert (weights[:4] == 0).all() and (weights[4:] > 0).all()
    assert alpha == AlphaResult(alpha=1.0, has_signal=True, valid_fraction=0.5)
    weights, alpha = step_weights("token-mean", ALPHAS["samples"], LENGTHS, GROUPS, torch.ones(8, dtype=torch.bool),
                                  8, 1, 2)
    assert (weights == 0).all() and alpha == AlphaResult(0.0, False, 0.0)


def test_micro_batches_are_made_of_groups_in_id_order():
    block, count = blocks(torch.tensor([0, 0, 1, 1, 2, 2]), 2)
    assert block.tolist() == [0, 0, 0, 0, 1, 1] and count == 2  # a partial last micro-batch counts as one
    assert blocks(torch.tensor([3, 1]), 0)[0].tolist() == [0, 0]
    weights, _ = step_weights("token-mean", ALPHAS["none"], torch.tensor([2, 2]), torch.tensor([9, 9]),
                              torch.tensor([False, False]), 4, micro_groups=5)
    torch.testing.assert_close(weights, torch.tensor([0.25, 0.25]))


def test_preset_and_overrides():
    algo = ALGORITHMS["gpg-ref-microbatch"]
    assert (algo.micro_groups, algo.alpha_groups, algo.aggregation, algo.alpha) == (1, 2, "token-mean", "samples")
    assert resolve_algorithm("gpg", micro_groups=2, alpha_groups=4).micro_groups == 2
    assert resolve_algorithm("gpg-ref-microbatch", micro_groups=0, alpha_groups=0).micro_groups == 0


@pytest.mark.parametrize("overrides,message", [
    ({"micro_groups": -1}, "micro_groups=-1 must be an integer >= 0"),
    ({"micro_groups": True}, "micro_groups=True must be an integer"),
    ({"alpha_groups": 2}, "alpha_groups=2 needs micro_groups > 0"),
    ({"micro_groups": 2, "alpha_groups": 3}, "alpha_groups=3 must be a multiple of micro_groups=2"),
])
def test_bad_micro_groups_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve_algorithm("gpg", **overrides)
