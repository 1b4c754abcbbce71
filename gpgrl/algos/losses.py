"""Per-token policy losses and the k3 KL penalty.

This module owns the per-token loss functions and the `LOSSES` registry. A loss takes log-probs [N, T] of the
sampled tokens under the current policy (`logp`, with grad) and under the policy that generated them
(`old_logp`), one advantage per sequence [N], and returns ``(loss [N, T], stats)`` where stats are detached
scalars. Reduction over tokens and sequences is `gpgrl.algos.aggregation`'s job; padding positions may hold
any value and are removed there by the mask.
"""

from __future__ import annotations

from types import MappingProxyType

import torch
from torch import Tensor


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of values [N, T] over mask [N, T] (all positions when mask is None; 0.0 for an empty mask)."""
    if mask is None:
        return values.mean()  # []
    weights = mask.to(values.dtype)  # [N, T]
    return (values * weights).sum() / weights.sum().clamp_min(1)  # []


def _weighted(loss: Tensor, is_weights: Tensor | None) -> Tensor:
    """Multiply by detached importance weights [N, T] when given."""
    if is_weights is None:
        return loss  # [N, T]
    return loss * is_weights.detach()  # [N, T]


def pg_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, *, is_weights: Tensor | None = None,
            mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Vanilla policy gradient (REINFORCE / GPG): loss = -logp * A.

    Args:
        logp: [N, T] log pi_theta of the sampled tokens (with grad).
        old_logp: [N, T] accepted for a uniform signature and unused: there is no importance ratio.
        advantages: [N] one advantage per sequence, broadcast over its tokens.
        is_weights: optional [N, T] importance weights (e.g. a rollout-vs-trainer correction for off-policy
            rollouts), applied detached.
        mask: accepted for a uniform signature; no statistic needs it.

    Example:
        >>> pg_loss(torch.tensor([[-1.0, -2.0]]), torch.zeros(1, 2), torch.tensor([0.5]))[0]
        tensor([[0.5000, 1.0000]])
    """
    loss = -logp * advantages[:, None]  # [N, T]
    return _weighted(loss, is_weights), {}  # [N, T]


def clipped_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, *, clip_low: float, clip_high: float,
                 is_weights: Tensor | None = None,
                 mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with asymmetric ranges (DAPO clip-higher when clip_high > clip_low).

    rho = exp(logp - old_logp); loss = -min(rho * A, clip(rho, 1 - clip_low, 1 + clip_high) * A).
    With old_logp = logp.detach() (one update per rollout) rho == 1, nothing is clipped and the gradient
    equals `pg_loss`'s.

    Stats: `clip_fraction`, the (masked) fraction of tokens where the clipped term is the active one.
    """
    advantages = advantages[:, None]  # [N, 1]
    ratio = torch.exp(logp - old_logp.detach())  # [N, T]
    unclipped = -ratio * advantages  # [N, T]
    clipped = -ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages  # [N, T]
    loss = torch.maximum(unclipped, clipped)  # [N, T]
    clip_fraction = masked_mean((clipped > unclipped).to(logp.dtype), mask).detach()  # []
    return _weighted(loss, is_weights), {"clip_fraction": clip_fraction}  # [N, T], {[]}


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Schulman's k3 estimator of KL(pi_theta || pi_ref) per token: exp(d) - d - 1, d = ref_logp - logp.

    Non-negative, 0 where the log-probs agree (http://joschu.net/blog/kl-approx.html).

    Args:
        logp: [N, T] log pi_theta (with grad).
        ref_logp: [N, T] log pi_ref of the same tokens (treated as a constant).
    """
    diff = ref_logp.detach() - logp  # [N, T]
    return torch.exp(diff) - diff - 1.0  # [N, T]


def truncated_importance_weights(logp: Tensor, sampler_logp: Tensor, cap: float) -> Tensor:
    """Truncated importance sampling weights min(pi_trainer / pi_sampler, cap) per token [N, T], detached.

    Corrects the loss of tokens drawn by a sampling engine whose numerics differ from the trainer's (vLLM's kernels
    against the trainer's forward): E_sampler[w * grad] = E_trainer[grad] where w is not truncated.

    Example:
        >>> truncated_importance_weights(torch.tensor([[0.0, -1.0]]), torch.tensor([[-1.0, -1.0]]), 2.0)
        tensor([[2., 1.]])
    """
    return torch.exp(logp.detach() - sampler_logp).clamp(max=cap)  # [N, T]


LOSSES = MappingProxyType({
    "pg": pg_loss,
    "clip": clipped_loss,
})
"""Loss name -> fn(logp [N, T], old_logp [N, T], advantages [N], **knobs) -> (loss [N, T], stats)."""
