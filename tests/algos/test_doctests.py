"""The docstring examples of gpgrl.algos run and hold."""

import doctest

import pytest

from gpgrl.algos import advantages, aggregation, alpha, groups, losses, presets


@pytest.mark.parametrize("module", [advantages, aggregation, alpha, groups, losses, presets])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.failed == 0
