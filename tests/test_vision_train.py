"""Vision-language training end to end on the tiny VLM: a run with evaluations and blank-image controls, exact
resume after SIGKILL, `gpgrl eval` on an image file, and the errors a text model or a bad image gives."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from gpgrl.checkpoint import latest_checkpoint
from gpgrl.cli import main

REWARDS = Path(__file__).parent / "fixture_rewards.py"


def _args(tmp_path: Path, out: Path, *overrides: str) -> list[str]:
    return ["train", "model.name=tiny-random-qwen2-vl", f"model.cache_dir={tmp_path / 'cache'}",
            f"train.output_dir={out}", "data.source=shapes", "data.task=color", "data.train_size=48",
            "data.eval_size=6", 'data.prompt_template="{question}"', "data.system_prompt=",
            "rollout.prompts_per_step=4", "rollout.generations_per_prompt=4", "rollout.max_new_tokens=6",
            "eval.max_new_tokens=6",
            "logging.progress=false", "optim.lr=1e-3", "optim.vision_lr=3e-3", "algorithm.beta_th=0",
            f"reward.functions=[{REWARDS}:digit_fraction,label]", "reward.weights=[1.0,1.0]",
            "reward.kwargs.label.mention=true", *overrides]


def _steps(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_vision_run_trains_evaluates_with_blank_controls_and_saves(tmp_path):
    out = tmp_path / "run"
    assert main(_args(tmp_path, out, "train.max_steps=2", "eval.blank_control=true", "rollout.shared_prefill=true",
                      "rollout.shared_prompt_forward=true", "logging.sample_completions=100")) == 0
    for name in ("eval_before.json", "eval_before_blank.json", "eval_after.json", "eval_after_blank.json",
                 "final/config.json", "final/processor_config.json", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert {"accuracy_before", "accuracy_after", "accuracy_before_blank", "accuracy_after_blank"} <= summary.keys()
    after = json.loads((out / "eval_after.json").read_text())
    assert after["n"] == 6 and "reward_invalid" in after
    steps = _steps(out)
    assert [m["step"] for m in steps] == [1, 2] and all("reward/label" in m for m in steps)
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert {r["question"].split("?")[0] for r in rows} == {"What color is the shape"}
    model = AutoModelForImageTextToText.from_pretrained(out / "final")
    assert model.config.model_type == "qwen2_vl"
    evaluated = tmp_path / "eval.json"
    assert main(["eval", f"model.name={out / 'final'}", "data.source=shapes", "data.task=color", "data.eval_size=4",
                 'data.prompt_template="{question}"', "eval.max_new_tokens=4", "eval.blank_control=true",
                 f"eval.output={evaluated}"]) == 0
    assert json.loads(evaluated.read_text())["n"] == 4 and (tmp_path / "eval_blank.json").is_file()


def test_a_vision_run_killed_with_sigkill_and_resumed_equals_an_uninterrupted_one(tmp_path):
    common = ("train.max_steps=5", "train.save_every=1", "eval.before=false", "eval.after=false")
    reference = tmp_path / "reference"
    assert main(_args(tmp_path, reference, *common)) == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "gpgrl", *_args(tmp_path, out, *common)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while latest_checkpoint(out) is None or latest_checkpoint(out).name < "checkpoint-00000002":
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(_args(tmp_path, out, *common, "train.resume=true")) == 0
    a = AutoModelForImageTextToText.from_pretrained(reference / "final").state_dict()
    b = AutoModelForImageTextToText.from_pretrained(out / "final").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    assert [m["reward_mean"] for m in _steps(out)] == [m["reward_mean"] for m in _steps(reference)]
    assert [m["step"] for m in _steps(out)] == [1, 2, 3, 4, 5]


def test_eval_on_an_image_file_scores_labels_and_boxes(tmp_path):
    folder = tmp_path / "data"
    (folder / "imgs").mkdir(parents=True)
    rows = []
    for i, color in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (56, 56), color).save(folder / "imgs" / f"{i}.png")
        rows.append({"question": "Name the colour.", "answer": color, "image": f"imgs/{i}.png", "kind": "solid"})
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval.json"
    common = ["eval", "model.name=tiny-random-qwen2-vl", f"model.cache_dir={tmp_path / 'cache'}",
              f"data.path={path}", "data.eval_split=1.0", 'data.prompt_template="{question}"', "eval.max_new_tokens=4",
              "data.group_column=kind", f"eval.output={out}"]
    assert main([*common, "eval.scorer=label", "eval.blank_control=true"]) == 0
    summary = json.loads(out.read_text())
    assert summary["n"] == 3 and 0.0 <= summary["accuracy"] <= 1.0
    assert json.loads((tmp_path / "eval_blank.json").read_text())["n"] == 3
    boxes = folder / "boxes.jsonl"
    boxes.write_text("".join(json.dumps({**r, "answer": [0, 0, 28, 28]}) + "\n" for r in rows))
    assert main([*common[:3], f"data.path={boxes}", *common[4:], "eval.scorer=iou"]) == 0
    summary = json.loads(out.read_text())
    assert "mean_iou" in summary and 0.0 <= summary["mean_iou"] <= 1.0


def test_images_with_a_text_model_and_a_blank_control_without_images_are_refused(tmp_path, capsys):
    args = _args(tmp_path, tmp_path / "r", "train.max_steps=1")
    args[1] = "model.name=tiny-random"
    assert main(args) == 2
    assert "have images" in capsys.readouterr().out
    text = ["train", "model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}",
            f"train.output_dir={tmp_path / 't'}", "data.train_size=16", "data.eval_size=2", "train.max_steps=1",
            "eval.blank_control=true", "logging.progress=false"]
    assert main(text) == 2
    assert "eval.blank_control=true replaces the items' images, but these items have none" in capsys.readouterr().out


@pytest.mark.slow
def test_the_vision_demo_recipe_runs_two_steps(tmp_path):
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "vision.yaml"
    out = tmp_path / "demo"
    assert main(["train", "--config", str(recipe), f"train.output_dir={out}", "train.max_steps=2",
                 "data.eval_size=8"]) == 0
    steps = _steps(out)
    assert [m["step"] for m in steps] == [1, 2] and all(m["finite"] for m in steps)
    assert json.loads((out / "eval_after_blank.json").read_text())["n"] == 8
