"""Tests for gpgrl.algos.aggregation: hand values per mode and micro-batch / world-size invariance."""

import math

import pytest
import torch

from gpgrl.algos.aggregation import AGGREGATIONS, Normaliser, aggregate, sequence_weights
from gpgrl.algos.losses import pg_loss


def test_registry_names():
    assert list(AGGREGATIONS) == ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                                  "seq-mean-token-sum-norm", "group-token-mean"]


# Tiny example, 3 sequences, T = 3:
#   row 0 = [1, 2, 3], mask [1, 1, 0] -> sum 3,  len 2, group 7
#   row 1 = [4, 5, 6], mask [1, 1, 1] -> sum 15, len 3, group 7
#   row 2 = [2, 2, 2], mask [1, 0, 0] -> sum 2,  len 1, group 9
# global: 3 sequences, 2 groups, 6 tokens, max_len 4
TINY_LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [2.0, 2.0, 2.0]])
TINY_MASK = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]])
TINY_LENGTHS = torch.tensor([2, 3, 1])
TINY_GROUPS = torch.tensor([7, 7, 9])
TINY_NORM = Normaliser(num_sequences=3, num_groups=2, total_tokens=6, max_len=4)
TINY_EXPECTED = {
    "token-mean": 20 / 6,  # (3 + 15 + 2) / 6
    "seq-mean-token-mean": 8.5 / 3,  # (3/2 + 15/3 + 2/1) / 3
    "seq-mean-token-sum": 20 / 3,  # (3 + 15 + 2) / 3
    "seq-mean-token-sum-norm": 20 / 12,  # (3 + 15 + 2) / (3 * 4)
    "group-token-mean": 2.8,  # ((3 + 15) / 5 + 2 / 1) / 2
}


@pytest.mark.parametrize("mode", list(AGGREGATIONS))
def test_hand_value(mode):
    weights = sequence_weights(mode, TINY_LENGTHS, TINY_GROUPS, TINY_NORM)
    assert math.isclose(aggregate(TINY_LOSS, TINY_MASK, weights).item(), TINY_EXPECTED[mode], rel_tol=1e-6)


def test_hand_weights():
    def weights(mode):
        return sequence_weights(mode, TINY_LENGTHS, TINY_GROUPS, TINY_NORM).tolist()
    assert weights("seq-mean-token-mean") == pytest.approx([1 / 6, 1 / 9, 1 / 3])  # 1 / (3 * len)
    assert weights("group-token-mean") == pytest.approx([1 / 10, 1 / 10, 1 / 2])  # 1 / (2 * group tokens)


def test_aggregate_ignores_non_finite_padding():
    loss = torch.tensor([[1.0, float("inf")], [2.0, float("nan")]])
    mask = torch.tensor([[True, False], [True, False]])
    # 1 * 0.5 + 2 * 0.5
    assert aggregate(loss, mask, torch.tensor([0.5, 0.5])).item() == 1.5


@pytest.mark.parametrize("mode", list(AGGREGATIONS))
def test_zero_length_sequences_give_finite_weights(mode):
    # row 1 is empty; group 3 (rows 2, 3) is entirely empty
    lengths = torch.tensor([4, 0, 0, 0])
    norm = Normaliser(num_sequences=4, num_groups=2, total_tokens=4, max_len=8)
    weights = sequence_weights(mode, lengths, torch.tensor([1, 1, 3, 3]), norm)
    assert torch.isfinite(weights).all()
    assert (weights >= 0).all()


def test_empty_step_gives_zero_weights():
    norm = Normaliser(num_sequences=0, num_groups=0, total_tokens=0, max_len=0)
    for mode in AGGREGATIONS:
        weights = sequence_weights(mode, torch.tensor([0, 0]), torch.tensor([0, 0]), norm)
        assert weights.tolist() == [0.0, 0.0]


def test_unknown_mode_lists_choices():
    with pytest.raises(ValueError, match="token-mean"):
        sequence_weights("mean", TINY_LENGTHS, TINY_GROUPS, TINY_NORM)


# Invariance batch: 6 sequences, 3 groups of 2, varied lengths (one empty), padded to T = 6, vocab 5.
LENGTHS = torch.tensor([3, 5, 1, 4, 0, 6])
GROUPS = torch.tensor([0, 0, 1, 1, 2, 2])
T, V = 6, 5
NORM = Normaliser(num_sequences=6, num_groups=3, total_tokens=19, max_len=8)  # 3 + 5 + 1 + 4 + 0 + 6 = 19


def _batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, T, V, generator=gen, dtype=torch.float64)
    tokens = torch.randint(0, V, (6, T), generator=gen)
    mask = torch.arange(T)[None, :] < LENGTHS[:, None]  # [6, T]
    advantages = torch.tensor([0.5, -0.5, 1.0, -1.0, 0.0, 0.0], dtype=torch.float64)
    return logits, tokens, mask, advantages


def _loss(logits, tokens, mask, advantages, weights):
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)  # [n, T]
    token_loss, _ = pg_loss(logp, logp.detach(), advantages)
    return aggregate(token_loss, mask, weights)


def _full_gradient(mode):
    logits, tokens, mask, advantages = _batch()
    leaf = logits.requires_grad_(True)
    weights = sequence_weights(mode, LENGTHS, GROUPS, NORM)
    _loss(leaf, tokens, mask, advantages, weights).backward()
    return leaf.grad


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("mode", list(AGGREGATIONS))
def test_micro_batch_invariance(mode, k):
    """Weights computed once for the step, sliced per micro-batch; summed gradients match the full batch."""
    logits, tokens, mask, advantages = _batch()
    leaf = logits.requires_grad_(True)
    weights = sequence_weights(mode, LENGTHS, GROUPS, NORM)  # once per optimizer step
    for rows in torch.arange(6).chunk(k):
        _loss(leaf[rows], tokens[rows], mask[rows], advantages[rows], weights[rows]).backward()
    assert leaf.grad.abs().sum() > 0
    torch.testing.assert_close(leaf.grad, _full_gradient(mode), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shards", [[[0, 1, 2, 3, 4, 5]], [[0, 1, 2, 3], [4, 5]], [[0, 1], [2, 3], [4, 5]]])
@pytest.mark.parametrize("mode", list(AGGREGATIONS))
def test_world_size_invariance(mode, shards):
    """Each 'process' holds whole groups and computes its own weights from its rows and the GLOBAL counts."""
    logits, tokens, mask, advantages = _batch()
    leaf = logits.requires_grad_(True)
    for rows in map(torch.tensor, shards):
        weights = sequence_weights(mode, LENGTHS[rows], GROUPS[rows], NORM)
        _loss(leaf[rows], tokens[rows], mask[rows], advantages[rows], weights).backward()
    torch.testing.assert_close(leaf.grad, _full_gradient(mode), rtol=0, atol=1e-6)
