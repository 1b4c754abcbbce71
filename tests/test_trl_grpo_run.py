"""benchmarks/trl_grpo_run.py: a TRL GRPO run on the tiny model, written as a finished gpgrl run and reused."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from gpgrl.compare import collect_records  # noqa: E402
from gpgrl.trainer import lr_lambda  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import trl_grpo_run  # noqa: E402

REWARDS = Path(__file__).parent / "fixture_rewards.py"
STEPS, P, G, MAX_NEW = 2, 2, 3, 6
KEYS = {"step", "reward_mean", "reward_mean_sampled", "valid_groups_found", "prompts_drawn", "generated_tokens",
        "step_time_s"}


def _args(tmp_path: Path) -> list[str]:
    return ["--compare-dir", str(tmp_path / "cmp"), "model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}",
            "data.train_size=32", "data.eval_size=6", f"rollout.prompts_per_step={P}",
            f"rollout.generations_per_prompt={G}", f"rollout.max_new_tokens={MAX_NEW}", "eval.max_new_tokens=6",
            f"train.max_steps={STEPS}", "logging.tensorboard=false",
            f"reward.functions=[{REWARDS}:has_digit,{REWARDS}:digit_fraction]", "reward.weights=[1.0, 0.1]"]


def test_trl_run_is_a_finished_gpgrl_run_and_is_reused(tmp_path, capsys):
    trl_grpo_run.main(_args(tmp_path))
    run = tmp_path / "cmp" / "runs" / "trl-grpo" / "seed0"
    for name in ("metrics.jsonl", "eval_after.json", "eval_after_completions.jsonl", "trl_config.json",
                 "summary.json"):
        assert (run / name).is_file(), name
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    lr, warmup = 2e-5, 2  # the config defaults: gpgrl's warm-up, not HF's (which starts at 0)
    for i, m in enumerate(metrics):
        assert KEYS <= set(m) and "alpha" not in m
        assert m["reward_mean"] == m["reward_mean_sampled"]
        assert m["reward_mean"] == pytest.approx(m["trl/reward"], abs=1e-6)  # TRL trained on gpgrl's totals
        assert m["prompts_drawn"] == P and 0 <= m["valid_groups_found"] <= P
        assert 0 < m["generated_tokens"] <= P * G * MAX_NEW and m["step_time_s"] > 0
        assert m["trl/learning_rate"] == pytest.approx(lr * lr_lambda(warmup, STEPS, "constant")(i))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["algorithm"].startswith("trl-grpo (TRL ") and "beta 0.04" in summary["algorithm"]
    assert summary["steps"] == STEPS and summary["accuracy_before"] is None and summary["eval_n"] == 6
    trl_config = json.loads((run / "trl_config.json").read_text())["grpo_config"]
    assert (trl_config["loss_type"], trl_config["num_generations"], trl_config["per_device_train_batch_size"],
            trl_config["max_completion_length"], trl_config["temperature"], trl_config["shuffle_dataset"]) == \
        ("grpo", G, P * G, MAX_NEW, 0.7, False)

    records = collect_records(tmp_path / "cmp", [])
    assert [(r["algorithm"], r["seed"], r["status"], r["steps"]) for r in records] == [("trl-grpo", 0, "finished", 2)]
    assert records[0]["reward_curve"] == [m["reward_mean"] for m in metrics] and records[0]["alpha_mean"] is None
    assert records[0]["accuracy_after"] == summary["accuracy_after"]

    stamp = (run / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    trl_grpo_run.main(_args(tmp_path))
    assert "reused" in capsys.readouterr().out
    assert (run / "summary.json").stat().st_mtime_ns == stamp


def test_equal_work_checks_reject_a_different_batch(tmp_path):
    from gpgrl.config import load_config

    cfg = load_config(None, [f"rollout.prompts_per_step={P}", f"rollout.generations_per_prompt={G}"])
    texts = [f"prompt {i}" for i in range(2 * P)]
    data = trl_grpo_run.Data(None, str, [], [], list(range(2 * P)), texts, texts[:P])
    log = trl_grpo_run.StepLog(cfg, data, None, set(), tmp_path / "metrics.jsonl")
    log.begin()
    rows = [i for i in range(P) for _ in range(G)]
    assert log.check_batch([texts[i] for i in rows], rows) == rows
    bad = {"size": rows[:-1], "order": sorted(rows, reverse=True), "next step's prompts": [r + P for r in rows]}
    for batch in bad.values():
        with pytest.raises(trl_grpo_run.EqualWorkError, match="equal-work check failed"):
            log.check_batch([texts[i] for i in batch], batch)
    log.out.close()
