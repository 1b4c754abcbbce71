"""fsdp2, zero2 and zero3 on two CPU processes (torchrun, gloo) give the run of one process (also when the processes
sample different amounts and the main process evaluates alone), resume exactly after SIGKILL, and take the
one-process path through a non-finite step.

A module-scoped one-process run and one 4-step two-process run per strategy are shared by the tests."""

import json
from pathlib import Path

import pytest
from launching import (
    REWARDS,
    max_weight_difference,
    relative_update_difference,
    run,
    run_killed_after,
    steps,
    updates,
)

RECIPES = Path(__file__).parents[2] / "recipes" / "accelerate"
STRATEGIES = ["fsdp2", "zero2", "zero3"]
WEIGHT_TOLERANCE = {"fsdp2": 1e-5, "zero2": 1e-4, "zero3": 1e-4}  # ZeRO's flat partitions reorder the sums
EXACT_KEYS = ("reward_mean", "alpha", "valid_group_fraction", "rounds", "degenerate_groups", "generated_tokens",
              "finite", "lr")
# chunks of 3 and 1 prompts: the two processes sample different amounts (and numbers of decode steps); the main
# process alone evaluates at the end, with the whole model
FOUR_STEPS = ("train.max_steps=4", "train.save_every=1", "rollout.generation_batch_size=12", "eval.after=true")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("parallel")


@pytest.fixture(scope="module")
def one_process(cache):
    return run(cache, "one", 1, *FOUR_STEPS)


@pytest.fixture(scope="module", params=STRATEGIES)
def two_processes(request, cache):
    name = request.param
    return name, run(cache, f"two-{name}", 2, *FOUR_STEPS, f"parallel.strategy={name}", launcher="torchrun")


def test_two_processes_equal_one(one_process, two_processes):
    name, two = two_processes
    s1, s2 = steps(one_process), steps(two)
    assert [m["step"] for m in s2] == [1, 2, 3, 4]
    assert {m["processes"] for m in s2} == {2}
    assert updates(s1) >= 3
    for key in EXACT_KEYS:
        assert [m[key] for m in s2] == [m[key] for m in s1], key
    assert [m["loss"] for m in s2] == pytest.approx([m["loss"] for m in s1], abs=1e-5)
    assert [m["grad_norm"] for m in s2] == pytest.approx([m["grad_norm"] for m in s1], rel=1e-4)
    assert max_weight_difference(one_process, two) <= WEIGHT_TOLERANCE[name]
    assert "strategy: " + name in (two / "config.yaml").read_text()
    evals = [json.loads((out / "eval_after.json").read_text()) for out in (one_process, two)]
    assert evals[0]["accuracy"] == evals[1]["accuracy"] and evals[0]["n"] == evals[1]["n"] == 4


def test_killed_and_resumed_equals_uninterrupted(cache, two_processes):
    name, reference = two_processes
    flag = f"parallel.strategy={name}"
    out = run_killed_after(cache, f"killed-{name}", 2, 2, *FOUR_STEPS, flag, launcher="torchrun")
    run(cache, f"killed-{name}", 2, *FOUR_STEPS, flag, "train.resume=true", launcher="torchrun")
    s1, s2 = steps(reference), steps(out)
    assert [m["step"] for m in s2] == [1, 2, 3, 4]
    assert updates(s2[2:]) >= 1  # the resumed run trained after the checkpoint it came back from
    assert [m["reward_mean"] for m in s2] == [m["reward_mean"] for m in s1]
    assert [m["loss"] for m in s2] == pytest.approx([m["loss"] for m in s1], abs=1e-7)
    assert max_weight_difference(reference, out) <= 1e-6


@pytest.mark.parametrize("name", ["fsdp2", "zero2"])
def test_a_non_finite_step_is_skipped_as_on_one_process(cache, name):
    """Even steps' rewards of 3e38 overflow the loss to inf: the update is skipped (the lr schedule does not
    advance), the engine drops the gradients, and the next step trains on from the same state as one process."""
    reward = f"reward.functions={REWARDS}:overflowing_on_even_steps"
    one = run(cache, f"nan-one-{name}", 1, "train.max_steps=4", "train.max_bad_steps=4", reward)
    two = run(cache, f"nan-two-{name}", 2, "train.max_steps=4", "train.max_bad_steps=4", reward,
              f"parallel.strategy={name}", launcher="torchrun")
    s1, s2 = steps(one), steps(two)
    assert [m["finite"] for m in s2] == [m["finite"] for m in s1] == [1, 0, 1, 0]
    assert [m["lr"] for m in s2] == [m["lr"] for m in s1]
    assert updates(s1) == updates(s2) == 2  # steps 1 and 3 trained
    assert s2[2]["loss"] == pytest.approx(s1[2]["loss"], abs=1e-5)
    assert max_weight_difference(one, two) <= 1e-4


def test_lora_under_fsdp2_equals_one_process(cache):
    lora = ("model.lora_r=4", "train.max_steps=2", "optim.lr=1e-2")
    one = run(cache, "lora-one", 1, *lora)
    two = run(cache, "lora-fsdp2", 2, *lora, "parallel.strategy=fsdp2", launcher="torchrun")
    s1, s2 = steps(one), steps(two)
    assert updates(s1) == 2
    assert [m["loss"] for m in s2] == pytest.approx([m["loss"] for m in s1], abs=1e-5)
    assert max_weight_difference(one, two) <= 1e-5  # final/ holds the merged weights


def test_fsdp2_bf16_mixed_precision_with_cpu_offload_trains(cache, one_process):
    """bf16 compute with fp32 gradient reduction and the sharded state in CPU memory: the run completes with
    finite steps, and its weights are within bf16-sized distance of the fp32 run's."""
    out = run(cache, "fsdp2-bf16", 2, *FOUR_STEPS, "parallel.strategy=fsdp2", "parallel.mixed_precision=bf16",
              "parallel.cpu_offload=true", launcher="torchrun")
    assert all(m["finite"] == 1 for m in steps(out))
    difference = max_weight_difference(one_process, out)
    assert 0 < difference < 5e-2


@pytest.mark.parametrize(("config", "name"), [("fsdp2.yaml", "fsdp2"), ("zero3.yaml", "zero3")])
def test_the_shipped_accelerate_configs_select_their_strategy(cache, one_process, config, name):
    """`accelerate launch --config_file recipes/accelerate/<config>` runs gpgrl's own strategy of that name."""
    launcher = f"accelerate:{RECIPES / config}"
    out = run(cache, f"accelerate-{name}", 2, "train.max_steps=2", "rollout.generation_batch_size=12",
              launcher=launcher)
    assert f"strategy: {name}" in (out / "config.yaml").read_text()
    s1, s2 = steps(one_process)[:2], steps(out)
    assert updates(s2) == 2
    assert [m["reward_mean"] for m in s2] == [m["reward_mean"] for m in s1]
    assert [m["loss"] for m in s2] == pytest.approx([m["loss"] for m in s1], abs=1e-5)


def test_fsdp2_with_gradient_checkpointing_equals_one_process(cache):
    checkpointed = ("model.gradient_checkpointing=true", "train.max_steps=2")
    one = run(cache, "ckpt-one", 1, *checkpointed)
    two = run(cache, "ckpt-fsdp2", 2, *checkpointed, "parallel.strategy=fsdp2", launcher="torchrun")
    assert updates(steps(two)) == 2
    assert [m["loss"] for m in steps(two)] == pytest.approx([m["loss"] for m in steps(one)], abs=1e-5)
    assert max_weight_difference(one, two) <= 1e-5


@pytest.mark.parametrize("name", ["fsdp2", "zero3"])
def test_a_vision_language_model_under_sharding_equals_one_process(cache, name):
    """The tiny Qwen2-VL's vision blocks are sharded too (fsdp2: its `_no_split_modules`; zero3: every
    parameter) and gathered for generation with the images."""
    from transformers import AutoModelForImageTextToText

    vision = ("model.name=tiny-random-qwen2-vl", "data.source=shapes", "data.task=count", "data.train_size=32",
              'data.prompt_template="{question}"', "optim.vision_lr=3e-3", "train.max_steps=2",
              "rollout.generation_batch_size=12")
    one = cache / "vlm-one"
    if not (one / "final").exists():
        run(cache, "vlm-one", 1, *vision)
    two = run(cache, f"vlm-{name}", 2, *vision, f"parallel.strategy={name}", launcher="torchrun")
    assert updates(steps(two)) >= 1
    assert [m["reward_mean"] for m in steps(two)] == [m["reward_mean"] for m in steps(one)]
    assert [m["loss"] for m in steps(two)] == pytest.approx([m["loss"] for m in steps(one)], abs=1e-5)
    # one entry of 211,712 (a gradient near Adam's eps) moved 1.9e-5 apart under fsdp2 (measured; the other 56
    # tensors <= 5e-7): bound the whole update's relative difference tightly and single entries at 5 % of the lr
    initial = next((cache / "cache").glob("tiny-random-qwen2-vl*"))
    assert relative_update_difference(initial, one, two, AutoModelForImageTextToText) <= 1e-4
    assert max_weight_difference(one, two, AutoModelForImageTextToText) <= 5e-5
