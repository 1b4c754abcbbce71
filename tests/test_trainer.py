"""End to end on the tiny random model: outputs, parameter updates, α bookkeeping, resampling, reload."""

import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from gpgrl.cli import main
from gpgrl.config import OPTIMIZERS as CONFIG_OPTIMIZERS
from gpgrl.config import ModelConfig
from gpgrl.models import resolve_model_source
from gpgrl.trainer import OPTIMIZERS, clipping

REWARDS = Path(__file__).parent / "fixture_rewards.py"
METRIC_KEYS = {"step", "reward_mean", "alpha", "valid_group_fraction", "step_time_s", "tokens", "rounds",
               "time_generate_s", "time_reward_s", "time_train_s", "time_push_s", "tokens_per_s", "work_saved_fraction",
               "peak_memory_mib"}


def _train(tmp_path: Path, *overrides: str) -> Path:
    out = tmp_path / "run"
    args = ["train", "model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}", f"train.output_dir={out}",
            "data.train_size=64", "data.eval_size=8", "rollout.prompts_per_step=4",
            "rollout.generations_per_prompt=4", "rollout.max_new_tokens=12", "eval.max_new_tokens=12",
            "logging.progress=false", "optim.lr=1e-3", "optim.warmup_steps=0", *overrides]
    assert main(args) == 0
    return out


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_train_writes_everything_and_updates_parameters(tmp_path):
    out = _train(tmp_path, "train.max_steps=3", f"reward.functions={REWARDS}:digit_fraction,accuracy",
                 "reward.weights=[1.0, 0.0]", "logging.sample_completions=100")
    for name in ("config.yaml", "metrics.jsonl", "completions.jsonl", "eval_before.json", "eval_after.json",
                 "final/README.md", "final/config.json", "summary.json"):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    metrics = _records(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(METRIC_KEYS <= m.keys() for m in metrics)
    assert all("reward/accuracy" in m and "reward/digit_fraction" in m for m in metrics)
    for name in ("eval_before.json", "eval_after.json"):
        assert json.loads((out / name).read_text()).keys() >= {"accuracy", "n"}
    initial = AutoModelForCausalLM.from_pretrained(resolve_model_source(
        ModelConfig(name="tiny-random", cache_dir=str(tmp_path / "cache"))))
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    before, after = _params(initial), _params(final)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), "every parameter tensor should move with lr 1e-3"
    assert "gpg" in (out / "final" / "README.md").read_text()


def test_alpha_and_valid_fraction_agree_with_rewards(tmp_path):
    """M is recounted here from the raw per-completion rewards, independently of the trainer."""
    out = _train(tmp_path, "train.max_steps=3", "algorithm.name=gpg-alpha", f"reward.functions={REWARDS}:has_digit",
                 "reward.weights=[1.0]", "logging.sample_completions=1000", "eval.before=false", "eval.after=false")
    rewards = defaultdict(list)
    for row in _records(out / "completions.jsonl"):
        rewards[(row["step"], row["group"])].append(row["reward"])
    for m in _records(out / "metrics.jsonl"):
        groups = [r for (step, _), r in rewards.items() if step == m["step"]]
        degenerate = sum(max(r) == min(r) for r in groups)
        assert len(groups) == 4
        assert m["valid_group_fraction"] == pytest.approx((4 - degenerate) / 4)
        expected_alpha = 4 / (4 - degenerate) if degenerate < 4 else 0.0  # B/(B-M) with G=4 per group
        assert m["alpha"] == pytest.approx(expected_alpha)
        assert m["work_saved_fraction"] >= degenerate / 4  # degenerate groups never reach forward/backward
        # one round (no resampling): everything sampled is the batch, so the two reward means agree with the raw ones
        raw = [x for r in groups for x in r]
        assert m["rounds"] == 1 and m["reward_mean_sampled"] == pytest.approx(sum(raw) / len(raw))
        assert m["reward_mean"] == pytest.approx(sum(raw) / len(raw))


def test_micro_batch_alpha_is_counted_per_window_of_groups(tmp_path):
    """gpg-ref-microbatch: α per window of 2 groups (recounted here from the raw rewards), logged as the mean over
    the windows with signal; the computational micro-batch size does not matter."""
    out = _train(tmp_path, "train.max_steps=3", "algorithm.name=gpg-ref-microbatch", "algorithm.beta_th=0",
                 f"reward.functions={REWARDS}:has_digit", "reward.weights=[1.0]", "logging.sample_completions=1000",
                 "rollout.micro_batch_size=3", "eval.before=false", "eval.after=false")
    rewards = defaultdict(list)
    for row in _records(out / "completions.jsonl"):
        rewards[(row["step"], row["group"])].append(row["reward"])
    metrics = _records(out / "metrics.jsonl")
    assert any(m["alpha"] not in (0.0, 1.0, 2.0) for m in metrics), "no step with unequal window α: nothing tested"
    for m in metrics:
        alphas = []
        for window in ((0, 1), (2, 3)):
            degenerate = sum(max(rewards[m["step"], g]) == min(rewards[m["step"], g]) for g in window)
            alphas += [2 / (2 - degenerate)] if degenerate < 2 else []
        assert m["has_signal"] == int(bool(alphas))
        assert m["alpha"] == pytest.approx(sum(alphas) / len(alphas) if alphas else 0.0)


def test_response_prefix_is_prompted_and_scored(tmp_path):
    """data.response_prefix "A7": every scored reply then holds a digit, so has_digit makes every group
    degenerate (no update), and completions.jsonl shows the replies as scored."""
    out = _train(tmp_path, "train.max_steps=1", "data.response_prefix=A7", f"reward.functions={REWARDS}:has_digit",
                 "reward.weights=[1.0]", "logging.sample_completions=100", "rollout.max_rounds=1",
                 "eval.before=false", "eval.after=false")
    rows = _records(out / "completions.jsonl")
    assert rows and all(r["completion"].startswith("A7") and r["reward"] == 1.0 for r in rows)
    (m,) = _records(out / "metrics.jsonl")
    assert m["has_signal"] == 0 and m["valid_group_fraction"] == 0.0


def test_homogeneous_rewards_resample_then_skip(tmp_path):
    out = _train(tmp_path, "train.max_steps=2", f"reward.functions={REWARDS}:constant", "reward.weights=[1.0]",
                 "rollout.max_rounds=3", "eval.before=false", "eval.after=false")
    for m in _records(out / "metrics.jsonl"):
        assert m["rounds"] == 3 and m["prompts_drawn"] == 12 and m["budget_exhausted"] == 1
        assert m["has_signal"] == 0 and m["alpha"] == 0.0 and m["valid_group_fraction"] == 0.0
        assert m["reward_mean_sampled"] == 1.0  # the mean over all 3 rounds of a constant reward
    initial = AutoModelForCausalLM.from_pretrained(resolve_model_source(
        ModelConfig(name="tiny-random", cache_dir=str(tmp_path / "cache"))))
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    assert all(torch.equal(a, b) for a, b in zip(_params(initial).values(), _params(final).values(), strict=True))


@pytest.mark.parametrize("preset", ["grpo", "dapo", "rloo", "reinforce_pp_baseline", "dr_grpo"])
def test_baseline_presets_train(tmp_path, preset):
    out = _train(tmp_path, "train.max_steps=1", f"algorithm.name={preset}",
                 f"reward.functions={REWARDS}:digit_fraction", "reward.weights=[1.0]", "eval.before=false",
                 "eval.after=false", "rollout.max_rounds=2")
    (m,) = _records(out / "metrics.jsonl")
    assert m["has_signal"] == 1 and m["grad_norm"] > 0
    assert m["clipped"] == int(m["grad_norm"] > 1.0)  # optim.max_grad_norm = 1 by default
    assert m["clip_factor"] == pytest.approx(min(1.0, 1.0 / m["grad_norm"]))


def test_plain_sgd_is_used(tmp_path):
    out = _train(tmp_path, "train.max_steps=2", "train.save_every=1", "optim.optimizer=sgd",
                 "optim.max_grad_norm=0", f"reward.functions={REWARDS}:digit_fraction", "reward.weights=[1.0]",
                 "eval.before=false", "eval.after=false")
    state = torch.load(out / "checkpoint-00000002" / "optimizer.pt", weights_only=False)
    assert [g["momentum"] for g in state["param_groups"]] == [0.0]
    assert not any("exp_avg" in s for s in state["state"].values())  # no Adam moments: plain SGD
    assert {m["clipped"] for m in _records(out / "metrics.jsonl")} == {0}  # max_grad_norm = 0: never clipped
    assert set(OPTIMIZERS) == set(CONFIG_OPTIMIZERS)


def test_clipping_reports_the_factor_it_scaled_the_gradient_by():
    assert clipping(4.0, 1.0) == {"clipped": 1, "clip_factor": 0.25}
    assert clipping(1.0, 1.0) == {"clipped": 0, "clip_factor": 1.0}  # at the bound nothing is scaled
    assert clipping(4.0, 0.0) == {"clipped": 0, "clip_factor": 1.0}  # 0 = no clipping
    assert clipping(float("nan"), 1.0) == {"clipped": 0, "clip_factor": 1.0}  # a skipped step: no update


def test_lora_run_saves_a_merged_model(tmp_path):
    out = _train(tmp_path, "train.max_steps=1", "model.lora_r=4", f"reward.functions={REWARDS}:digit_fraction",
                 "reward.weights=[1.0]", "eval.before=false", "eval.after=false")
    assert AutoModelForCausalLM.from_pretrained(out / "final") is not None
    assert not (out / "final" / "adapter_config.json").exists()


def test_same_seed_same_weights(tmp_path):
    outs = [_train(tmp_path / str(i), "train.max_steps=2", f"reward.functions={REWARDS}:digit_fraction",
                   "reward.weights=[1.0]", "eval.before=false", "eval.after=false") for i in range(2)]
    a, b = (_params(AutoModelForCausalLM.from_pretrained(out / "final")) for out in outs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = [_records(out / "metrics.jsonl") for out in outs]
    assert all(m["grad_norm"] > 0 for m in metrics[0])  # both steps updated: the equality compares trained weights
    assert [m["reward_mean"] for m in metrics[0]] == [m["reward_mean"] for m in metrics[1]]


def test_data_error_is_reported_cleanly(tmp_path, capsys):
    assert main(["train", "model.name=tiny-random", f"train.output_dir={tmp_path}", "data.task=basic_arithmetc",
                 "logging.progress=false"]) == 2
    assert "basic_arithmetic" in capsys.readouterr().out


def test_config_error_exits_2_before_loading(tmp_path, capsys):
    assert main(["train", "train.max_step=1"]) == 2
    assert "did you mean 'max_steps'" in capsys.readouterr().out


@pytest.mark.slow
def test_real_default_two_steps(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "train.max_steps=2", f"train.output_dir={out}", "data.eval_size=8",
                 "logging.progress=false"]) == 0
    metrics = _records(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert json.loads((out / "eval_after.json").read_text())["n"] == 8


def test_final_has_a_hub_model_card_and_a_log_file_gets_lines_not_progress_frames(tmp_path):
    """Run as `make demo > log` would be: stdout and stderr are files, not terminals."""
    import subprocess
    import sys

    import yaml

    out = tmp_path / "run"
    args = ["model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}", f"train.output_dir={out}",
            "data.train_size=32", "data.eval_size=2", "rollout.prompts_per_step=2", "rollout.generations_per_prompt=2",
            "rollout.max_new_tokens=4", "eval.max_new_tokens=4", "train.max_steps=2"]
    done = subprocess.run([sys.executable, "-m", "gpgrl", "train", *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout + done.stderr
    assert "\r" not in log  # no carriage-return progress frames
    assert "building the built-in model 'tiny-random'" in log and "loading model 'tiny-random' (text)" in log
    steps = [line for line in done.stdout.splitlines() if line.startswith("step ") and "s/step" in line]
    assert [line.split()[1] for line in steps] == ["1/2", "2/2"]
    assert all(k in steps[0] for k in ("ETA", "reward", "accuracy", "α", "informative")), steps[0]
    card = (out / "final" / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert {"gpgrl", "gpg", "reinforcement-learning"} <= set(meta["tags"])
    assert meta["pipeline_tag"] == "text-generation" and "base_model" not in meta  # a random test model


def test_card_metadata_names_the_hub_base_model_and_datasets():
    from gpgrl.algos.presets import resolve_algorithm
    from gpgrl.config import build_config
    from gpgrl.trainer import card_metadata

    meta = card_metadata(build_config(), resolve_algorithm("gpg"), vision=False)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "datasets" not in meta
    cfg = build_config({}, ["model.name=Qwen/Qwen2-VL-2B-Instruct", "data.path=openai/gsm8k", "data.subset=main",
                            "algorithm.name=grpo"])
    meta = card_metadata(cfg, resolve_algorithm("grpo"), vision=True)
    assert meta == {"library_name": "transformers", "pipeline_tag": "image-text-to-text",
                    "base_model": "Qwen/Qwen2-VL-2B-Instruct", "datasets": ["openai/gsm8k"],
                    "tags": ["gpgrl", "gpg", "reinforcement-learning", "grpo"]}
