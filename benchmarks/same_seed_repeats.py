"""Run-to-run reproducibility: two same-seed tiny-random runs, repeated, and how often their weights differ.

    .venv/bin/python benchmarks/same_seed_repeats.py [--trials 100] [--out benchmarks/results/same_seed.json]

Each trial trains `tests/test_trainer.py::test_same_seed_same_weights`'s run twice in this process (2 steps of
4 prompts × 4, the default fast paths) and compares the final weights bitwise. Last-bit differences come from
kernels that add in an unordered way on a multi-threaded CPU; they show up in a few per cent of trials, more on
a loaded machine, so one passing test run proves little. Prints `mismatched_trials=K/N` last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_json  # noqa: E402

from gpgrl.cli import main  # noqa: E402

REWARDS = Path(__file__).resolve().parents[1] / "tests" / "fixture_rewards.py"


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(out / "final").state_dict()


def one_run(root: Path) -> Path:
    out = root / "run"
    args = ["train", "model.name=tiny-random", f"model.cache_dir={root / 'cache'}", f"train.output_dir={out}",
            "data.train_size=64", "data.eval_size=8", "rollout.prompts_per_step=4",
            "rollout.generations_per_prompt=4", "rollout.max_new_tokens=12", "eval.max_new_tokens=12",
            "logging.progress=false", "optim.lr=1e-3", "optim.warmup_steps=0", "train.max_steps=2",
            f"reward.functions={REWARDS}:digit_fraction", "reward.weights=[1.0]", "eval.before=false",
            "eval.after=false"]
    if main(args) != 0:
        raise SystemExit(f"the run in {root} failed")
    return out


def max_difference(trial: Path) -> float:
    a, b = (final_weights(one_run(trial / str(i))) for i in range(2))
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    diffs = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in range(args.trials):
            diffs.append(max_difference(Path(tmp) / str(t)))
            print(f"trial {t}: max |Δw| = {diffs[-1]:.3g}", flush=True)
    bad = sum(d > 0 for d in diffs)
    if args.out:
        write_json(args.out, {"machine": machine(), "threads": torch.get_num_threads(), "trials": args.trials,
                              "mismatched": bad, "max_difference": max(diffs)})
    print(f"mismatched_trials={bad}/{args.trials}")


if __name__ == "__main__":
    main_cli()
