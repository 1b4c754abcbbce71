"""Tests for gpgrl.algos.alpha: the GPG gradient correction factors (GPG_SPEC sections 1 and 3)."""

import math

import pytest

from gpgrl.algos.alpha import ALPHAS, AlphaResult, alpha_none, alpha_samples, alpha_tokens


def test_registry_names():
    assert list(ALPHAS) == ["none", "samples", "tokens"]


def test_samples_alpha_b4_m2_is_2():
    # B = 4, M = 2: alpha = 4 / (4 - 2) = 2, valid fraction 2 / 4
    assert alpha_samples(4, 2, 240, 40) == AlphaResult(alpha=2.0, has_signal=True, valid_fraction=0.5)


def test_tokens_alpha_toy_case_is_6():
    # GPG_SPEC section 3: valid lengths (10, 30), degenerate (100, 100): 240 tokens, 40 valid -> 240 / 40 = 6
    assert alpha_tokens(4, 2, 240, 40) == AlphaResult(alpha=6.0, has_signal=True, valid_fraction=0.5)


def test_none_alpha_is_1():
    assert alpha_none(4, 2, 240, 40) == AlphaResult(alpha=1.0, has_signal=True, valid_fraction=0.5)


def test_no_degenerate_gives_alpha_1_for_every_mode():
    for fn in ALPHAS.values():
        assert fn(8, 0, 100, 100) == AlphaResult(alpha=1.0, has_signal=True, valid_fraction=1.0)


@pytest.mark.parametrize("name", list(ALPHAS))
def test_all_degenerate_has_no_signal_and_no_nan(name):
    result = ALPHAS[name](4, 4, 400, 0)
    assert result == AlphaResult(alpha=0.0, has_signal=False, valid_fraction=0.0)
    assert math.isfinite(result.alpha)


@pytest.mark.parametrize("name", list(ALPHAS))
def test_valid_samples_without_tokens_have_no_signal(name):
    # the informative samples are all empty: nothing to train on
    assert ALPHAS[name](4, 2, 200, 0).has_signal is False


@pytest.mark.parametrize("args", [(0, 0, 0, 0), (4, 5, 10, 5), (4, -1, 10, 5), (4, 2, 10, 11),
                                  (4, 2, 10, -1)])
def test_invalid_counts_raise(args):
    with pytest.raises(ValueError):
        alpha_samples(*args)
