"""Tests for gpgrl.algos.presets: every preset end to end, GPG vs on-policy GRPO, overrides, the table."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from gpgrl.algos.advantages import ZEROES_DEGENERATE, reinforce_pp
from gpgrl.algos.aggregation import Normaliser, aggregate, sequence_weights
from gpgrl.algos.groups import group_stats
from gpgrl.algos.presets import ALGORITHMS, Algorithm, presets_table, resolve_algorithm

T, V = 6, 5


def _inputs(rewards, group_ids, lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = len(rewards)
    logits = torch.randn(n, T, V, generator=gen, dtype=torch.float64).requires_grad_(True)
    tokens = torch.randint(0, V, (n, T), generator=gen)
    batch = {
        "rewards": torch.tensor(rewards, dtype=torch.float64),
        "group_ids": torch.tensor(group_ids),
        "lengths": torch.tensor(lengths),
        "mask": torch.arange(T)[None, :] < torch.tensor(lengths)[:, None],  # [n, T]
    }
    return logits, tokens, batch


def _pipeline(algo, logits, tokens, batch, advantages=None):
    """advantages -> token_loss -> alpha * aggregate: the trainer's path for one step in one micro-batch."""
    rewards, group_ids, lengths, mask = batch["rewards"], batch["group_ids"], batch["lengths"], batch["mask"]
    if advantages is None:
        advantages = algo.advantages(rewards, group_ids, lengths)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)  # [n, T]
    ref_logp = logp.detach() - 0.1 if algo.needs_reference else None
    token_loss, stats = algo.token_loss(logp, logp.detach(), advantages, mask, ref_logp=ref_logp)
    degenerate = group_stats(rewards, group_ids).degenerate
    weights, alpha = algo.step_weights(lengths, group_ids, degenerate, T)  # α included
    return aggregate(token_loss, mask, weights), alpha, stats


def test_step_weights_of_whole_step_presets_are_alpha_times_aggregation():
    rewards, group_ids, lengths = (torch.tensor(x) for x in MIXED)
    degenerate = group_stats(rewards, group_ids).degenerate
    norm = Normaliser(num_sequences=8, num_groups=4, total_tokens=int(lengths.sum()), max_len=T)
    for algo in ALGORITHMS.values():
        if algo.micro_groups:
            continue
        weights, alpha = algo.step_weights(lengths, group_ids, degenerate, T)
        expected = algo.alpha_factor(8, int(degenerate.sum()), norm.total_tokens, int(lengths[~degenerate].sum()))
        assert alpha == expected
        aggregated = sequence_weights(algo.aggregation, lengths, group_ids, norm)
        torch.testing.assert_close(weights, aggregated * expected.alpha)


# 4 groups of 2; group 2 = {1, 1} is degenerate
MIXED = ([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.5], [0, 0, 1, 1, 2, 2, 3, 3], [3, 5, 1, 4, 2, 6, 4, 2])


def test_registry_keys_match_names():
    assert {"gpg", "gpg-ref", "gpg-alpha", "gpg-no-alpha", "gpg-std", "gpg-std-alpha", "grpo", "dr_grpo",
            "dapo", "rloo", "reinforce_pp", "reinforce_pp_baseline"} <= set(ALGORITHMS)
    for name, algo in ALGORITHMS.items():
        assert algo.name == name


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_preset_runs_end_to_end(name):
    algo = ALGORITHMS[name]
    logits, tokens, batch = _inputs(*MIXED)
    loss, alpha, stats = _pipeline(algo, logits, tokens, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert alpha.has_signal and alpha.alpha > 0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert all(not value.requires_grad for value in stats.values())
    assert ("kl" in stats) == algo.needs_reference


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_preset_metadata_and_properties(name):
    algo = ALGORITHMS[name]
    assert algo.summary and algo.reference
    assert algo.paper.startswith("arXiv:")
    assert algo.needs_reference == (algo.kl_coef > 0)
    assert algo.zero_advantage_is_noop == (algo.kl_coef == 0)
    with pytest.raises(TypeError):
        algo.advantage_kwargs["f_norm"] = "group_std"  # frozen


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_zero_advantage_is_noop_is_true_to_its_word(name):
    algo = ALGORITHMS[name]
    logits, tokens, batch = _inputs(*MIXED)
    advantages = torch.tensor([0.0, -0.5, -0.5, 0.5, 0.0, 0.0, 0.25, -0.25], dtype=torch.float64)
    loss, _, _ = _pipeline(algo, logits, tokens, batch, advantages=advantages)
    loss.backward()
    row_is_silent = bool((logits.grad[0] == 0).all())  # row 0 has advantage exactly 0
    assert row_is_silent == algo.zero_advantage_is_noop


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_all_homogeneous_batch(name):
    """Every group degenerate: group-baseline presets give loss exactly 0 and zero, finite gradients."""
    algo = ALGORITHMS[name]
    logits, tokens, batch = _inputs([1.0, 1.0, 0.0, 0.0, 1.0, 1.0], [0, 0, 1, 1, 2, 2], [3, 5, 1, 4, 2, 6])
    loss, alpha, _ = _pipeline(algo, logits, tokens, batch)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert alpha.valid_fraction == 0.0
    if ZEROES_DEGENERATE[algo.advantage]:
        assert alpha == (0.0, False, 0.0)
        assert loss.item() == 0.0
        assert (logits.grad == 0).all()
    else:  # no group zeroing: alpha ignores M (reinforce_pp still has signal: 1 vs 0 across groups)
        assert alpha == (1.0, True, 0.0)


def test_gpg_gradient_equals_on_policy_grpo_times_alpha():
    """GPG (F_norm = 1, no KL, pg loss) == alpha x GRPO at one update per rollout without std and KL."""
    # groups: {1, 0} informative, {1, 1} degenerate, {0, 1} informative: B = 6, M = 2, alpha = 6 / 4 = 1.5
    data = ([1.0, 0.0, 1.0, 1.0, 0.0, 1.0], [0, 0, 1, 1, 2, 2], [3, 5, 1, 4, 2, 6])
    grpo_like = dataclasses.replace(ALGORITHMS["grpo"], advantage="dr_grpo", kl_coef=0.0,
                                    aggregation=ALGORITHMS["gpg"].aggregation)
    assert grpo_like.loss == "clip" and grpo_like.alpha == "none"
    grads = {}
    for key, algo in (("gpg", ALGORITHMS["gpg"]), ("grpo", grpo_like)):
        logits, tokens, batch = _inputs(*data)
        loss, alpha, _ = _pipeline(algo, logits, tokens, batch)
        loss.backward()
        grads[key] = (logits.grad, alpha.alpha)
    assert grads["gpg"][1] == 1.5 and grads["grpo"][1] == 1.0
    torch.testing.assert_close(grads["gpg"][0], 1.5 * grads["grpo"][0], rtol=0, atol=1e-6)
    assert grads["gpg"][0].abs().max() > 1e-3


def test_advantages_pass_lengths_only_to_estimators_that_take_them():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    group_ids = torch.tensor([0, 0, 1, 1])
    lengths = torch.tensor([1, 5, 2, 2])
    got = ALGORITHMS["reinforce_pp"].advantages(rewards, group_ids, lengths)
    torch.testing.assert_close(got, reinforce_pp(rewards, group_ids, lengths=lengths))
    assert not torch.allclose(got, reinforce_pp(rewards, group_ids))
    torch.testing.assert_close(ALGORITHMS["gpg"].advantages(rewards, group_ids, lengths),
                               torch.tensor([0.5, -0.5, 0.0, 0.0]))


def test_kl_preset_requires_ref_logp():
    logp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="ref_logp"):
        ALGORITHMS["grpo"].token_loss(logp, logp, torch.zeros(2), torch.ones(2, 3))


def test_kl_term_hand_value():
    # on-policy, A = 0 -> only kl_coef * k3: d = log(0.25 / 0.5), k3 = 0.1931471805599454 (see test_losses),
    # loss = 0.04 * k3 = 0.0077258872
    logp = torch.log(torch.full((1, 2), 0.5, dtype=torch.float64))
    ref = torch.log(torch.full((1, 2), 0.25, dtype=torch.float64))
    loss, stats = ALGORITHMS["grpo"].token_loss(logp, logp, torch.zeros(1, dtype=torch.float64),
                                                torch.ones(1, 2), ref_logp=ref)
    torch.testing.assert_close(loss, torch.full((1, 2), 0.04 * 0.1931471805599454, dtype=torch.float64))
    assert math.isclose(stats["kl"].item(), 0.1931471805599454)


def test_alpha_factor_of_whitening_estimators_ignores_degenerate_groups():
    # REINFORCE++ keeps non-zero advantages in degenerate groups: nothing is diluted, alpha stays defined
    algo = resolve_algorithm("reinforce_pp", alpha="samples")
    assert algo.alpha_factor(4, 4, 100, 0) == (1.0, True, 0.0)
    assert ALGORITHMS["gpg"].alpha_factor(4, 2, 240, 40) == (2.0, True, 0.5)
    assert resolve_algorithm("gpg", alpha="tokens").alpha_factor(4, 2, 240, 40) == (6.0, True, 0.5)


# ---------------------------------------------------------------- validation and overrides

_VALID = dict(name="x", advantage="gpg", advantage_kwargs={}, alpha="none", beta_th=0.0,
              drop_degenerate=False, loss="pg", clip_low=0.2, clip_high=0.2, kl_coef=0.0,
              aggregation="token-mean", summary="s", paper="arXiv:0", reference="r")


@pytest.mark.parametrize("field, value, match", [
    ("advantage", "ppo", "advantage='ppo'.*gpg, grpo"),
    ("alpha", "all", "alpha='all'.*none, samples, tokens"),
    ("loss", "ppo", "loss='ppo'.*pg, clip"),
    ("aggregation", "mean", "aggregation='mean'.*token-mean"),
    ("advantage_kwargs", {"f_norm": "std"}, "f_norm 'std'"),
    ("advantage_kwargs", {"scale": 1}, "takes no knob 'scale'"),
    ("advantage_kwargs", {"lengths": None}, "takes no knob 'lengths'"),
    ("beta_th", 1.5, "beta_th"),
    ("beta_th", -0.1, "beta_th"),
    ("clip_low", -0.1, "clip_low"),
    ("clip_low", 1.0, "clip_low"),
    ("clip_high", -0.1, "clip_high"),
    ("kl_coef", -1.0, "kl_coef"),
    ("kl_coef", float("nan"), "kl_coef"),
    ("drop_degenerate", "yes", "drop_degenerate"),
])
def test_algorithm_validation(field, value, match):
    Algorithm(**_VALID)
    with pytest.raises(ValueError, match=match):
        Algorithm(**{**_VALID, field: value})


def test_resolve_without_overrides_returns_the_preset():
    assert resolve_algorithm("gpg") == ALGORITHMS["gpg"]
    assert resolve_algorithm("gpg", beta_th=None, alpha=None) == ALGORITHMS["gpg"]


def test_resolve_applies_overrides():
    algo = resolve_algorithm("gpg", beta_th=0.8, alpha="tokens", f_norm="group_std", aggregation="token-mean",
                             kl_coef=0.01)
    assert (algo.beta_th, algo.alpha, algo.aggregation, algo.kl_coef) == (0.8, "tokens", "token-mean", 0.01)
    assert dict(algo.advantage_kwargs) == {"f_norm": "group_std"}
    assert dict(ALGORITHMS["gpg"].advantage_kwargs) == {"f_norm": "none"}  # preset untouched
    dapo = resolve_algorithm("dapo", clip_low=0.1, clip_high=0.3)
    assert (dapo.clip_low, dapo.clip_high) == (0.1, 0.3)


def test_unknown_preset_suggests_closest_name():
    with pytest.raises(KeyError) as info:
        resolve_algorithm("gpgg")
    message = info.value.args[0]
    assert "did you mean 'gpg'?" in message
    assert all(name in message for name in ALGORITHMS)
    with pytest.raises(KeyError, match="did you mean 'dr_grpo'"):
        resolve_algorithm("dr-grpo")


def test_f_norm_only_for_estimators_that_take_it():
    with pytest.raises(ValueError) as info:
        resolve_algorithm("grpo", f_norm="group_std")
    assert info.value.args[0] == ("algorithm.f_norm applies only to estimators that take it (gpg); "
                                  "preset 'grpo' uses estimator 'grpo'")


def test_clip_only_for_losses_that_take_it():
    with pytest.raises(ValueError, match="algorithm.clip_high applies only to losses that take it.*'pg'"):
        resolve_algorithm("gpg", clip_high=0.28)


@pytest.mark.parametrize("overrides, match", [
    ({"alpha": "bogus"}, "alpha='bogus'"),
    ({"f_norm": "bogus"}, "f_norm 'bogus'"),
    ({"beta_th": 2.0}, "beta_th"),
    ({"aggregation": "sum"}, "aggregation='sum'"),
    ({"kl_coef": -0.1}, "kl_coef"),
    ({"loss": "clip"}, "unknown algorithm override"),
    ({"temperature": 1.0}, "unknown algorithm override"),
])
def test_bad_overrides(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_algorithm("gpg", **overrides)


# ---------------------------------------------------------------- documentation


def test_presets_table_lists_every_preset_once():
    table = presets_table()
    assert table == presets_table()  # stable
    rows = table.strip().splitlines()
    assert len(rows) == 2 + len(ALGORITHMS)
    for name in ALGORITHMS:
        assert sum(row.startswith(f"| `{name}` |") for row in rows) == 1


def test_docs_presets_md_contains_the_table():
    docs = Path(__file__).resolve().parents[2] / "docs" / "presets.md"
    text = docs.read_text(encoding="utf-8")
    assert presets_table() in text, "regenerate docs/presets.md from presets_table()"


def test_presets_are_hashable_and_comparable():
    assert hash(ALGORITHMS["gpg"]) == hash(resolve_algorithm("gpg"))
    assert resolve_algorithm("gpg", f_norm="group_std") != ALGORITHMS["gpg"]
