"""Launching tiny gpgrl runs as subprocesses: one process, or several through torchrun or accelerate launch.

Every process runs one thread, so matrix kernels reduce in the same order in every run compared."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

REWARDS = Path(__file__).parent / "fixture_rewards.py"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_args(tmp_path: Path, out: Path, *overrides: str) -> list[str]:
    """A tiny-random run of 4 prompts x 4 completions per step."""
    return ["train", "model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}", f"train.output_dir={out}",
            "data.train_size=64", "data.eval_size=4", "rollout.prompts_per_step=4", "rollout.generations_per_prompt=4",
            "rollout.max_new_tokens=8", "rollout.generation_batch_size=8", "rollout.micro_batch_size=4",
            "logging.progress=false", "optim.lr=1e-3", "eval.before=false", "eval.after=false",
            f"reward.functions={REWARDS}:has_digit", "reward.weights=[1.0]",
            # several processes train with the plain forward; one process would share prompts, equal only up to
            # float rounding
            "rollout.shared_prompt_forward=false", *overrides]


def command(processes: int, launcher: str, args: list[str]) -> list[str]:
    """`python -m gpgrl ARGS` on one process; on several through `torchrun`, `accelerate` (launch --multi_gpu) or
    `accelerate:CONFIG_FILE` (launch --config_file CONFIG_FILE)."""
    if launcher.startswith("accelerate:"):
        return [str(BIN / "accelerate"), "launch", "--config_file", launcher.partition(":")[2], "--num_processes",
                str(processes), "--main_process_port", str(free_port()), "-m", "gpgrl", *args]
    if processes == 1:
        return [sys.executable, "-m", "gpgrl", *args]
    if launcher == "torchrun":
        return [str(BIN / "torchrun"), "--nproc_per_node", str(processes), "--master_port", str(free_port()),
                "-m", "gpgrl", *args]
    return [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines",
            "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            "-m", "gpgrl", *args]


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a launcher and every process under it at once. torchrun (and accelerate launch, which runs it) starts
    each worker in a session of its own, so killing the launcher's process group would orphan the workers, which
    then train on and write the run's directory."""
    tree = [psutil.Process(proc.pid)]
    try:
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        pass
    for member in tree:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    _, alive = psutil.wait_procs(tree[1:], timeout=30)
    assert all(_dead(m) for m in alive), f"processes {[m.pid for m in alive]} survived SIGKILL"


def _dead(process: psutil.Process) -> bool:
    """Gone or a zombie (killed, not yet reaped by whoever adopted it)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def run(tmp_path: Path, name: str, processes: int, *overrides: str, launcher: str = "accelerate") -> Path:
    """Train to the end; the run's output directory."""
    out = tmp_path / name
    proc = subprocess.Popen(command(processes, launcher, train_args(tmp_path, out, *overrides)), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        kill_tree(proc)  # the launcher and every worker: a hung collective leaves no orphans
        stdout, stderr = proc.communicate()
        raise AssertionError(f"{name} did not finish in 900 s:\n{stdout[-2000:]}{stderr[-3000:]}") from None
    assert proc.returncode == 0, stdout[-1500:] + stderr[-8000:]  # a worker's traceback precedes torchrun's summary
    return out


def run_killed_after(tmp_path: Path, name: str, processes: int, checkpoint_step: int, *overrides: str,
                     launcher: str = "accelerate") -> Path:
    """Start a run and SIGKILL the launcher and every worker at once when checkpoint `checkpoint_step` is complete."""
    out = tmp_path / name
    proc = subprocess.Popen(command(processes, launcher, train_args(tmp_path, out, *overrides)), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not (out / f"checkpoint-{checkpoint_step:08d}" / "complete.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    kill_tree(proc)
    newest = max(int(path.name.partition("-")[2]) for path in out.glob("checkpoint-*"))
    assert newest == checkpoint_step, f"the run wrote checkpoint {newest} before it was killed"
    return out


def steps(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def updates(metrics: list[dict]) -> int:
    """Steps that changed the weights: a signal, a finite update and a non-zero gradient. Equality tests assert
    some, so that two runs cannot agree merely because neither trained."""
    return sum(bool(m.get("has_signal")) and m["finite"] == 1 and (m.get("grad_norm") or 0) > 0 for m in metrics)


def final_weights(out: Path, loader=None) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return (loader or AutoModelForCausalLM).from_pretrained(out / "final").state_dict()


def max_weight_difference(a: Path, b: Path, loader=None) -> float:
    w1, w2 = final_weights(a, loader), final_weights(b, loader)
    assert w1.keys() == w2.keys()
    return max(float((w1[k] - w2[k]).abs().max()) for k in w1)


def relative_update_difference(initial: Path, a: Path, b: Path, loader=None) -> float:
    """‖Δa − Δb‖ / ‖Δa‖ over all weights, Δ = final − initial. Unlike the largest elementwise difference it is not
    dominated by single entries whose gradient is near Adam's eps, where reduction-order rounding moves the update
    by a visible fraction of the learning rate."""
    from transformers import AutoModelForCausalLM

    w0 = (loader or AutoModelForCausalLM).from_pretrained(initial).state_dict()
    w1, w2 = final_weights(a, loader), final_weights(b, loader)
    d1 = torch.cat([(w1[k] - w0[k]).flatten() for k in sorted(w1)])  # [P]
    d2 = torch.cat([(w2[k] - w0[k]).flatten() for k in sorted(w1)])  # [P]
    return float((d1 - d2).norm() / d1.norm())
