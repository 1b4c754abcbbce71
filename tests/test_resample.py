"""β_th resampling: stopping rule, assembly order, surplus, DAPO-style dropping and the round budget."""

import torch

from gpgrl.resample import Group, collect_batch, required_valid


def _group(tag: str, rewards: list[float]) -> Group:
    return Group(tag, [], torch.tensor(rewards), {})


def _rollout_from(rounds: list[list[Group]]):
    calls = iter(rounds)
    return lambda examples: next(calls)


def _take(n: int) -> list[int]:
    return list(range(n))


V, D = [0.0, 1.0], [1.0, 1.0]  # valid and degenerate reward pairs


def test_required_valid():
    assert required_valid(0.0, 8) == 0
    assert required_valid(0.6, 8) == 5  # ceil(4.8)
    assert required_valid(0.5, 8) == 4  # exact, not 5
    assert required_valid(1.0, 8) == 8


def test_no_resampling_when_beta_zero():
    rounds = [[_group("a", V), _group("b", D)]]
    batch, stats = collect_batch(_take, _rollout_from(rounds), 2, 0.0, False, 20)
    assert [g.example for g in batch] == ["a", "b"]
    assert stats.rounds == 1


def test_resamples_until_threshold_and_keeps_latest_degenerate():
    # P = 4, beta 0.5 -> need 2 valid groups; round 1 finds 1, round 2 finds 2 more (3 total, one surplus)
    rounds = [[_group("a", V), _group("b", D), _group("c", D), _group("d", D)],
              [_group("e", V), _group("f", V), _group("g", D), _group("h", D)]]
    batch, stats = collect_batch(_take, _rollout_from(rounds), 4, 0.5, False, 20)
    assert [g.example for g in batch] == ["a", "e", "f", "g"]  # valid ones, then the latest round's degenerate
    assert (stats.rounds, stats.prompts_drawn, stats.valid_found) == (2, 8, 3)
    assert stats.surplus_valid_dropped == 0


def test_kept_groups_come_in_draw_order():
    # P = 4, beta 0.5 -> need 2 valid; one round: selection keeps all four, in the order they were drawn
    rounds = [[_group("a", D), _group("b", V), _group("c", D), _group("d", V)]]
    batch, _ = collect_batch(_take, _rollout_from(rounds), 4, 0.5, False, 20)
    assert [g.example for g in batch] == ["a", "b", "c", "d"]  # not valid first: b, d, a, c


def test_surplus_valid_groups_are_dropped():
    rounds = [[_group("a", V), _group("b", D)], [_group("c", V), _group("d", V)]]
    batch, stats = collect_batch(_take, _rollout_from(rounds), 2, 1.0, False, 20)
    assert [g.example for g in batch] == ["a", "c"]
    assert stats.surplus_valid_dropped == 1


def test_budget_exhausted_goes_on_without_crash():
    rounds = [[_group("a", D), _group("b", D)], [_group("c", D), _group("d", D)]]
    batch, stats = collect_batch(_take, _rollout_from(rounds), 2, 0.6, False, 2)
    assert stats.budget_exhausted and stats.rounds == 2
    assert [g.example for g in batch] == ["c", "d"]


def test_drop_degenerate_keeps_only_informative_groups():
    rounds = [[_group("a", V), _group("b", D)], [_group("c", D), _group("d", D)]]
    batch, stats = collect_batch(_take, _rollout_from(rounds), 2, 1.0, True, 2)
    assert [g.example for g in batch] == ["a"]  # budget spent: a smaller batch, never a degenerate group
    assert stats.budget_exhausted


def test_degenerate_uses_the_one_tolerance():
    assert _group("x", [0.5, 0.5 + 1e-7]).degenerate  # within DEGENERATE_TOL = 1e-6
    assert not _group("x", [0.5, 0.5 + 1e-5]).degenerate
