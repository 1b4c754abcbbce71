"""Two DDP processes (gloo, through `accelerate launch --multi_gpu`) give the same run as one process.

Both runs are subprocesses with one thread per process, so matrix kernels reduce in the same order. The sharded
strategies (fsdp2, zero2, zero3) are tested the same way in tests/parallel/."""

import pytest
import torch
from launching import max_weight_difference, run, run_killed_after, steps, updates


@pytest.mark.parametrize("preset", ["gpg", "grpo"])
def test_two_processes_equal_one(tmp_path, preset):
    one = run(tmp_path, "one", 1, "train.max_steps=3", f"algorithm.name={preset}")
    two = run(tmp_path, "two", 2, "train.max_steps=3", f"algorithm.name={preset}")
    s1, s2 = steps(one), steps(two)
    assert [m["step"] for m in s2] == [1, 2, 3]  # the main process alone writes the log
    assert (s1[0]["processes"], s2[0]["processes"]) == (1, 2)
    assert updates(s1) >= 2
    for key in ("reward_mean", "alpha", "valid_group_fraction", "rounds", "degenerate_groups", "generated_tokens"):
        assert [m[key] for m in s2] == [m[key] for m in s1], key
    assert [m["loss"] for m in s2] == pytest.approx([m["loss"] for m in s1], abs=1e-5)
    assert max_weight_difference(one, two) <= 1e-5
    assert not (two / "final").with_name("final-1").exists()


def test_two_process_run_killed_then_resumed_equals_uninterrupted(tmp_path):
    four = ("train.max_steps=4", "train.save_every=1")
    reference = run(tmp_path, "reference", 2, *four)
    out = run_killed_after(tmp_path, "killed", 2, 2, *four)  # the launcher and both workers, at once
    run(tmp_path, "killed", 2, *four, "train.resume=true")
    s1, s2 = steps(reference), steps(out)
    assert [m["step"] for m in s2] == [1, 2, 3, 4]
    assert updates(s2[2:]) >= 1  # the resumed run trained after the checkpoint it came back from
    assert [m["reward_mean"] for m in s2] == [m["reward_mean"] for m in s1]
    assert max_weight_difference(reference, out) <= 1e-6


def test_two_processes_equal_one_for_a_vision_language_model(tmp_path):
    """The tiny VLM's samples carry their prompts' vision inputs through the gather; the gradient all-reduce and
    the resulting weights do not depend on the number of processes."""
    from transformers import AutoModelForImageTextToText

    vision = ("model.name=tiny-random-qwen2-vl", "data.source=shapes", "data.task=count", "data.train_size=32",
              'data.prompt_template="{question}"', "optim.vision_lr=3e-3", "train.max_steps=3")
    one = run(tmp_path, "one", 1, *vision)
    two = run(tmp_path, "two", 2, *vision)
    s1, s2 = steps(one), steps(two)
    assert updates(s1) >= 1
    for key in ("reward_mean", "alpha", "valid_group_fraction", "rounds", "generated_tokens"):
        assert [m[key] for m in s2] == [m[key] for m in s1], key
    assert max_weight_difference(one, two, AutoModelForImageTextToText) <= 1e-5
    assert torch.isfinite(torch.tensor([m["loss"] for m in s2])).all()
