"""GPG's threshold resampling (β_th) as an explicit loop over a prompt queue.

Owns the `Group` record (a prompt, its G samples and their rewards) and `collect_batch`: draw prompt batches
from the queue, roll out and score them, keep the informative (non-degenerate) groups, and stop once their
fraction of a step's prompts reaches β_th or the round budget is spent (then warn and go on; never crash).
The step batch is assembled as in GPG_SPEC §4: accumulated valid groups first, then degenerate groups of the
latest round to fill up (unless the algorithm drops degenerate groups, as DAPO's dynamic sampling does); the
kept groups are returned in the order they were drawn, so that a micro-batch cut in group order (a preset with
algorithm.micro_groups > 0) holds what a reference micro-step would have drawn, not the valid groups first.
α is later counted on this assembled batch, not on everything that was found.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from gpgrl.algos.groups import DEGENERATE_TOL
from gpgrl.rollout import Sample


@dataclass(frozen=True)
class Group:
    """One prompt and its G scored completions."""

    example: Any  # gpgrl.data.Example
    samples: list[Sample]
    rewards: Tensor  # [G] weighted total reward
    per_function: dict[str, list[float]]  # reward name -> [G]

    @property
    def degenerate(self) -> bool:
        """Zero-variance group: identical rewards carry no learning signal (one tolerance everywhere)."""
        return bool(self.rewards.max() - self.rewards.min() <= DEGENERATE_TOL)


@dataclass
class CollectStats:
    rounds: int = 0
    prompts_drawn: int = 0
    valid_found: int = 0
    surplus_valid_dropped: int = 0
    budget_exhausted: bool = False


RolloutFn = Callable[[Sequence[Any]], list[Group]]


def required_valid(beta_th: float, prompts_per_step: int) -> int:
    """Informative groups needed to stop resampling: ceil(β_th · P) (0 for β_th = 0)."""
    return math.ceil(beta_th * prompts_per_step - 1e-9)


def collect_batch(take: Callable[[int], Sequence[Any]], rollout: RolloutFn, prompts_per_step: int,
                  beta_th: float, drop_degenerate: bool, max_rounds: int) -> tuple[list[Group], CollectStats]:
    """Roll out prompt batches until enough groups are informative; return the assembled step batch."""
    stats = CollectStats()
    need = required_valid(beta_th, prompts_per_step)
    valid: list[Group] = []
    latest_degenerate: list[Group] = []
    drawn: list[Group] = []
    while True:
        stats.rounds += 1
        examples = take(prompts_per_step)
        stats.prompts_drawn += len(examples)
        groups = rollout(examples)
        drawn += groups
        valid += [g for g in groups if not g.degenerate]
        latest_degenerate = [g for g in groups if g.degenerate]
        if len(valid) >= need:
            break
        if stats.rounds >= max_rounds:
            stats.budget_exhausted = True
            break
    stats.valid_found = len(valid)
    kept = valid[:prompts_per_step]
    stats.surplus_valid_dropped = len(valid) - len(kept)
    if not drop_degenerate:
        kept += latest_degenerate[: prompts_per_step - len(kept)]
    chosen = {id(g) for g in kept}
    return [g for g in drawn if id(g) in chosen], stats  # in draw order
