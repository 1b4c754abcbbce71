"""The GPG gradient correction alpha (AGE, arXiv 2504.02546 Eq. 7-8).

This module owns the alpha factors and the `ALPHAS` registry. Samples of degenerate (zero-variance) groups
get advantage 0, so a mean over the whole batch dilutes the gradient of the informative samples; multiplying
the loss by alpha undoes the dilution. Every function takes GLOBAL counts for one optimizer step (all
processes, all micro-batches) and returns an `AlphaResult`:

- "none":    alpha = 1.
- "samples": alpha = B / (B - M), the paper's AGE; exact for sample-, sequence- or group-mean aggregation.
- "tokens":  alpha = total_tokens / valid_tokens; exact for a batch-wide token mean.
  GPG_SPEC section 3 toy case: lengths (10, 30) valid + (100, 100) degenerate:
  samples 4/2 = 2, tokens 240/40 = 6.

When no sample is informative (B == M, or valid_tokens == 0) the step carries no policy-gradient signal: every
factor returns alpha = 0.0 and has_signal = False (never a division by zero), and the caller skips the step.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple


class AlphaResult(NamedTuple):
    """The correction for one optimizer step."""

    alpha: float
    """Loss multiplier (0.0 when the step has no signal)."""
    has_signal: bool
    """At least one sample is informative (B - M > 0 and valid_tokens > 0)."""
    valid_fraction: float
    """(B - M) / B: the informative-sample fraction, compared with beta_th."""


def _check(num_samples: int, num_degenerate: int, total_tokens: int, valid_tokens: int) -> float:
    """Validate the counts and return the valid fraction (B - M) / B."""
    if num_samples <= 0:
        raise ValueError(f"num_samples={num_samples}: alpha needs a non-empty batch (B >= 1)")
    if not 0 <= num_degenerate <= num_samples:
        raise ValueError(f"num_degenerate={num_degenerate} must lie in [0, num_samples={num_samples}]")
    if not 0 <= valid_tokens <= total_tokens:
        raise ValueError(f"valid_tokens={valid_tokens} must lie in [0, total_tokens={total_tokens}]")
    return (num_samples - num_degenerate) / num_samples


def _result(alpha: float, valid_fraction: float, valid_tokens: int) -> AlphaResult:
    """AlphaResult, or the no-signal result when nothing is informative."""
    if valid_fraction == 0.0 or valid_tokens == 0:
        return AlphaResult(alpha=0.0, has_signal=False, valid_fraction=valid_fraction)
    return AlphaResult(alpha=alpha, has_signal=True, valid_fraction=valid_fraction)


def alpha_none(num_samples: int, num_degenerate: int, total_tokens: int, valid_tokens: int) -> AlphaResult:
    """alpha = 1 (no correction)."""
    fraction = _check(num_samples, num_degenerate, total_tokens, valid_tokens)
    return _result(1.0, fraction, valid_tokens)


def alpha_samples(num_samples: int, num_degenerate: int, total_tokens: int, valid_tokens: int) -> AlphaResult:
    """alpha = B / (B - M) (the paper's AGE)."""
    fraction = _check(num_samples, num_degenerate, total_tokens, valid_tokens)
    valid = num_samples - num_degenerate
    return _result(num_samples / valid if valid else 0.0, fraction, valid_tokens)


def alpha_tokens(num_samples: int, num_degenerate: int, total_tokens: int, valid_tokens: int) -> AlphaResult:
    """alpha = total_tokens / valid_tokens (exact for a batch-wide token mean)."""
    fraction = _check(num_samples, num_degenerate, total_tokens, valid_tokens)
    return _result(total_tokens / valid_tokens if valid_tokens else 0.0, fraction, valid_tokens)


ALPHAS = MappingProxyType({
    "none": alpha_none,
    "samples": alpha_samples,
    "tokens": alpha_tokens,
})
"""Alpha mode -> fn(num_samples, num_degenerate, total_tokens, valid_tokens) -> AlphaResult."""
