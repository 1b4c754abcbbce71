"""Two processes (gloo, through `accelerate launch --multi_gpu`) give the same run as one process.

Both runs are subprocesses with one thread per process, so matrix kernels reduce in the same order.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

REWARDS = Path(__file__).parent / "fixture_rewards.py"
ACCELERATE = Path(sys.executable).parent / "accelerate"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(tmp_path: Path, name: str, processes: int, *overrides: str) -> Path:
    out = tmp_path / name
    args = ["train", "model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}", f"train.output_dir={out}",
            "data.train_size=64", "data.eval_size=4", "rollout.prompts_per_step=4", "rollout.generations_per_prompt=4",
            "rollout.max_new_tokens=8", "rollout.generation_batch_size=8", "rollout.micro_batch_size=4",
            "logging.progress=false", "optim.lr=1e-3", "eval.before=false", "eval.after=false",
            f"reward.functions={REWARDS}:has_digit", "reward.weights=[1.0]",
            # DDP trains with the plain forward; one process would share prompts, equal only up to float rounding
            "rollout.shared_prompt_forward=false", *overrides]
    launcher = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    cmd = [*launcher, "-m", "gpgrl", *args] if processes > 1 else [sys.executable, "-m", "gpgrl", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _steps(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("preset", ["gpg", "grpo"])
def test_two_processes_equal_one(tmp_path, preset):
    one = _run(tmp_path, "one", 1, "train.max_steps=3", f"algorithm.name={preset}")
    two = _run(tmp_path, "two", 2, "train.max_steps=3", f"algorithm.name={preset}")
    s1, s2 = _steps(one), _steps(two)
    assert [m["step"] for m in s2] == [1, 2, 3]  # the main process alone writes the log
    assert (s1[0]["processes"], s2[0]["processes"]) == (1, 2)
    for key in ("reward_mean", "alpha", "valid_group_fraction", "rounds", "degenerate_groups", "generated_tokens"):
        assert [m[key] for m in s2] == [m[key] for m in s1], key
    assert [m["loss"] for m in s2] == pytest.approx([m["loss"] for m in s1], abs=1e-5)
    w1 = AutoModelForCausalLM.from_pretrained(one / "final").state_dict()
    w2 = AutoModelForCausalLM.from_pretrained(two / "final").state_dict()
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5, rtol=0) for k in w1)
    assert not (two / "final").with_name("final-1").exists()


def test_two_process_run_killed_then_resumed_equals_uninterrupted(tmp_path):
    import signal
    import time

    reference = _run(tmp_path, "reference", 2, "train.max_steps=4", "train.save_every=1")
    out = tmp_path / "killed"
    args = ["train", "model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}", f"train.output_dir={out}",
            "data.train_size=64", "data.eval_size=4", "rollout.prompts_per_step=4", "rollout.generations_per_prompt=4",
            "rollout.max_new_tokens=8", "rollout.generation_batch_size=8", "rollout.micro_batch_size=4",
            "logging.progress=false", "optim.lr=1e-3", "eval.before=false", "eval.after=false",
            f"reward.functions={REWARDS}:has_digit", "reward.weights=[1.0]", "train.max_steps=4", "train.save_every=1",
            "rollout.shared_prompt_forward=false"]
    cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "gpgrl", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (out / "checkpoint-00000002" / "complete.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers, at once
    proc.wait()
    _run(tmp_path, "killed", 2, "train.max_steps=4", "train.save_every=1", "train.resume=true")
    s1, s2 = _steps(reference), _steps(out)
    assert [m["step"] for m in s2] == [1, 2, 3, 4]
    assert [m["reward_mean"] for m in s2] == [m["reward_mean"] for m in s1]
    w1 = AutoModelForCausalLM.from_pretrained(reference / "final").state_dict()
    w2 = AutoModelForCausalLM.from_pretrained(out / "final").state_dict()
    assert all(torch.allclose(w1[k], w2[k], atol=1e-6, rtol=0) for k in w1)


@pytest.mark.parametrize("engine", ["FSDP", "DEEPSPEED", "MEGATRON_LM"])
def test_sharded_engines_are_refused_with_the_fix(engine):
    from accelerate.utils import DistributedType

    from gpgrl.config import ConfigError
    from gpgrl.trainer import check_engine

    with pytest.raises(ConfigError, match=f"selects {engine}.*recipes/accelerate/ddp.yaml.*model.lora_r"):
        check_engine(DistributedType(engine))
    for fine in ("NO", "MULTI_CPU", "MULTI_GPU"):
        check_engine(DistributedType(fine))


def test_two_processes_equal_one_for_a_vision_language_model(tmp_path):
    """The tiny VLM's samples carry their prompts' vision inputs through the gather; the gradient all-reduce and
    the resulting weights do not depend on the number of processes."""
    from transformers import AutoModelForImageTextToText

    vision = ("model.name=tiny-random-qwen2-vl", "data.source=shapes", "data.task=count", "data.train_size=32",
              'data.prompt_template="{question}"', "optim.vision_lr=3e-3", "train.max_steps=3")
    one = _run(tmp_path, "one", 1, *vision)
    two = _run(tmp_path, "two", 2, *vision)
    s1, s2 = _steps(one), _steps(two)
    for key in ("reward_mean", "alpha", "valid_group_fraction", "rounds", "generated_tokens"):
        assert [m[key] for m in s2] == [m[key] for m in s1], key
    w1 = AutoModelForImageTextToText.from_pretrained(one / "final").state_dict()
    w2 = AutoModelForImageTextToText.from_pretrained(two / "final").state_dict()
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5, rtol=0) for k in w1)
