"""Tests for gpgrl.algos.losses: pg, clipped surrogate, k3 KL, on hand-derived values."""

import math

import torch

from gpgrl.algos.losses import LOSSES, clipped_loss, k3_kl, masked_mean, pg_loss


def test_registry_names():
    assert list(LOSSES) == ["pg", "clip"]


def test_pg_loss_value_and_gradient():
    # loss = -logp * A: -(-1) * 0.5 = 0.5, -(-2) * 0.5 = 1.0; d loss / d logp = -A = -0.5
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, stats = pg_loss(logp, torch.zeros(1, 2), torch.tensor([0.5]))
    torch.testing.assert_close(loss, torch.tensor([[0.5, 1.0]]))
    assert stats == {}
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5, -0.5]]))


def test_pg_loss_importance_weights():
    # [[0.5, 1.0]] * [[2, 0.5]] = [[1.0, 0.5]]
    loss, _ = pg_loss(torch.tensor([[-1.0, -2.0]]), torch.zeros(1, 2), torch.tensor([0.5]),
                      is_weights=torch.tensor([[2.0, 0.5]]))
    torch.testing.assert_close(loss, torch.tensor([[1.0, 0.5]]))


def _clip_case():
    # row 0, A = +2: ratios 1.5 (above 1 + 0.2 -> clipped to 1.2) and 1.1 (inside)
    # row 1, A = -1: ratios 0.5 (below 1 - 0.2 -> clipped to 0.8) and 0.9 (inside)
    ratios = torch.tensor([[1.5, 1.1], [0.5, 0.9]], dtype=torch.float64)
    old_logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], dtype=torch.float64)
    logp = (old_logp + ratios.log()).requires_grad_(True)
    return logp, old_logp, torch.tensor([2.0, -1.0], dtype=torch.float64)


def test_clipped_loss_hand_values_and_zero_gradient_when_clipped():
    logp, old_logp, adv = _clip_case()
    loss, stats = clipped_loss(logp, old_logp, adv, clip_low=0.2, clip_high=0.2)
    # (0,0): -min(1.5 * 2, 1.2 * 2) = -2.4      (0,1): -min(2.2, 2.2) = -2.2
    # (1,0): -min(0.5 * -1, 0.8 * -1) = 0.8     (1,1): -min(-0.9, -0.9) = 0.9
    torch.testing.assert_close(loss, torch.tensor([[-2.4, -2.2], [0.8, 0.9]], dtype=torch.float64))
    loss.sum().backward()
    # clipped tokens: constant -> 0; unclipped: d(-rho * A)/d logp = -rho * A -> -2.2 and +0.9
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -2.2], [0.0, 0.9]], dtype=torch.float64))
    # 2 of 4 tokens clipped
    torch.testing.assert_close(stats["clip_fraction"], torch.tensor(0.5, dtype=torch.float64))


def test_clip_fraction_respects_mask():
    logp, old_logp, adv = _clip_case()
    mask = torch.tensor([[1, 1], [1, 0]])
    _, stats = clipped_loss(logp, old_logp, adv, clip_low=0.2, clip_high=0.2, mask=mask)
    # kept tokens (0,0) clipped, (0,1) not, (1,0) clipped -> 2 / 3
    assert math.isclose(stats["clip_fraction"].item(), 2 / 3, rel_tol=1e-12)
    assert not stats["clip_fraction"].requires_grad


def test_clip_higher_is_asymmetric():
    # ratio 1.5, A = 1, clip_high 0.28: -min(1.5, 1.28) = -1.28
    # ratio 0.5, A = 1: the unclipped term is the min: -min(0.5, 0.8) = -0.5 (not clipped)
    logp = torch.log(torch.tensor([[1.5, 0.5]], dtype=torch.float64))
    old_logp = torch.zeros(1, 2, dtype=torch.float64)
    adv = torch.tensor([1.0], dtype=torch.float64)
    loss, stats = clipped_loss(logp, old_logp, adv, clip_low=0.2, clip_high=0.28)
    torch.testing.assert_close(loss, torch.tensor([[-1.28, -0.5]], dtype=torch.float64))
    assert stats["clip_fraction"].item() == 0.5


def test_on_policy_clipped_gradient_equals_pg_gradient():
    gen = torch.Generator().manual_seed(0)
    leaf = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    adv = torch.randn(4, generator=gen, dtype=torch.float64)
    grads = []
    for fn, kwargs in ((pg_loss, {}), (clipped_loss, {"clip_low": 0.2, "clip_high": 0.28})):
        logp = leaf.clone().requires_grad_(True)
        loss, _ = fn(logp, logp.detach(), adv, **kwargs)  # rho == 1
        loss.sum().backward()
        grads.append(logp.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)


def test_clipped_loss_importance_weights():
    # ratio 1 (on-policy): loss = -A = -2, times weight 0.5 -> -1
    logp = torch.tensor([[-1.0]])
    loss, _ = clipped_loss(logp, logp, torch.tensor([2.0]), clip_low=0.2, clip_high=0.2,
                           is_weights=torch.tensor([[0.5]]))
    torch.testing.assert_close(loss, torch.tensor([[-1.0]]))


def test_k3_kl_hand_value():
    # pi = 0.5, pi_ref = 0.25: d = log(0.25 / 0.5) = -0.6931471805599453
    # exp(d) - d - 1 = 0.5 + 0.6931471805599453 - 1 = 0.1931471805599454
    kl = k3_kl(torch.log(torch.tensor([[0.5]], dtype=torch.float64)),
               torch.log(torch.tensor([[0.25]], dtype=torch.float64)))
    torch.testing.assert_close(kl, torch.tensor([[0.1931471805599454]], dtype=torch.float64))


def test_k3_kl_zero_when_equal_and_non_negative():
    gen = torch.Generator().manual_seed(1)
    logp = torch.randn(3, 7, generator=gen)
    assert (k3_kl(logp, logp) == 0).all()
    assert (k3_kl(logp, torch.randn(3, 7, generator=gen)) >= 0).all()


def test_masked_mean():
    values = torch.tensor([[1.0, 2.0], [3.0, 100.0]])
    # (1 + 2 + 3) / 3 = 2
    assert masked_mean(values, torch.tensor([[1, 1], [1, 0]])).item() == 2.0
    assert masked_mean(values, torch.zeros(2, 2)).item() == 0.0
    assert masked_mean(values, None).item() == 26.5


def test_truncated_importance_weights_hand_values():
    from gpgrl.algos.losses import truncated_importance_weights

    logp = torch.tensor([[math.log(0.5), math.log(0.2)], [math.log(0.9), math.log(0.1)]], requires_grad=True)
    engine = torch.tensor([[math.log(0.25), math.log(0.4)], [math.log(0.1), math.log(0.1)]])
    weights = truncated_importance_weights(logp, engine, cap=3.0)
    # ratios 0.5/0.25 = 2, 0.2/0.4 = 0.5, 0.9/0.1 = 9 -> capped at 3, 0.1/0.1 = 1
    assert torch.allclose(weights, torch.tensor([[2.0, 0.5], [3.0, 1.0]]), atol=1e-6)
    assert not weights.requires_grad  # a constant factor of the loss: it never carries gradient itself
