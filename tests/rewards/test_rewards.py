"""Tests of gpgrl.rewards and gpgrl.rewards.verify: the built-in rewards, bounded math-verify, loading by name with
parameters, and the weighted RewardSet (parallel calls, time limit, error policy)."""

from __future__ import annotations

import doctest
import json
import logging
import math
import re
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import reasoning_gym
import yaml

import gpgrl.rewards.text as text_rewards
import gpgrl.rewards.verify as verify
from gpgrl.config import ConfigError, RewardConfig
from gpgrl.rewards import (
    REWARDS,
    Accuracy,
    Cosine,
    RepetitionPenalty,
    RewardError,
    RewardSet,
    SoftOverlong,
    accuracy,
    boxed_format,
    load_reward_function,
    task_score,
    think_format,
)
from gpgrl.rewards.verify import VerifyError, VerifyPool

CUSTOM = '''
import math
import re

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

def echo_lengths(prompts, completions, completion_lengths, **kw):
    return [float(n) for n in completion_lengths]

def scaled(prompts, completions, factor=1.0, **kw):
    return [factor] * len(completions)

def only_factor(prompts, completions, factor):
    return [factor] * len(completions)

def sleepy(prompts, completions, **kw):
    time.sleep(1.0)
    return [1.0] * len(completions)

def stuck(prompts, completions, **kw):
    time.sleep(30)
    return [1.0] * len(completions)

async def async_ones(prompts, completions, **kw):
    await asyncio.sleep(1.0)
    return [1.0] * len(completions)

CANCELLED = []

async def async_stuck(prompts, completions, **kw):
    try:
        await asyncio.sleep(30)
    finally:
        CANCELLED.append(True)
    return [1.0] * len(completions)

NOT_A_FUNCTION = 3
'''

CUSTOM = "import asyncio\nimport time\n" + CUSTOM


@pytest.fixture
def custom(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(CUSTOM)
    return str(path)


def test_doctests():
    result = doctest.testmod(text_rewards, verbose=False)
    assert result.attempted >= 13 and result.failed == 0
    result = doctest.testmod(verify, verbose=False)
    assert result.attempted >= 2 and result.failed == 0


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
    # fractions, decimals and percentages
    (r"\boxed{\frac{3}{4}}", "0.75", 1.0),
    (r"\boxed{-\frac{1}{2}}", "-0.5", 1.0),
    (r"\boxed{0.333}", "1/3", 0.0),  # a rounded decimal is not the fraction
    (r"\boxed{50\%}", "50", 1.0),
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}", 1.0),
    (r"\boxed{10^{3}}", "1000", 1.0),
    # units, currency and thousands separators (GSM8K-style answers)
    (r"\boxed{18 \text{ dollars}}", "18", 1.0),
    (r"\boxed{\$18}", "18", 1.0),
    (r"\boxed{5 \text{ km/h}}", "5", 1.0),
    (r"\boxed{1,000}", "1000", 1.0),
    # \boxed variants: the paper's final line, inline math, and forms math-verify does not read
    (r"Therefore, the final answer is: $\boxed{72}$. I hope it is correct", "72", 1.0),
    (r"$\boxed{72}$", "72", 1.0),
    (r"\boxed{x=3}", "3", 1.0),
    (r"\boxed{(1,2)}", "(1, 2)", 1.0),
    (r"\fbox{72}", "72", 0.0),
    (r"\boxed72", "72", 0.0),
])
def test_accuracy_cases(completion, gold, expected):
    assert accuracy(["q"], [completion], answer=[gold]) == [expected]


def test_accuracy_accepts_extra_columns_and_numeric_golds():
    out = accuracy(["q"] * 3, [r"\boxed{47}", r"\boxed{48}", r"\boxed{3}"], answer=["47", 47, 3.0],
                   task=["t"] * 3, entry=[{}] * 3, completion_lengths=[1, 2, 3])
    assert out == [1.0, 0.0, 1.0]


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


@pytest.mark.parametrize(("completion", "gold", "expected"), [
    (r"\boxed{47}", "47", 1.0),
    (r"\boxed{-1,000}", "-1000", 1.0),
    (r"\boxed{\$18}", "18", 1.0),
    (r"\boxed{\frac{3}{4}}", "0.75", 1.0),
    (r"\boxed{71}", "47", 1.0),  # a wrong number still has the right form: accuracy judges the value
    (r"\boxed{12 + 35}", "47", 0.0),  # the question restated
    (r"\boxed{47 = 47}", "47", 0.0),
    (r"\boxed{result}", "47", 0.0),
    (r"\boxed{ANSWER}", "x^2 + 1", 0.0),
    (r"\boxed{x^2+1}", "x^2 + 1", 1.0),
    (r"\boxed{(B)}", "B", 1.0),
    (r"\boxed{42}", "B", 0.0),
])
def test_boxed_format_pays_only_for_the_gold_answers_kind(completion, gold, expected):
    assert boxed_format(["q"], [completion], answer=[gold]) == [expected]


def test_boxed_format_never_pays_for_a_box_the_prompt_shows():
    prompt = [{"role": "system", "content": r"Give the final answer as \boxed{FINAL} on the last line."},
              {"role": "user", "content": "Name the colour."}]
    assert boxed_format([prompt] * 2, [r"\boxed{final}", r"\boxed{red}"], answer=["red", "blue"]) == [0.0, 1.0]


def test_boxed_format_on_the_hacked_completions_of_a_committed_run():
    """results/compare/basic_arithmetic/hacked: gpg-alpha, seed 0, trained under the old rule (any non-blank box
    paid), boxes the prompt's placeholder in 99 of 100 held-out answers. The new rule pays none of them."""
    run = Path(__file__).parents[2] / "results" / "compare" / "basic_arithmetic" / "hacked"
    rows = [json.loads(line) for line in (run / "eval_after_completions.jsonl").read_text().splitlines()]
    template = yaml.safe_load((run / "config.yaml").read_text())["data"]["prompt_template"]
    prompts = [template.replace("{question}", r["question"]) for r in rows]
    paid = boxed_format(prompts, [r["completion"] for r in rows], answer=[r["answer"] for r in rows])
    assert sum(r["boxed"] for r in rows) == 99  # what the old rule paid
    assert sum(r["completion"].count(r"\boxed{result}") > 0 for r in rows) >= 95
    assert sum(paid) == 0
    honest = [r"So {} = \boxed{{{}}}.".format(r["question"].split("Calculate ")[-1].rstrip("."), r["answer"])
              for r in rows]
    assert boxed_format(prompts, honest, answer=[r["answer"] for r in rows]) == [1.0] * len(rows)


def test_task_score_with_a_real_basic_arithmetic_entry():
    entry = reasoning_gym.create_dataset("basic_arithmetic", size=1, seed=1234, min_terms=2, max_terms=2,
                                         min_digits=1, max_digits=2)[0]
    assert entry["question"] == "Calculate -7 + -6." and entry["answer"] == "-13"
    completions = [r"-7 + -6 = -13, so \boxed{-13}", r"\boxed{-12}", "work\n-13\n", "no answer",
                   r"\boxed{-130}"]
    # the last one shows reasoning-gym's partial credit: len('-13') / len('-130')
    scores = task_score(["q"] * 5, completions, entry=[entry] * 5, answer=["-13"] * 5)
    assert scores == [1.0, 0.0, 1.0, 0.0, 0.75]


ADVERSARIAL = [
    "\\boxed{" + "9" * 100_000 + "}",  # a 100,000-digit integer: parses (fast), is wrong
    r"\boxed{10^{10^{10^{10}}}}",  # sympy evaluates a ten-billion-digit power: never finishes
    "\\boxed{" + "\\frac{1}{" * 2000 + "2" + "}" * 2000 + "}",  # nested 2,000 deep: ~17 s of parsing
    r"\boxed{9^{9^{9}}}",  # 9^387420489: never finishes
    r"\boxed{72}",
]


def test_accuracy_is_bounded_on_adversarial_answers_and_timeouts_are_counted(caplog):
    """The three pathological answers take minutes to forever (never within 2 s, however fast the machine); the
    two others finish in well under a second on a quiet machine, so they get a limit no load can reach. No
    assertion depends on how busy the machine is."""
    never, fast = [ADVERSARIAL[i] for i in (1, 2, 3)], [ADVERSARIAL[i] for i in (0, 4)]
    bounded = RewardSet(["accuracy"], [1.0], kwargs={"accuracy": {"timeout_s": 2}})
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="gpgrl.rewards"):
        out = bounded(["q"] * 3, never, {"answer": ["72"] * 3})
    assert time.monotonic() - start < 300, "the limit did not bound the batch"  # unbounded: > 30 s each
    assert out.per_function["accuracy"] == [0.0, 0.0, 0.0]
    assert out.invalid == {"accuracy": 3} and out.errors == {"accuracy": 0}
    assert "3 of 3 answers took longer than timeout_s=2 s" in caplog.text
    generous = RewardSet(["accuracy"], [1.0], kwargs={"accuracy": {"timeout_s": 120}})
    out = generous(["q"] * 2, fast, {"answer": ["72"] * 2})
    assert out.per_function["accuracy"] == [0.0, 1.0] and out.invalid == {"accuracy": 0}


def test_verify_worker_killed_mid_answer_scores_none_and_is_replaced():
    pool = VerifyPool(size=1)
    try:
        box = {}
        thread = threading.Thread(target=lambda: box.update(r=pool.verify([("72", ADVERSARIAL[1])], 60.0)))
        thread.start()
        deadline = time.monotonic() + 30
        while not (pool.workers and pool.workers[0].item is not None) and time.monotonic() < deadline:
            time.sleep(0.05)
        pool.workers[0].proc.kill()  # as a segfault or the OOM killer would
        thread.join(30)
        assert box["r"].scores == [None] and box["r"].crashes == 1 and box["r"].timeouts == 0
        assert pool.verify([("72", r"\boxed{72}")], 5.0).scores == [1.0]  # a fresh worker took over
    finally:
        pool.close()


def test_verify_reports_a_worker_that_cannot_start(monkeypatch):
    pool = VerifyPool(size=1)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(VerifyError, match=r"failed to start 3 times in a row"):
        pool.verify([("1", r"\boxed{1}")], 5.0)


def test_verify_batch_argument_errors():
    with pytest.raises(ValueError, match="2 gold answers for 1 completions"):
        verify.verify_batch(["1", "2"], ["x"])
    with pytest.raises(ValueError, match="timeout_s=0 must be > 0"):
        verify.verify_batch(["1"], ["x"], timeout_s=0)
    assert verify.verify_batch([], []).scores == []


# ---------------------------------------------------------------- cosine, length, repetition, think format


@pytest.mark.parametrize(("length", "correct", "expected"), [
    (0, True, 1.0), (500, True, 0.75), (1000, True, 0.5), (5000, True, 0.5),  # p capped at 1
    (0, False, 0.0), (500, False, -0.25), (1000, False, -0.5), (250, True, 0.5 + 0.5 * (1 + 2 ** -0.5) / 2),
])
def test_cosine_values(length, correct, expected):
    # r = long + (short - long)(1 + cos(pi p))/2 with p = length/1000: cos(pi/2) = 0, cos(pi/4) = 1/sqrt(2)
    assert Cosine().value(length, correct) == pytest.approx(expected)


def test_cosine_scores_with_math_verify():
    text_ok, text_wrong = r"\boxed{7}".ljust(500), r"\boxed{8}".ljust(1000)
    assert Cosine()(["q", "q"], [text_ok, text_wrong], answer=["7", "7"]) == pytest.approx([0.75, -0.5])


@pytest.mark.parametrize(("length", "expected"), [
    (0, 0.0), (384, 0.0), (385, -1 / 128), (448, -0.5), (512, -1.0), (513, -1.0), (10_000, -1.0)])
def test_soft_overlong(length, expected):
    # L_max 512, L_cache 128: free up to 384 tokens, then linear to -1 at 512, -1 beyond
    assert SoftOverlong(max_len=512, cache=128)(["q"], ["x"], completion_lengths=[length]) == [expected]


def test_soft_overlong_needs_token_lengths():
    reward_set = RewardSet(["soft_overlong"], [1.0], kwargs={"soft_overlong": {"max_len": 8, "cache": 4}})
    with pytest.raises(RewardError, match=r"'soft_overlong' raised ValueError: .*completion_lengths"):
        reward_set(["q"], ["x"], {})
    assert reward_set(["q", "q"], ["x", "y"], {}, completion_lengths=[4, 6]).total == [0.0, -0.5]


@pytest.mark.parametrize(("text", "n", "expected"), [
    ("the cat the cat the cat", 3, -0.5),  # 4 trigrams, 2 distinct: (1 - 2/4) * -1
    ("a a a a a", 1, -0.8),  # 5 unigrams, 1 distinct
    ("One two three four", 2, 0.0),  # no repeat
    ("Go go GO go", 1, -0.75),  # lower-cased: 4 unigrams, 1 distinct
    ("too short", 3, 0.0),
    ("", 3, 0.0),
])
def test_repetition_penalty(text, n, expected):
    assert RepetitionPenalty(ngram_size=n)(["q"], [text]) == [pytest.approx(expected)]


def test_repetition_penalty_scales_with_max_penalty():
    assert RepetitionPenalty(ngram_size=1, max_penalty=-2.0)(["q"], ["a a b b"]) == [-1.0]  # (1 - 2/4) * -2


@pytest.mark.parametrize(("completion", "expected"), [
    ("<think>\n17 + 25 = 42\n</think>\n<answer>\n42\n</answer>", 1.0),
    ("<think>reasoning</think><answer>42</answer>", 1.0),
    ("  <think></think>  <answer> 42 </answer>\n", 1.0),  # empty reasoning is allowed
    ("<think>x</think><answer>  </answer>", 0.0),  # blank answer
    ("<answer>42</answer>", 0.0),
    ("<think>x</think>", 0.0),
    ("<answer>42</answer><think>x</think>", 0.0),  # wrong order
    ("Sure! <think>x</think><answer>42</answer>", 0.0),  # text before
    ("<think>x</think><answer>42</answer> done", 0.0),  # text after
    ("<think>a</think><think>b</think><answer>42</answer>", 0.0),  # a tag twice
])
def test_think_format(completion, expected):
    assert think_format(["q"], [completion]) == [expected]


def test_task_score_uses_the_task_column_when_metadata_lacks_the_source():
    entry = {"question": "Calculate 1 + 2.", "answer": "3", "metadata": {}}
    assert task_score(["q"], [r"\boxed{3}"], entry=[entry], task=["basic_arithmetic"]) == [1.0]


# ---------------------------------------------------------------- loading by name


def test_builtins_are_registered():
    from gpgrl.rewards import Label, choice, giou, iou

    assert dict(REWARDS) == {"accuracy": Accuracy, "cosine": Cosine, "boxed_format": boxed_format,
                             "think_format": think_format, "soft_overlong": SoftOverlong,
                             "repetition_penalty": RepetitionPenalty, "task_score": task_score,
                             "label": Label, "choice": choice, "iou": iou, "giou": giou}
    assert load_reward_function("accuracy") == accuracy == Accuracy(timeout_s=5.0)
    assert load_reward_function("boxed_format") is boxed_format


def test_builtin_parameters_come_from_kwargs():
    assert load_reward_function("cosine", {"max_len": 2000, "wrong_long": -1}) == Cosine(max_len=2000, wrong_long=-1.0)
    assert load_reward_function("soft_overlong", {"max_len": 512, "cache": 128}) == SoftOverlong(512, 128)
    assert load_reward_function("repetition_penalty", {"ngram_size": 4}) == RepetitionPenalty(ngram_size=4)


@pytest.mark.parametrize(("name", "kwargs", "pattern"), [
    ("cosine", {"max_lenght": 5}, r"reward\.kwargs\.cosine\.max_lenght: unknown parameter; did you mean 'max_len'"),
    ("cosine", {"max_len": "long"}, r"reward\.kwargs\.cosine\.max_len must be an integer, got 'long'"),
    ("cosine", {"max_len": 2.5}, r"reward\.kwargs\.cosine\.max_len must be an integer"),
    ("cosine", {"max_len": 0}, r"reward\.kwargs\.cosine: max_len=0 must be > 0"),
    ("accuracy", {"timeout_s": True}, r"reward\.kwargs\.accuracy\.timeout_s must be a number"),
    ("soft_overlong", {}, r"reward\.kwargs\.soft_overlong: soft_overlong needs max_len, cache"),
    ("soft_overlong", {"max_len": 8, "cache": 9}, r"cache=9 must be in \(0, max_len=8\]"),
    ("repetition_penalty", {"max_penalty": 1}, r"max_penalty=1\.0 must be <= 0"),
    ("boxed_format", {"x": 1}, r"reward\.kwargs\.boxed_format: the built-in 'boxed_format' takes no parameters"),
])
def test_builtin_parameter_errors_name_the_key(name, kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_reward_function(name, kwargs)


def test_user_function_kwargs_are_bound(custom):
    assert load_reward_function(f"{custom}:scaled", {"factor": 2.5})(["a"], ["b"]) == [2.5]
    assert load_reward_function(f"{custom}:only_factor", {"factor": 3})(["a"], ["b"]) == [3]
    with pytest.raises(ConfigError, match=r"reward\.kwargs\..*only_factor: .*does not accept"):
        load_reward_function(f"{custom}:only_factor", {"factr": 3})


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
    ("zzz", r"built-ins are accuracy, cosine, boxed_format, think_format, soft_overlong, repetition_penalty, "
            r"task_score"),
    ("no_such_module_xyz:f", r"module 'no_such_module_xyz' not found"),
    ("gpgrl.rewards:acuracy", r"has no attribute 'acuracy'; did you mean 'accuracy'\?"),
    ("gpgrl.rewards.reward_set:ON_ERROR", r"is a tuple, not a function"),
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


def test_reward_set_kwargs_by_short_name_and_from_config(custom):
    cfg = RewardConfig(functions=(f"{custom}:scaled", "cosine"), weights=(1.0, 1.0),
                       kwargs={"scaled": {"factor": 0.5}, "cosine": {"max_len": 10}}, timeout_s=20, on_error="zero")
    reward_set = RewardSet.from_config(cfg)
    assert (reward_set.timeout_s, reward_set.on_error) == (20.0, "zero")
    out = reward_set(["q"], [r"\boxed{7}".ljust(10)], {"answer": ["7"]})
    assert out.per_function == {"scaled": [0.5], "cosine": [0.5]}  # p = 1: correct_long


def test_reward_set_kwargs_errors():
    with pytest.raises(ConfigError, match=r"reward\.kwargs\.cosin: did you mean 'cosine'\? not one of"):
        RewardSet(["cosine"], [1.0], kwargs={"cosin": {"max_len": 5}})
    with pytest.raises(ConfigError, match=r"reward\.kwargs\.cosine must be a mapping"):
        RewardSet(["cosine"], [1.0], kwargs={"cosine": 5})
    with pytest.raises(ConfigError, match=r"reward\.on_error='ignore' is not one of 'raise', 'zero'"):
        RewardSet(["cosine"], [1.0], on_error="ignore")
    with pytest.raises(ConfigError, match=r"reward\.timeout_s=-1 must be >= 0"):
        RewardSet(["cosine"], [1.0], timeout_s=-1)


def test_reward_set_passes_completion_lengths(custom):
    out = RewardSet([f"{custom}:echo_lengths"], [1.0])(["q", "q"], ["a", "b"], {}, completion_lengths=[3, 7])
    assert out.total == [3.0, 7.0]


def test_reward_set_runs_sync_and_async_functions_in_parallel(custom):
    reward_set = RewardSet([f"{custom}:sleepy", f"{custom}:async_ones", "boxed_format"], [1.0, 1.0, 1.0])
    out = reward_set(["q", "q"], [r"\boxed{1}", "x"], {})
    assert out.total == [3.0, 2.0]
    barrier = threading.Barrier(2, timeout=120)  # passes only when both functions run at the same time

    def meet(prompts, completions, **kwargs):
        barrier.wait()
        return [1.0] * len(completions)

    async def meet_async(prompts, completions, **kwargs):
        barrier.wait()
        return [2.0] * len(completions)

    assert RewardSet([meet, meet_async], [1.0, 1.0])(["q"], ["x"], {}).total == [3.0]


def test_reward_set_timeout_raises_by_default(custom):
    reward_set = RewardSet([f"{custom}:stuck", "boxed_format"], [1.0, 1.0], timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(RewardError, match=r"'.*:stuck' did not finish within reward\.timeout_s=0\.5 s"):
        reward_set(["q"], ["x"], {})
    assert time.monotonic() - start < 120  # bounded by the limit, not by the stuck function


def test_reward_set_timeout_with_on_error_zero_is_counted_and_logged(custom, caplog):
    reward_set = RewardSet([f"{custom}:stuck", "boxed_format"], [1.0, 1.0], timeout_s=0.5, on_error="zero")
    with caplog.at_level(logging.WARNING, logger="gpgrl.rewards"):
        out = reward_set(["q", "q"], [r"\boxed{1}", "x"], {})
    assert out.per_function == {"stuck": [0.0, 0.0], "boxed_format": [1.0, 0.0]}
    assert out.invalid == {"stuck": 2, "boxed_format": 0} and out.errors == {"stuck": 2, "boxed_format": 0}
    assert out.total == [1.0, 0.0]
    assert "did not finish within reward.timeout_s=0.5 s; reward.on_error=zero" in caplog.text


def test_async_reward_past_the_limit_is_cancelled(tmp_path):
    path = tmp_path / "slow_async.py"
    path.write_text(CUSTOM)
    reward_set = RewardSet([f"{path}:async_stuck"], [1.0], timeout_s=0.5, on_error="zero")
    assert reward_set(["q"], ["x"], {}).errors == {"async_stuck": 1}
    module = next(m for m in sys.modules.values() if getattr(m, "__file__", None) == str(path))
    deadline = time.monotonic() + 5
    while not module.CANCELLED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert module.CANCELLED == [True]


@pytest.mark.parametrize(("function", "pattern"), [
    ("boom", r"raised KeyError"), ("short", r"returned 2 values for 3 completions"),
    ("words", r"returned 'yes' at position 0"),
])
def test_reward_set_on_error_zero_scores_failures_zero(custom, caplog, function, pattern):
    reward_set = RewardSet([f"{custom}:{function}", f"{custom}:ones"], [1.0, 2.0], on_error="zero")
    with caplog.at_level(logging.WARNING, logger="gpgrl.rewards"):
        out = reward_set(["q"] * 3, ["a", "b", "c"], {})
    assert out.per_function[function] == [0.0, 0.0, 0.0] and out.total == [2.0, 2.0, 2.0]
    assert out.errors == {function: 3, "ones": 0} and out.invalid == {function: 3, "ones": 0}
    assert caplog.records and caplog.records[-1].levelno == logging.WARNING
    assert re.search(pattern, caplog.text)


def test_math_verify_in_a_reward_thread_gets_a_hint(tmp_path):
    path = tmp_path / "mv.py"
    path.write_text("from math_verify import parse\n\ndef mv(prompts, completions, **kw):\n"
                    "    return [float(bool(parse(c))) for c in completions]\n")
    with pytest.raises(RewardError, match=r"parsing_timeout=None and timeout_seconds=None, or use "
                                          r"gpgrl\.rewards\.verify\.verify_batch"):
        RewardSet([f"{path}:mv"], [1.0])(["q"], ["$1$"], {})


@pytest.mark.parametrize(("gold", "completion", "expected"), [
    ("-77", "The final answer is 42 - 49 - 70 = 1.", 0.0),  # restates the question: found by a TRL run on chain_sum
    ("-77", r"\boxed{42-49-70}", 0.0),
    ("42", r"\boxed{6 \times 7}", 0.0),
    ("-77", r"\boxed{x = -77}", 1.0),  # an equation's right-hand side is the answer
    ("-77", "The answer is 42 - 49 - 70 = -77", 1.0),
    ("1/2", r"\boxed{\frac{1}{2}}", 1.0),
    ("1000", r"\boxed{1,000}", 1.0),
    ("1000", r"\boxed{10^{3}}", 1.0),
    ("50", r"\boxed{50\%}", 1.0),
    (r"3\sqrt{2}", r"\boxed{3\sqrt{2}}", 1.0),  # symbolic golds keep math-verify's equivalence
])
def test_numeric_gold_needs_a_numeric_answer(gold, completion, expected):
    from gpgrl.rewards.verify import score_answer

    assert score_answer(gold, completion) == expected
