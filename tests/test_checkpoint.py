"""Checkpoints, exact resume and fault tolerance, with every fault injected for real on the tiny model."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from gpgrl import checkpoint as ckpt_module
from gpgrl.algos.presets import Algorithm
from gpgrl.checkpoint import LoopState, checkpoint_dirs, latest_checkpoint, load_checkpoint, save_checkpoint
from gpgrl.cli import main

REWARDS = Path(__file__).parent / "fixture_rewards.py"


def _args(tmp_path: Path, out: Path, *overrides: str) -> list[str]:
    return ["train", "model.name=tiny-random", f"model.cache_dir={tmp_path / 'cache'}", f"train.output_dir={out}",
            "data.train_size=64", "data.eval_size=4", "rollout.prompts_per_step=4", "rollout.generations_per_prompt=4",
            "rollout.max_new_tokens=8", "eval.max_new_tokens=8", "logging.progress=false", "optim.lr=1e-3",
            f"reward.functions={REWARDS}:digit_fraction", "reward.weights=[1.0]", "eval.before=false",
            "eval.after=false", *overrides]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(out / "final").state_dict()


def _steps(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6, rtol=0) for k in wa)
    sa, sb = _steps(a), _steps(b)
    assert [m["step"] for m in sb] == [m["step"] for m in sa]  # each step exactly once
    assert [m["reward_mean"] for m in sb] == [m["reward_mean"] for m in sa]  # same samples: RNG and queue restored


# ---------------------------------------------------------------- the checkpoint files


def test_save_is_atomic_and_keeps_the_newest(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, LoopState(step, step * 10, 0, 0), {"x": torch.tensor([step])}, keep=2)
    assert [s for s, _ in checkpoint_dirs(tmp_path)] == [2, 3]
    (tmp_path / "checkpoint-00000009").mkdir()  # no marker: an interrupted save is never picked
    loop, parts = load_checkpoint(latest_checkpoint(tmp_path))
    assert loop == LoopState(3, 30, 0, 0) and parts["x"].tolist() == [3]


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, LoopState(1, 0, 0, 0), {"a": torch.ones(2), "b": torch.ones(2)}, keep=2)

    real_save = torch.save

    def full_disk(obj, path):
        if Path(path).name == "b.pt":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, path)

    monkeypatch.setattr(ckpt_module.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path, LoopState(2, 0, 0, 0), {"a": torch.zeros(2), "b": torch.zeros(2)}, keep=2)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-00000001"]  # no temp dir left behind
    assert load_checkpoint(latest_checkpoint(tmp_path))[1]["a"].tolist() == [1.0, 1.0]


def test_full_disk_during_training_is_a_clear_error(tmp_path, monkeypatch, capsys):
    real_save, calls = torch.save, []

    def fail_second_checkpoint(obj, path):
        calls.append(path)
        if "checkpoint-00000002" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, path)

    monkeypatch.setattr(ckpt_module.torch, "save", fail_second_checkpoint)
    out = tmp_path / "run"
    assert main(_args(tmp_path, out, "train.max_steps=3", "train.save_every=1")) == 1
    text = capsys.readouterr().out
    assert "No space left on device" in text and "checkpoint-00000001 is intact" in text
    assert latest_checkpoint(out).name == "checkpoint-00000001"


# ---------------------------------------------------------------- exact resume


def test_sigkill_at_any_moment_then_resume_gives_the_same_run(tmp_path):
    reference = tmp_path / "reference"
    assert main(_args(tmp_path, reference, "train.max_steps=6", "train.save_every=1")) == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "gpgrl", *_args(tmp_path, out, "train.max_steps=6",
                                                                     "train.save_every=1")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint(out) is None or latest_checkpoint(out).name < "checkpoint-00000003":
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(_args(tmp_path, out, "train.max_steps=6", "train.save_every=1", "train.resume=true")) == 0
    _assert_same_run(reference, out)


def test_sigterm_finishes_the_step_saves_and_says_how_to_resume(tmp_path):
    reference = tmp_path / "reference"
    assert main(_args(tmp_path, reference, "train.max_steps=5", "train.save_every=0")) == 0
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gpgrl", *_args(tmp_path, out, "train.max_steps=5",
                                                                     "train.save_every=0")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "train.resume=true" in output
    stopped_at = load_checkpoint(latest_checkpoint(out))[0].step
    assert 1 <= stopped_at < 5  # save_every=0 saves only at the end, so this one is the signal's
    assert main(_args(tmp_path, out, "train.max_steps=5", "train.save_every=0", "train.resume=true")) == 0
    _assert_same_run(reference, out)


def test_resume_without_checkpoint_starts_at_step_one_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(tmp_path, out, "train.max_steps=1", "train.resume=true")) == 0
    assert "no complete checkpoint" in capsys.readouterr().out
    assert [m["step"] for m in _steps(out)] == [1]


def test_fresh_run_refuses_to_overwrite_a_previous_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(tmp_path, out, "train.max_steps=1")) == 0
    assert main(_args(tmp_path, out, "train.max_steps=1")) == 2
    assert "train.resume=true" in capsys.readouterr().out


# ---------------------------------------------------------------- numerics and failures


def _nan_losses(monkeypatch, bad_calls: set[int]) -> None:
    real, calls = Algorithm.token_loss, [0]

    def token_loss(self, *args, **kwargs):
        calls[0] += 1
        loss, stats = real(self, *args, **kwargs)
        return (loss * float("nan"), stats) if calls[0] in bad_calls else (loss, stats)

    monkeypatch.setattr(Algorithm, "token_loss", token_loss)


def test_a_nan_loss_skips_that_step_only(tmp_path, monkeypatch):
    _nan_losses(monkeypatch, {1})  # the first micro-batch of step 1 (micro-batch 16 >= 16 samples: one per step)
    out = tmp_path / "run"
    assert main(_args(tmp_path, out, "train.max_steps=3")) == 0
    steps = _steps(out)
    assert [m["finite"] for m in steps] == [0, 1, 1]
    # warm-up 2 steps: factor (s+1)/3 for s < 2, then 1. The skipped step does not advance the schedule, so the
    # logged lr is 1/3, 2/3, 1 of 1e-3 (without the skip it would be 2/3, 1, 1).
    assert [m["lr"] for m in steps] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])


def test_nan_steps_in_a_row_stop_with_an_intact_checkpoint(tmp_path, monkeypatch, capsys):
    _nan_losses(monkeypatch, {2, 3})
    out = tmp_path / "run"
    assert main(_args(tmp_path, out, "train.max_steps=6", "train.max_bad_steps=2", "train.save_every=0")) == 1
    assert "2 steps in a row had a non-finite loss" in capsys.readouterr().out
    loop, parts = load_checkpoint(latest_checkpoint(out))
    assert loop.step == 3 and loop.bad_steps_in_a_row == 2
    assert all(torch.isfinite(v).all() for v in parts["model"].values() if v.is_floating_point())


def test_a_reward_that_raises_stops_cleanly_with_the_last_step_saved(tmp_path, capsys):
    counter = tmp_path / "calls.txt"
    reward_file = tmp_path / "flaky.py"
    reward_file.write_text(
        "from pathlib import Path\n"
        f"COUNTER = Path({str(counter)!r})\n"
        "def flaky(prompts, completions, **kw):\n"
        "    n = int(COUNTER.read_text()) + 1 if COUNTER.exists() else 1\n"
        "    COUNTER.write_text(str(n))\n"
        "    if n == 3:\n"
        "        raise RuntimeError('scorer service unavailable')\n"
        "    return [float(len(c) % 3) for c in completions]\n")
    out = tmp_path / "run"
    args = _args(tmp_path, out, "train.max_steps=5", "train.save_every=0", "rollout.max_rounds=1")
    args[args.index(f"reward.functions={REWARDS}:digit_fraction")] = f"reward.functions={reward_file}:flaky"
    assert main(args) == 1
    text = capsys.readouterr().out
    assert "flaky" in text and "scorer service unavailable" in text
    assert load_checkpoint(latest_checkpoint(out))[0].step == 2  # step 3 failed: the state after step 2 is saved


def test_unwritable_output_dir_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(_args(tmp_path, blocker / "run", "train.max_steps=1")) == 2
    assert "is not writable" in capsys.readouterr().out


def test_prompts_longer_than_the_limit_are_dropped_and_counted(tmp_path, capsys):
    assert main(_args(tmp_path, tmp_path / "run", "train.max_steps=1", "rollout.max_prompt_tokens=5")) == 2
    text = capsys.readouterr().out
    assert "longer than rollout.max_prompt_tokens=5" in text and "raise it" in text


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_the_first_signal_is_answered_at_once_and_a_second_aborts():
    from gpgrl.trainer import Aborted, StopSignals

    said = []
    with StopSignals(said.append, lambda: "checkpoint-00000002") as signals:
        signals.step = 3
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.received == signal.SIGINT and said == ["SIGINT: stopping after step 3 (again to abort)"]
        with pytest.raises(Aborted, match="aborted by a second SIGINT during step 3; the newest checkpoint is "
                                          "checkpoint-00000002"):
            os.kill(os.getpid(), signal.SIGINT)
    # the stop is under way: one more signal on the way out is absorbed with a line, then the old handler is back
    os.kill(os.getpid(), signal.SIGINT)
    assert said[-1] == "SIGINT: already stopping after step 3; the newest checkpoint is checkpoint-00000002"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_without_a_signal_the_handlers_are_restored_at_once():
    from gpgrl.trainer import StopSignals

    before = signal.getsignal(signal.SIGTERM)
    with StopSignals(lambda _: None):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_signal_ends_the_command_with_one_line_and_no_traceback(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gpgrl", *_args(tmp_path, out, "train.max_steps=50",
                                                                     "train.save_every=1")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while latest_checkpoint(out) is None:
        assert proc.poll() is None and time.time() < deadline, "the run ended before the signals"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, stdout[-1500:] + stderr[-3000:]
    # the second signal lands during a step (abort) or, when the first came at a step's end, after that step's
    # checkpoint (the clean stop is reported); either way one line and no traceback
    assert "(again to abort)" in stdout
    assert "aborted by a second SIGINT during step" in stdout or "stopped by SIGINT after step" in stdout
    assert "train.resume=true" in stdout and "Traceback" not in stdout + stderr


def test_a_second_signal_after_the_stop_reports_the_stop_without_a_traceback(capsys):
    from rich.console import Console

    from gpgrl.cli import _run_job
    from gpgrl.trainer import Interrupted

    def job():  # the step ended and was saved; a late second SIGINT meets Python's restored default handler
        try:
            raise Interrupted(signal.SIGINT, "stopped by SIGINT after step 3; checkpoint c. Resume with: x")
        finally:
            raise KeyboardInterrupt

    assert _run_job(job, Console(width=200)) == 128 + signal.SIGINT
    assert "stopped by SIGINT after step 3" in capsys.readouterr().out

    def plain():  # a KeyboardInterrupt of anything else is not swallowed
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run_job(plain, Console())


@pytest.mark.parametrize("code, ignored", [(128 + signal.SIGINT, True), (0, False), (1, False)])
def test_the_command_ignores_late_signals_only_after_a_reported_stop(monkeypatch, code, ignored):
    # interpreter shutdown restores SIG_DFL for Python-level handlers but keeps SIG_IGN: the command sets it
    from gpgrl import cli

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(cli, "main", lambda: code)
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.console_main()
        assert exit_.value.code == code
        assert all((signal.getsignal(s) == signal.SIG_IGN) == ignored for s in before)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
