"""Pure-math core of gpgrl: advantages, alpha correction, per-token losses, aggregation and presets.

Everything here imports only torch and the standard library, takes tensors and plain scalars, and does no I/O,
so it is unit-tested on CPU. Each axis is a registry (a visible dict at the bottom of its module):

- `ADVANTAGES` (advantages.py): outcome rewards [N] + group ids [N] -> advantages [N].
- `ALPHAS` (alpha.py): global step counts -> the GPG gradient correction alpha.
- `LOSSES` (losses.py): log-probs [N, T] + advantages [N] -> per-token loss [N, T].
- `AGGREGATIONS` (aggregation.py): per-sequence weights that reduce [N, T] to a scalar, invariant to
  micro-batching and world size.
- `ALGORITHMS` (presets.py): named compositions of the above (GPG and ablations, GRPO, Dr.GRPO, DAPO, RLOO,
  REINFORCE++); `resolve_algorithm` applies config overrides.

groups.py owns the single zero-variance test (`DEGENERATE_TOL`) and the vectorised group statistics.
"""

from gpgrl.algos.advantages import ADVANTAGES, ZEROES_DEGENERATE
from gpgrl.algos.aggregation import AGGREGATIONS, Normaliser, aggregate, sequence_weights
from gpgrl.algos.alpha import ALPHAS, AlphaResult
from gpgrl.algos.groups import DEGENERATE_TOL, GroupStats, group_index, group_stats
from gpgrl.algos.losses import LOSSES, k3_kl, masked_mean, truncated_importance_weights
from gpgrl.algos.presets import ALGORITHMS, Algorithm, presets_table, resolve_algorithm

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "ALGORITHMS",
    "ALPHAS",
    "DEGENERATE_TOL",
    "LOSSES",
    "ZEROES_DEGENERATE",
    "Algorithm",
    "AlphaResult",
    "GroupStats",
    "Normaliser",
    "aggregate",
    "group_index",
    "group_stats",
    "k3_kl",
    "masked_mean",
    "presets_table",
    "resolve_algorithm",
    "sequence_weights",
    "truncated_importance_weights",
]
