"""Tests of gpgrl.evaluation: pass@k against its closed form, majority vote, the aggregation of `evaluate` on
scripted completions (hand-computed metrics), the files it writes, and `gpgrl eval` end to end on the tiny model."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

import gpgrl.evaluation as evaluate_module
from gpgrl.cli import main
from gpgrl.config import ConfigError, build_config
from gpgrl.data import Example
from gpgrl.evaluation import answer_key, evaluate, majority_vote, pass_at_k, summary_tables, write_eval
from gpgrl.rewards import RewardSet
from gpgrl.rollout import Sample, SamplingParams

FIXTURES = Path(__file__).parent / "fixtures"


def test_doctests():
    result = doctest.testmod(evaluate_module, verbose=False)
    assert result.attempted >= 4 and result.failed == 0


# ---------------------------------------------------------------- pass@k and majority vote


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
    (5, 2, 1, 2 / 5),  # pass@1 = c/n
    (10, 3, 1, 3 / 10),
    (6, 1, 3, 1 - 10 / 20),  # 1 - C(5,3)/C(6,3)
    (10, 2, 5, 1 - 56 / 252),  # 1 - C(8,5)/C(10,5)
    (4, 0, 4, 0.0),
    (4, 3, 2, 1.0),  # n - c < k: every draw of 2 holds a correct one
    (1, 1, 1, 1.0),
])
def test_pass_at_k_matches_the_closed_form(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k needs"):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(("answers", "correct", "expected"), [
    (["7", "8", "8", None], [True, False, False, False], False),  # 8 wins 2-1
    (["3", "3", "4", "3"], [True, True, False, True], True),
    (["7", "8", "7", "8"], [True, False, True, False], True),  # tie: the answer seen first wins
    (["8", "7", "7", "8"], [False, True, True, False], False),
    ([None, None], [False, False], False),  # nobody voted
    (["1/2", "0.5", "0.5"], [True, True, True], True),
])
def test_majority_vote(answers, correct, expected):
    assert majority_vote(answers, correct) is expected


def test_answer_key_is_the_last_box_without_spaces():
    assert answer_key(r"\boxed{1} then \boxed{ 2 + x }") == "2+x"
    assert answer_key(r"\boxed{") is None


# ---------------------------------------------------------------- evaluate on scripted completions


SCRIPT = {  # question -> (gold, completions); True marks a truncated completion
    "q0": ("7", [r"\boxed{7}", r"\boxed{8}", r"so \boxed{8}", ("no answer", True)]),
    "q1": ("3", [r"\boxed{3}", r"\boxed{3}", r"\boxed{4}", r"it is \boxed{3}"]),
    "q2": ("5", ["x", "y", ("z", True), "w"]),
}
EXAMPLES = [Example(q, gold, {"task": "t"}, i, group) for i, ((q, (gold, _)), group)
            in enumerate(zip(SCRIPT.items(), ["A", "A", "B"], strict=True))]


class ScriptEncoder:
    """Encodes an example as the text the scripted generate answers."""

    def __init__(self, response_prefix=""):
        self.response_prefix = response_prefix

    def encode(self, example):
        return f"P:{example.question}"


def scripted_generate(calls):
    def generate(model, encoder, prompts, n, params):
        calls.append((list(prompts), n, params))
        out = []
        for prompt in prompts:
            group = []
            for item in SCRIPT[prompt.removeprefix("P:")][1][:n]:
                text, truncated = item if isinstance(item, tuple) else (item, False)
                group.append(Sample(torch.tensor([1, 2]), torch.arange(len(text) % 5 + 1), text, truncated))
            out.append(group)
        return out

    return generate


@pytest.fixture
def scripted(monkeypatch):
    calls = []
    monkeypatch.setattr(evaluate_module, "generate", scripted_generate(calls))
    return calls


def test_evaluate_metrics_by_hand(scripted):
    params = SamplingParams(16, 1.0, 0.95, 8)
    result = evaluate(None, ScriptEncoder(), EXAMPLES, params, num_samples=4, ks=(1, 2, 4),
                      rewards=RewardSet(["accuracy", "boxed_format"], [1.0, 0.5]))
    assert scripted == [(["P:q0", "P:q1", "P:q2"], 4, params)]
    # correct counts per item: q0 1/4, q1 3/4, q2 0/4
    assert result.n == 3 and result.num_samples == 4 and len(result.records) == 12
    assert result.accuracy == pytest.approx(4 / 12)
    assert result.pass_at == pytest.approx({1: (1 / 4 + 3 / 4 + 0) / 3,
                                            2: ((1 - 3 / 6) + 1.0 + 0.0) / 3,  # q0: 1 - C(3,2)/C(4,2)
                                            4: 2 / 3})
    assert result.majority == pytest.approx(1 / 3)  # q0 votes 8 (wrong), q1 votes 3 (right), q2 has no votes
    assert result.boxed_rate == pytest.approx(7 / 12)
    assert result.truncated_rate == pytest.approx(2 / 12)
    assert result.rewards == pytest.approx({"accuracy": 4 / 12, "boxed_format": 7 / 12})
    assert result.reward_invalid == {"accuracy": 0, "boxed_format": 0}
    assert result.groups == {
        "A": pytest.approx({"accuracy": 0.5, "n": 2, "pass@1": 0.5, "pass@2": 0.75, "pass@4": 1.0, "maj@4": 0.5}),
        "B": pytest.approx({"accuracy": 0.0, "n": 1, "pass@1": 0.0, "pass@2": 0.0, "pass@4": 0.0, "maj@4": 0.0})}


def test_evaluate_records_and_files(scripted, tmp_path):
    result = evaluate(None, ScriptEncoder(), EXAMPLES, SamplingParams(16, 1.0), num_samples=4,
                      ks=(1, 2), rewards=RewardSet(["accuracy", "boxed_format"], [1.0, 0.5]))
    first = result.records[0]
    assert first == {"index": 0, "sample": 0, "group": "A", "question": "q0", "answer": "7",
                     "completion": r"\boxed{7}", "score": 1.0, "correct": True, "answer_key": "7", "boxed": 1.0,
                     "truncated": False, "length": 5, "reward": 1.5, "rewards": {"accuracy": 1.0, "boxed_format": 1.0}}
    path = tmp_path / "out" / "eval.json"
    write_eval(result, path)
    summary = json.loads(path.read_text())
    assert summary["accuracy"] == pytest.approx(1 / 3) and summary["n"] == 3 and summary["completions"] == 12
    assert summary["pass@2"] == pytest.approx(0.5) and summary["maj@4"] == pytest.approx(1 / 3)
    assert set(summary["groups"]) == {"A", "B"} and summary["rewards"]["boxed_format"] == pytest.approx(7 / 12)
    lines = (tmp_path / "out" / "eval_completions.jsonl").read_text().splitlines()
    assert [json.loads(line)["completion"] for line in lines[:4]] == [r"\boxed{7}", r"\boxed{8}", r"so \boxed{8}",
                                                                        "no answer"]


def test_evaluate_keeps_the_trainers_call(scripted):
    """The trainer calls evaluate(model, tokenizer, examples, render, params): one greedy sample, accuracy only."""
    result = evaluate(None, ScriptEncoder(), EXAMPLES, SamplingParams(16, 0.0))
    assert scripted[0][1] == 1
    assert result.accuracy == pytest.approx(2 / 3) and result.n == 3  # q0 and q1 are right at sample 0
    assert result.summary().keys() >= {"accuracy", "n", "boxed_rate", "pass@1"}
    assert "maj@1" not in result.summary() and result.records[0]["rewards"] == {}


def test_evaluate_scores_the_response_prefix_with_the_completion(scripted):
    """data.response_prefix: 'x' after 'The final answer is \\boxed{5}? No: ' is still wrong, and a bare
    continuation of an anchoring prefix is scored as the reader sees it."""
    plain = evaluate(None, ScriptEncoder(), EXAMPLES[2:], SamplingParams(16, 1.0), num_samples=4)
    prefixed = evaluate(None, ScriptEncoder(r"\boxed{5} or "), EXAMPLES[2:], SamplingParams(16, 1.0), num_samples=4)
    assert plain.accuracy == 0.0 and prefixed.accuracy == 1.0  # q2's completions x, y, z, w now follow a box of 5
    assert [r["completion"] for r in prefixed.records] == [r"\boxed{5} or x", r"\boxed{5} or y", r"\boxed{5} or z",
                                                           r"\boxed{5} or w"]
    assert prefixed.records[0]["answer_key"] == "5" and prefixed.boxed_rate == 1.0


def test_evaluate_edge_cases(scripted):
    assert evaluate(None, None, [], str, SamplingParams(8, 0.0)).n == 0
    with pytest.raises(ValueError, match=r"1 <= k <= num_samples=2, got k=\[3\]"):
        evaluate(None, None, EXAMPLES, str, SamplingParams(8, 1.0), num_samples=2, ks=(1, 3))


def test_summary_tables(scripted):
    result = evaluate(None, ScriptEncoder(), EXAMPLES, SamplingParams(16, 1.0), num_samples=4,
                      ks=(1, 2))
    console = Console(width=120, record=True)
    for table in summary_tables(result, "tiny"):
        console.print(table)
    text = console.export_text()
    assert "pass@2" in text and "maj@4" in text and "by group" in text and "0.750" in text


def test_eval_config_validation():
    cfg = build_config(overrides=["eval.num_samples=8", "eval.temperature=0.6", "eval.k=[1,8]", "eval.top_p=0.95"])
    assert (cfg.eval.num_samples, cfg.eval.k, cfg.eval.top_p) == (8, (1, 8), 0.95)
    for overrides, pattern in [(["eval.num_samples=4"], r"eval\.num_samples=4 needs eval\.temperature > 0"),
                               (["eval.k=[2]"], r"eval\.k=\[2\]: each k must be in \[1, eval\.num_samples=1\]"),
                               (["eval.top_p=0"], r"eval\.top_p=0\.0 must be in \(0, 1\]"),
                               (["eval.num_samples=0"], r"eval\.num_samples=0 must be >= 1")]:
        with pytest.raises(ConfigError, match=pattern):
            build_config(overrides=overrides)


# ---------------------------------------------------------------- `gpgrl eval` end to end (tiny random model)


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


def _eval(model_cache: Path, out: Path, *overrides: str) -> int:
    return main(["eval", "model.name=tiny-random", f"model.cache_dir={model_cache}", f"eval.output={out}",
                 "eval.max_new_tokens=8", *overrides])


def test_gpgrl_eval_greedy_on_reasoning_gym(model_cache, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert _eval(model_cache, out, "data.eval_size=4", "data.train_size=20") == 0
    summary = json.loads(out.read_text())
    assert summary["n"] == 4 and summary["num_samples"] == 1 and 0.0 <= summary["accuracy"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "eval_completions.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {r["group"] for r in records} == {"basic_arithmetic"}
    assert set(records[0]["rewards"]) == {"accuracy", "boxed_format"}
    assert "pass@1" in capsys.readouterr().out


def test_gpgrl_eval_uses_the_training_sampler_and_it_completes_as_generate(model_cache, tmp_path):
    from gpgrl.config import build_config
    from gpgrl.evaluation import sampling_params

    assert sampling_params(build_config({}, [])).shared_prefill  # the default: gpgrl's KV-cached sampler
    assert not sampling_params(build_config({}, ["rollout.shared_prefill=false"])).shared_prefill
    completions = {}
    for shared in ("true", "false"):
        out = tmp_path / f"eval_{shared}.json"
        assert _eval(model_cache, out, "data.eval_size=6", "data.train_size=20", "eval.max_new_tokens=12",
                     f"rollout.shared_prefill={shared}") == 0
        lines = (tmp_path / f"eval_{shared}_completions.jsonl").read_text().splitlines()
        completions[shared] = [json.loads(line)["completion"] for line in lines]
    assert completions["true"] == completions["false"]  # greedy: the same text either way


def test_gpgrl_eval_sampled_on_a_file_with_groups(model_cache, tmp_path, capsys):
    out = tmp_path / "nested" / "arith.json"
    assert _eval(model_cache, out, f"data.path={FIXTURES / 'files' / 'arith.jsonl'}", "data.eval_split=1.0",
                 "data.group_column=topic", "eval.temperature=1.0", "eval.num_samples=3", "eval.k=[1,2,3]") == 0
    summary = json.loads(out.read_text())
    assert (summary["n"], summary["num_samples"], summary["completions"]) == (5, 3, 15)
    assert summary.keys() >= {"accuracy", "pass@1", "pass@2", "pass@3", "maj@3", "groups", "rewards"}
    assert summary["pass@1"] <= summary["pass@2"] <= summary["pass@3"]
    assert {g: m["n"] for g, m in summary["groups"].items()} == {"add": 2, "mul": 1, "sub": 2}
    records = (tmp_path / "nested" / "arith_completions.jsonl").read_text().splitlines()
    assert len(records) == 15
    assert "by group" in capsys.readouterr().out


def test_gpgrl_eval_of_a_file_scores_all_of_it_and_no_eval_data_says_what_to_set(model_cache, tmp_path, capsys):
    out = tmp_path / "eval.json"
    path = FIXTURES / "files" / "arith.csv"
    assert _eval(model_cache, out, f"data.path={path}") == 0  # evaluating a file means the whole file
    summary = json.loads(out.read_text())
    assert summary["items"] == f"all {summary['n']} rows of data.path='{path}' (split 'train')"
    out.unlink()
    assert _eval(model_cache, out, "data.eval_size=0") == 2
    assert "the eval split is empty: set data.eval_size (reasoning-gym), or data.eval_split" in capsys.readouterr().out
    assert not out.exists()


def test_gpgrl_eval_config_error_exits_2(capsys):
    assert main(["eval", "eval.k=[4]"]) == 2
    assert "each k must be in [1, eval.num_samples=1]" in capsys.readouterr().out
