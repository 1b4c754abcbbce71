"""Advantage estimators: one scalar advantage per completion from outcome rewards.

This module owns the estimators (GPG, GRPO, Dr.GRPO, RLOO, REINFORCE++, REINFORCE++-baseline) and the
`ADVANTAGES` registry the trainer dispatches through. Every estimator has the signature
``fn(rewards [N], group_ids [N], *, <its own knobs>) -> [N]``; the advantage is the same for every token of a
completion (outcome reward, one step, gamma = 1).

Group-baseline estimators (gpg, grpo, dr_grpo, rloo) give samples of degenerate groups (see
`gpgrl.algos.groups.DEGENERATE_TOL`) an advantage of exactly 0.0 (torch.where, no float residue).
The REINFORCE++ estimators whiten over the whole batch, which moves degenerate groups away from zero;
`ZEROES_DEGENERATE` records which estimators zero them.
"""

from __future__ import annotations

from types import MappingProxyType

import torch
from torch import Tensor

from gpgrl.algos.groups import GroupStats, group_stats


def _zero_degenerate(advantages: Tensor, stats: GroupStats) -> Tensor:
    """Exact 0.0 for samples of degenerate groups."""
    return torch.where(stats.degenerate, torch.zeros_like(advantages), advantages)  # [N]


def _fnorm_none(rewards: Tensor, stats: GroupStats, eps: float) -> Tensor:
    """F_norm = 1 (the GPG paper's final recipe)."""
    return torch.ones_like(rewards)  # [N]


def _fnorm_group_std(rewards: Tensor, stats: GroupStats, eps: float) -> Tensor:
    """F_norm = unbiased group std + eps."""
    return stats.std + eps  # [N]


def _fnorm_batch_std(rewards: Tensor, stats: GroupStats, eps: float) -> Tensor:
    """F_norm = unbiased std of all rewards in the batch + eps."""
    return (rewards.std() + eps).expand_as(rewards)  # [N]


F_NORMS = MappingProxyType({
    "none": _fnorm_none,
    "group_std": _fnorm_group_std,
    "batch_std": _fnorm_batch_std,
})
"""GPG's F_norm choices (Eq. 6): name -> fn(rewards [N], stats, eps) -> divisor [N]."""


def gpg(rewards: Tensor, group_ids: Tensor, *, f_norm: str = "none", eps: float = 1e-4) -> Tensor:
    """GPG advantage (arXiv 2504.02546 Eq. 6): A_i = (r_i - mean_g) / F_norm.

    Args:
        rewards: [N] outcome rewards.
        group_ids: [N] group (prompt) ids.
        f_norm: "none" (F_norm = 1, the final recipe), "group_std" (unbiased group std + eps) or "batch_std"
            (unbiased std of every reward in the batch + eps).
        eps: added to the std in the std modes.

    Example (F_norm = 1; group 3 is degenerate):
        >>> gpg(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([4, 4, 3, 3]))
        tensor([ 0.5000, -0.5000,  0.0000,  0.0000])
    """
    if f_norm not in F_NORMS:
        raise ValueError(f"unknown f_norm {f_norm!r}; choices: {', '.join(F_NORMS)}")
    stats = group_stats(rewards, group_ids)  # [N] fields
    centred = rewards - stats.mean  # [N]
    return _zero_degenerate(centred / F_NORMS[f_norm](rewards, stats, eps), stats)  # [N]


def grpo(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-4) -> Tensor:
    """GRPO advantage (arXiv 2402.03300): (r_i - mean_g) / (unbiased std_g + eps)."""
    stats = group_stats(rewards, group_ids)  # [N] fields
    return _zero_degenerate((rewards - stats.mean) / (stats.std + eps), stats)  # [N]


def dr_grpo(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Dr.GRPO advantage (arXiv 2503.20783): r_i - mean_g (no std division)."""
    stats = group_stats(rewards, group_ids)  # [N] fields
    return _zero_degenerate(rewards - stats.mean, stats)  # [N]


def rloo(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """RLOO advantage (arXiv 2402.14740): r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean_g), per-group G."""
    stats = group_stats(rewards, group_ids)  # [N] fields
    size = stats.size.to(rewards.dtype)  # [N]
    return _zero_degenerate(size / (size - 1) * (rewards - stats.mean), stats)  # [N]


def _whiten(values: Tensor, weights: Tensor, eps: float) -> Tensor:
    """(x - mean_w) / (std_w + eps) with weighted mean and Bessel-corrected weighted variance.

    With integer weights (token counts) this is exactly the statistics of the token-level tensor in which
    value i is repeated weights_i times (verl's masked_whiten over valid tokens).
    """
    total = weights.sum()  # []
    mean = (weights * values).sum() / total.clamp_min(1)  # []
    centred = values - mean  # [N]
    var = (weights * centred * centred).sum() / (total - 1).clamp_min(1)  # []
    return centred / (var.sqrt() + eps)  # [N]


def _whiten_weights(rewards: Tensor, lengths: Tensor | None) -> Tensor:
    """One weight per sample (per-sample statistics) or one per token (token-weighted statistics)."""
    if lengths is None:
        return torch.ones_like(rewards)  # [N]
    return lengths.to(rewards.dtype)  # [N]


def reinforce_pp(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-4,
                 lengths: Tensor | None = None) -> Tensor:
    """REINFORCE++ advantage (arXiv 2501.03262), outcome reward, gamma = 1: whitened return.

    Every token's return is r_i, whitened over the whole batch: (r_i - mean) / (std + eps). With `lengths`
    [N] the mean and unbiased std are token-weighted (every token of sample i carries r_i, as verl's
    masked_whiten over valid tokens); without, they are per sample. verl divides by sqrt(var + 1e-8) rather
    than std + eps. The KL-in-reward term of the paper is not part of this estimator (see the presets).

    Does NOT zero degenerate groups: there is no group baseline, so a group of equal rewards still gets
    r - batch mean. `group_ids` is unused (uniform signature).
    """
    return _whiten(rewards, _whiten_weights(rewards, lengths), eps)  # [N]


def reinforce_pp_baseline(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-4,
                          lengths: Tensor | None = None) -> Tensor:
    """REINFORCE++-baseline (verl `reinforce_plus_plus_baseline`): r_i - mean_g, then global whitening.

    The group-centred rewards (exact 0.0 for degenerate groups) are whitened over the batch as in
    `reinforce_pp` (token-weighted with `lengths`). Whitening subtracts the batch mean of the centred values,
    which is non-zero when lengths differ, so degenerate groups generally get a NON-zero advantage.
    """
    stats = group_stats(rewards, group_ids)  # [N] fields
    centred = _zero_degenerate(rewards - stats.mean, stats)  # [N]
    return _whiten(centred, _whiten_weights(rewards, lengths), eps)  # [N]


ADVANTAGES = MappingProxyType({
    "gpg": gpg,
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "rloo": rloo,
    "reinforce_pp": reinforce_pp,
    "reinforce_pp_baseline": reinforce_pp_baseline,
})
"""Estimator name -> fn(rewards [N], group_ids [N], **knobs) -> advantages [N]."""

ZEROES_DEGENERATE = MappingProxyType({
    "gpg": True,
    "grpo": True,
    "dr_grpo": True,
    "rloo": True,
    "reinforce_pp": False,
    "reinforce_pp_baseline": False,
})
"""Estimator name -> whether samples of degenerate groups always get exactly 0.0 (so the alpha correction,
which rescales for those zero-advantage samples, applies)."""
