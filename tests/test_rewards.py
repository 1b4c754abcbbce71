"""Tests of gpgrl.rewards: the built-in rewards, loading by name and the weighted RewardSet."""

from __future__ import annotations

import doctest
import math
import textwrap
import threading

import pytest
import reasoning_gym

import gpgrl.rewards as rewards
from gpgrl.config import ConfigError, RewardConfig
from gpgrl.rewards import (
    REWARDS,
    RewardError,
    RewardSet,
    accuracy,
    boxed_format,
    load_reward_function,
    task_score,
)

CUSTOM = '''
import math

def ones(prompts, completions, **kw):
    return [1.0] * len(completions)

def messy(prompts, completions, **kw):
    return [None, math.nan, math.inf, 2.0]

def short(prompts, completions, **kw):
    return [1.0] * (len(completions) - 1)

def boom(prompts, completions, **kw):
    raise KeyError("no such column")

def words(prompts, completions, **kw):
    return ["yes"] * len(completions)

def echo_answer(prompts, completions, answer, **kw):
    return [float(a) for a in answer]

NOT_A_FUNCTION = 3
'''


@pytest.fixture
def custom(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(CUSTOM)
    return str(path)


def test_doctests():
    result = doctest.testmod(rewards, verbose=False)
    assert result.attempted >= 8 and result.failed == 0


# ---------------------------------------------------------------- accuracy


@pytest.mark.parametrize(("completion", "gold", "expected"), [
    (r"\boxed{47}", "47", 1.0),
    (r"\boxed{ 47 }", "47", 1.0),
    (r"The sum is 40 + 7 = 47, so the answer is $\boxed{47}$.", "47", 1.0),
    (r"\boxed{-3}", "-3", 1.0),
    (r"\boxed{3}", "-3", 0.0),
    (r"\boxed{\frac{1}{2}}", "1/2", 1.0),
    (r"\boxed{0.5}", "1/2", 1.0),
    (r"\boxed{1/2}", "0.5", 1.0),
    (r"\boxed{\dfrac12}", "1/2", 1.0),
    (r"\boxed{-13.0}", "-13", 1.0),
    (r"\boxed{71}", "72", 0.0),
    ("the answer is 47", "47", 1.0),  # no box needed: math-verify finds the anchored answer
    ("I think 46, then 47", "47", 0.0),  # without a box or anchor nothing is extracted (reference behaviour)
    ("The final answer is 47.", "47", 1.0),  # an anchored answer counts
    (r"\boxed{46} no wait, 47", "47", 0.0),  # a boxed answer wins over later text
    (r"\boxed{47} \boxed{48}", "47", 0.0),  # two different boxed answers are a set, not 47
    ("garbage xyz", "47", 0.0),
    ("", "47", 0.0),
    (r"\boxed{47}", r"\boxed{47}", 1.0),  # a gold that is already LaTeX
    (r"\boxed{47}", "not a number at all", 0.0),  # unparseable gold
])
def test_accuracy_cases(completion, gold, expected):
    assert accuracy(["q"], [completion], answer=[gold]) == [expected]


def test_accuracy_accepts_extra_columns_and_caches_gold(monkeypatch):
    calls = []
    original = rewards._parse_gold

    def counting(gold, timeout):
        calls.append(gold)
        return original(gold, timeout)

    monkeypatch.setattr(rewards, "_parse_gold", counting)
    out = accuracy(["q"] * 3, [r"\boxed{47}", r"\boxed{48}", r"\boxed{3}"], answer=["47", "47", "3"],
                   task=["t"] * 3, entry=[{}] * 3)
    assert out == [1.0, 0.0, 1.0]
    assert calls == ["47", "3"]


def test_accuracy_works_outside_the_main_thread():
    result = {}
    def score():
        result["r"] = accuracy(["q"], [r"\boxed{0.5}"], answer=["1/2"])

    thread = threading.Thread(target=score)
    thread.start()
    thread.join()
    assert result["r"] == [1.0]


# ---------------------------------------------------------------- boxed_format and task_score


@pytest.mark.parametrize(("completion", "expected"), [
    (r"so \boxed{42}", 1.0),
    (r"\boxed{\frac{1}{2}}", 1.0),
    (r"\boxed {42}", 1.0),
    (r"\boxed{}", 0.0),
    (r"\boxed{  }", 0.0),
    (r"\boxed{1} and \boxed{2}", 0.0),
    (r"\boxed{\boxed{1}}", 0.0),
    (r"\boxed{\frac{1}{2}", 0.0),
    (r"\boxed42", 0.0),
    ("42", 0.0),
])
def test_boxed_format(completion, expected):
    assert boxed_format(["q"], [completion]) == [expected]


def test_task_score_with_a_real_basic_arithmetic_entry():
    entry = reasoning_gym.create_dataset("basic_arithmetic", size=1, seed=1234, min_terms=2, max_terms=2,
                                         min_digits=1, max_digits=2)[0]
    assert entry["question"] == "Calculate -7 + -6." and entry["answer"] == "-13"
    completions = [r"-7 + -6 = -13, so \boxed{-13}", r"\boxed{-12}", "work\n-13\n", "no answer",
                   r"\boxed{-130}"]
    # the last one shows reasoning-gym's partial credit: len('-13') / len('-130')
    scores = task_score(["q"] * 5, completions, entry=[entry] * 5, answer=["-13"] * 5)
    assert scores == [1.0, 0.0, 1.0, 0.0, 0.75]


def test_task_score_uses_the_task_column_when_metadata_lacks_the_source():
    entry = {"question": "Calculate 1 + 2.", "answer": "3", "metadata": {}}
    assert task_score(["q"], [r"\boxed{3}"], entry=[entry], task=["basic_arithmetic"]) == [1.0]


# ---------------------------------------------------------------- loading by name


def test_builtins_are_registered():
    assert dict(REWARDS) == {"accuracy": accuracy, "boxed_format": boxed_format, "task_score": task_score}
    assert load_reward_function("accuracy") is accuracy


def test_load_module_function():
    assert load_reward_function("gpgrl.rewards:boxed_format") is boxed_format


def test_load_module_function_from_a_package_on_the_path(tmp_path, monkeypatch):
    package = tmp_path / "mypkg_rewards_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "scores.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = load_reward_function("mypkg_rewards_test.scores:ones")
    assert fn(["a", "b"], ["c", "d"]) == [1.0, 1.0]


def test_load_file_function(custom):
    fn = load_reward_function(f"{custom}:ones")
    assert fn(["a"], ["b"], answer=["1"]) == [1.0]


def test_load_file_with_a_dataclass(tmp_path):
    path = tmp_path / "dc.py"
    path.write_text(textwrap.dedent('''
        from dataclasses import dataclass

        @dataclass
        class Scale:
            factor: float = 2.0

        def scaled(prompts, completions, **kw):
            return [Scale().factor] * len(completions)
    '''))
    assert load_reward_function(f"{path}:scaled")(["a"], ["b"]) == [2.0]


@pytest.mark.parametrize(("name", "pattern"), [
    ("acuracy", r"unknown reward\.functions entry 'acuracy': did you mean 'accuracy'\?"),
    ("zzz", r"built-ins are accuracy, boxed_format, task_score"),
    ("no_such_module_xyz:f", r"module 'no_such_module_xyz' not found"),
    ("gpgrl.rewards:acuracy", r"has no attribute 'acuracy'; did you mean 'accuracy'\?"),
    ("gpgrl.rewards:MATH_VERIFY_TIMEOUT_S", r"is a int, not a function"),
    ("missing/file.py:f", r"file 'missing/file\.py' does not exist"),
    (":f", r"must look like 'package\.module:function'"),
])
def test_load_errors(name, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_reward_function(name)


def test_load_file_errors(custom, tmp_path):
    with pytest.raises(ConfigError, match=r"has no attribute 'one'; did you mean 'ones'\?"):
        load_reward_function(f"{custom}:one")
    with pytest.raises(ConfigError, match=r"NOT_A_FUNCTION is a int, not a function"):
        load_reward_function(f"{custom}:NOT_A_FUNCTION")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('bad import')\n")
    with pytest.raises(ConfigError, match=r"running .*broken\.py.* failed: RuntimeError\('bad import'\)"):
        load_reward_function(f"{broken}:f")


# ---------------------------------------------------------------- RewardSet


def test_reward_set_weighted_sum_and_invalid_policy(custom):
    reward_set = RewardSet([f"{custom}:ones", f"{custom}:messy"], [2.0, 0.5])
    out = reward_set(["q"] * 4, ["a", "b", "c", "d"], {"answer": ["1", "2", "3", "4"]})
    # metrics use the short function names
    assert out.per_function == {"ones": [1.0, 1.0, 1.0, 1.0], "messy": [0.0, 0.0, 0.0, 2.0]}
    assert out.invalid == {"ones": 0, "messy": 3}
    assert out.total == [2.0, 2.0, 2.0, 3.0]


def test_reward_set_with_builtins_and_a_zero_weight():
    reward_set = RewardSet.from_config(RewardConfig(weights=(1.0, 0.0)))  # accuracy 1.0, boxed_format 0.0
    completions = [r"\boxed{47}", "47", r"\boxed{46}"]
    out = reward_set(["q"] * 3, completions, {"answer": ["47"] * 3, "task": ["t"] * 3})
    assert out.per_function == {"accuracy": [1.0, 0.0, 0.0], "boxed_format": [1.0, 0.0, 1.0]}  # bare 47: 0
    assert out.total == [1.0, 0.0, 0.0]
    assert out.invalid == {"accuracy": 0, "boxed_format": 0}
    assert repr(reward_set) == "RewardSet(1*accuracy + 0*boxed_format)"


def test_reward_set_passes_columns(custom):
    out = RewardSet([f"{custom}:echo_answer"], [1.0])(["q", "q"], ["a", "b"], {"answer": ["3", "-1.5"]})
    assert out.total == [3.0, -1.5]


def test_reward_set_wrong_length_names_function_and_lengths(custom):
    reward_set = RewardSet([f"{custom}:short"], [1.0])
    with pytest.raises(RewardError, match=r"'.*:short' returned 2 values for 3 completions"):
        reward_set(["q"] * 3, ["a", "b", "c"], {})


def test_reward_set_raising_function_is_chained(custom):
    reward_set = RewardSet([f"{custom}:boom"], [1.0])
    with pytest.raises(RewardError, match=r"'.*:boom' raised KeyError") as info:
        reward_set(["q"], ["a"], {})
    assert isinstance(info.value.__cause__, KeyError)


def test_reward_set_non_number_is_an_error(custom):
    with pytest.raises(RewardError, match=r"returned 'yes' at position 0: expected a number or None"):
        RewardSet([f"{custom}:words"], [1.0])(["q"], ["a"], {})


def test_reward_set_missing_column_names_the_function():
    with pytest.raises(RewardError, match=r"'accuracy' raised TypeError.*answer"):
        RewardSet(["accuracy"], [1.0])(["q"], ["a"], {})


def test_reward_set_misaligned_inputs():
    reward_set = RewardSet(["boxed_format"], [1.0])
    with pytest.raises(RewardError, match=r"column 'answer' has 1 values for 2 completions"):
        reward_set(["q", "q"], ["a", "b"], {"answer": ["1"]})
    with pytest.raises(RewardError, match=r"got 1 prompts for 2 completions"):
        reward_set(["q"], ["a", "b"], {})


def test_reward_set_config_errors():
    with pytest.raises(ConfigError, match=r"reward\.weights has 1 entries but reward\.functions has 2"):
        RewardSet(["accuracy", "boxed_format"], [1.0])
    with pytest.raises(ConfigError, match=r"lists 'accuracy' more than once"):
        RewardSet(["accuracy", "accuracy"], [1.0, 1.0])
    with pytest.raises(ConfigError, match=r"must be finite"):
        RewardSet(["accuracy"], [math.nan])
    with pytest.raises(ConfigError, match=r"did you mean 'accuracy'"):
        RewardSet(["acuracy"], [1.0])
