"""`gpgrl compare`: argument parsing, the run grid on the tiny model, reuse and resume, and the report's numbers."""

import json
import shutil
from pathlib import Path

import pytest

from gpgrl.cli import main
from gpgrl.compare import collect_records, markdown_table, parse_seeds, parse_spec, split_arguments, summarise
from gpgrl.config import ConfigError

REWARDS = Path(__file__).parent / "fixture_rewards.py"


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return ["model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}", f"train.output_dir={tmp_path / 'cmp'}",
            "data.train_size=32", "data.eval_size=6", "rollout.prompts_per_step=2", "rollout.generations_per_prompt=3",
            "rollout.max_new_tokens=6", "eval.max_new_tokens=6", "logging.progress=false", "logging.tensorboard=false",
            "train.max_steps=2", f"reward.functions=[{REWARDS}:has_digit,{REWARDS}:digit_fraction]",
            "reward.weights=[1.0, 0.1]", *extra]


def test_split_arguments_and_seeds():
    compare, rest = split_arguments(["algorithms=gpg,grpo", "seeds=2", "train.max_steps=3"])
    assert compare == {"algorithms": "gpg,grpo", "seeds": "2"} and rest == ["train.max_steps=3"]
    assert parse_seeds("3", first=5) == (5, 6, 7)
    assert parse_seeds("0,4", first=5) == (0, 4)
    for bad in ("0", "-1", "x", "1,1"):
        with pytest.raises(ConfigError, match="seeds="):
            parse_seeds(bad, first=0)


@pytest.mark.parametrize(("args", "message"), [
    (["seeds=2"], "needs algorithms="),
    (["algorithms=gpg,nope"], "nope"),
    (["algorithms=gpg,gpg"], "distinct"),
    (["algorithms=gpg", "steps=3"], "unknown compare argument 'steps'"),
    (["algorithms=gpg", "train.max_steps=-1"], "train.max_steps"),
])
def test_bad_arguments_fail_before_anything_runs(tmp_path, args, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(None, [*args, f"train.output_dir={tmp_path}"])
    assert not any(tmp_path.iterdir())


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["compare", "seeds=2", f"train.output_dir={tmp_path}"]) == 2
    assert "algorithms=" in capsys.readouterr().out


def test_compare_runs_the_grid_reports_and_reuses(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "algorithms=gpg,grpo", "seeds=2", *_args(tmp_path)]) == 0
    for algo in ("gpg", "grpo"):
        for seed in (0, 1):
            assert (out / "runs" / algo / f"seed{seed}" / "summary.json").is_file()
    for name in ("comparison.md", "comparison.json", "comparison.png", "baseline/seed0.json", "baseline/seed1.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "comparison.json").read_text())
    runs = report["runs"]
    assert [(r["algorithm"], r["seed"]) for r in runs] == [("gpg", 0), ("gpg", 1), ("grpo", 0), ("grpo", 1)]
    for seed in (0, 1):  # the untrained model is the same for every algorithm of a seed
        assert len({r["accuracy_before"] for r in runs if r["seed"] == seed}) == 1
    for r in runs:
        metrics = [json.loads(x) for x in (out / "runs" / r["algorithm"] / f"seed{r['seed']}" / "metrics.jsonl")
                   .read_text().splitlines()]
        assert r["reward_curve"] == [m["reward_mean_sampled"] for m in metrics]
        assert r["generated_tokens"] == sum(m["generated_tokens"] for m in metrics)
        assert 0.0 <= r["informative_fraction"] <= 1.0
    table = (out / "comparison.md").read_text()
    assert "| gpg | 2 |" in table and "| grpo | 2 |" in table
    # same data order per seed: both algorithms saw the same prompts at step 1 (first completions logged)
    first = {a: json.loads((out / "runs" / a / "seed0" / "completions.jsonl").read_text().splitlines()[0])["question"]
             for a in ("gpg", "grpo")}
    assert first["gpg"] == first["grpo"]
    stamp = (out / "runs" / "gpg" / "seed0" / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["compare", "algorithms=gpg,grpo", "seeds=2", *_args(tmp_path)]) == 0
    assert "reused" in capsys.readouterr().out
    assert (out / "runs" / "gpg" / "seed0" / "summary.json").stat().st_mtime_ns == stamp
    assert not list((out / "runs").glob("*/seed*/checkpoint-*"))  # finished runs keep no checkpoints


def test_crashed_run_is_resumed_and_a_changed_config_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    crash = ["algorithms=gpg-alpha", *_args(tmp_path, "data.eval_size=5", "train.save_every=1",
                                            f"reward.functions=[{REWARDS}:crash_on_second_step]", "reward.weights=[1]")]
    monkeypatch.setenv("GPGRL_TEST_CRASH_FILE", str(tmp_path / "calls"))
    assert main(["compare", *crash]) == 1  # the reward raised at step 2: step 1 was saved
    run = out / "runs" / "gpg-alpha" / "seed0"
    assert (run / "checkpoint-00000001").is_dir() and not (run / "summary.json").exists()
    monkeypatch.delenv("GPGRL_TEST_CRASH_FILE")
    capsys.readouterr()
    assert main(["compare", *crash]) == 0
    printed = capsys.readouterr().out
    assert "(resumed)" in printed and "resumed from" in printed and "step 1 of 2" in printed
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (run / "summary.json").is_file() and not list(run.glob("checkpoint-*"))  # finished: checkpoints gone
    assert main(["compare", *crash, "optim.lr=1e-3"]) == 2
    assert "different config" in capsys.readouterr().out
    # a committed or moved comparison directory is reused from its new place (only small files are needed)
    moved = tmp_path / "moved"
    shutil.copytree(out, moved, ignore=shutil.ignore_patterns("final", "checkpoint-*", "tb"))
    assert main(["compare", *crash, f"train.output_dir={moved}"]) == 0
    assert "reused" in capsys.readouterr().out and (moved / "comparison.md").is_file()


def _write_run(root: Path, name: str, seed: int, acc: float, rewards: list[float]) -> None:
    d = root / "runs" / name / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"accuracy_before": 0.1, "accuracy_after": acc, "wall_time_s": 9}))
    rows = [{"step": i + 1, "reward_mean": r, "valid_groups_found": 3, "prompts_drawn": 4, "alpha": 1.5,
             "has_signal": 1, "generated_tokens": 100, "step_time_s": 2.0} for i, r in enumerate(rewards)]
    rows.append({"step": len(rows) + 1, "reward_mean": 0.0, "valid_groups_found": 0, "prompts_drawn": 4,
                 "alpha": 0.0, "has_signal": 0, "generated_tokens": 100, "step_time_s": 1.0})  # no signal: no update
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_numbers_by_hand_and_external_runs(tmp_path):
    _write_run(tmp_path, "gpg", 0, 0.3, [0.3, 0.6])  # + a third step with reward 0 and no update
    _write_run(tmp_path, "gpg", 1, 0.5, [0.6, 0.9])
    _write_run(tmp_path, "trl-grpo", 0, 0.2, [0.1, 0.1])  # a run gpgrl compare did not ask for is reported too
    (tmp_path / "runs" / "grpo" / "seed0").mkdir(parents=True)
    (tmp_path / "runs" / "grpo" / "seed0" / "failed.json").write_text('{"error": "diverged"}')
    rows = {r["algorithm"]: r for r in summarise(collect_records(tmp_path, ["gpg", "grpo"]))}
    assert list(rows) == ["gpg", "grpo", "trl-grpo"]
    gpg = rows["gpg"]
    assert gpg["seeds"] == 2 and gpg["accuracy_after"] == pytest.approx((0.4, 0.1414213562))  # stdev of 0.3, 0.5
    assert gpg["reward_auc"] == pytest.approx((0.4, 0.1414213562))  # per-run means (0.3+0.6+0)/3 and 0.5
    assert gpg["accuracy_gain"] == pytest.approx((0.3, 0.1414213562))
    assert gpg["informative_fraction"] == pytest.approx((0.5, 0.0))  # 6 of 12 groups
    assert gpg["alpha_mean"] == pytest.approx((1.5, 0.0))  # the step without an update does not count
    assert gpg["train_time_s"] == pytest.approx((5.0, 0.0)) and gpg["wall_time_s"] == pytest.approx((5.0, 0.0))
    assert rows["grpo"]["seeds"] == 0 and rows["grpo"]["diverged"] == 1
    table = markdown_table(list(rows.values()))
    assert ("| gpg | 2 | 0.100 ± 0.000 | 0.400 ± 0.141 | 0.300 ± 0.141 | 0.400 ± 0.141 | 0.50 ± 0.00 | "
            "1.50 ± 0.00 |") in table
    assert "| grpo | 0 (+1 diverged) | – |" in table


def test_compare_runs_vision_language_models(tmp_path):
    """The same grid on the tiny VLM and a shapes task: every run evaluates with images and the report is written."""
    args = ["model.name=tiny-random-qwen2-vl", f"model.cache_dir={tmp_path / 'cache'}",
            f"train.output_dir={tmp_path / 'cmp'}", "data.source=shapes", "data.task=color", "data.train_size=16",
            "data.eval_size=4", 'data.prompt_template="{question}"', "rollout.prompts_per_step=2",
            "rollout.generations_per_prompt=3", "rollout.max_new_tokens=4", "eval.max_new_tokens=4",
            "logging.progress=false", "logging.tensorboard=false", "train.max_steps=2",
            f"reward.functions=[{REWARDS}:digit_fraction,label]", "reward.weights=[1.0,1.0]",
            "reward.kwargs.label.mention=true", "eval.blank_control=true"]
    assert main(["compare", "algorithms=gpg,grpo", "seeds=1", *args]) == 0
    report = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert {r["algorithm"] for r in report["runs"]} == {"gpg", "grpo"}
    assert (tmp_path / "cmp" / "runs" / "gpg" / "seed0" / "eval_after_blank.json").is_file()
