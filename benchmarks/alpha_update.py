"""What α = B/(B−M) does to one real update, under each optimizer setting (issue 15, docs/results.md).

A counterfactual on the same state: train `gpg-alpha` for K steps (checkpoint every step), then run step K+1 twice
from checkpoint K, once as `gpg-alpha` and once as `gpg-no-alpha` (settings b: `gpg-ref-microbatch` with
algorithm.alpha samples for the history and the first branch, none for the second). Both resumes restore the
same weights, optimizer moments, data queue and RNG, so they draw the same samples, rewards and advantages; the
two updates of step K+1 differ only by α. Reported per setting: α of that step, the pre-clip gradient norm and
whether clipping bound it, and the update with α against the update without it (norm ratio, cosine, relative
difference). Step K+1 is the first step after --steps at which the history has α ≠ 1 (some groups degenerate,
some informative).

Settings: (a) AdamW + clipping at 1.0 (gpgrl's default), (b) the reference code's per-micro-batch token mean with a
per-micro-step α (`gpg-ref-microbatch`: micro-batches of 1 group, α per 2 groups), with and without clipping,
(c) AdamW without clipping, (d) plain SGD without clipping, (d') plain SGD with clipping at 1.0.

    .venv/bin/python benchmarks/alpha_update.py --config recipes/compare/basic_arithmetic.yaml --steps 3 \\
        --out benchmarks/results/alpha_update_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

GLOBAL = ("gpg-alpha", ["algorithm.name=gpg-alpha"], ["algorithm.name=gpg-no-alpha"], "any")
"""gpgrl's scope: α and the normaliser over the whole step (aggregation group-token-mean)."""
MICRO = ("gpg-ref-microbatch", ["algorithm.name=gpg-ref-microbatch", "algorithm.beta_th=0", "algorithm.alpha=samples"],
         ["algorithm.name=gpg-ref-microbatch", "algorithm.beta_th=0", "algorithm.alpha=none"], "any")
"""The reference's scope: token mean per micro-batch of 1 group, α per micro-step of 2 groups."""
MICRO_MIXED = (*MICRO[:3], "mixed")
"""The same, at a step whose two micro-steps have different α (2 and 1: logged mean 1.5)."""

SETTINGS = {
    "a_adamw_clip1": (GLOBAL, ["optim.optimizer=adamw", "optim.max_grad_norm=1.0"]),
    "b_microbatch_adamw_clip1": (MICRO, ["optim.optimizer=adamw", "optim.max_grad_norm=1.0"]),
    "b_microbatch_adamw_noclip": (MICRO, ["optim.optimizer=adamw", "optim.max_grad_norm=0"]),
    "b_mixed_adamw_clip1": (MICRO_MIXED, ["optim.optimizer=adamw", "optim.max_grad_norm=1.0"]),
    "b_mixed_adamw_noclip": (MICRO_MIXED, ["optim.optimizer=adamw", "optim.max_grad_norm=0"]),
    "b_mixed_sgd_noclip": (MICRO_MIXED, ["optim.optimizer=sgd", "optim.max_grad_norm=0"]),
    "c_adamw_noclip": (GLOBAL, ["optim.optimizer=adamw", "optim.max_grad_norm=0"]),
    "d_sgd_noclip": (GLOBAL, ["optim.optimizer=sgd", "optim.max_grad_norm=0"]),
    "d_sgd_clip1": (GLOBAL, ["optim.optimizer=sgd", "optim.max_grad_norm=1.0"]),
}
"""Setting -> ((name, flags with α, flags without α, which step: any α ≠ 1 | mixed), optimizer flags)."""


def train(config: str, out: Path, *overrides: str) -> None:
    cmd = [sys.executable, "-m", "gpgrl", "train", "--config", config, f"train.output_dir={out}",
           "train.save_every=1", "eval.before=false", "eval.after=false",
           "logging.progress=false", "logging.tensorboard=false", *overrides]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return torch.load(run / f"checkpoint-{step:08d}" / "model.pt", map_location="cpu", weights_only=True)


def flat_update(run: Path, step: int) -> torch.Tensor:
    before, after = weights(run, step - 1), weights(run, step)  # both kept (train.keep_checkpoints=2)
    return torch.cat([(after[k].double() - before[k].double()).flatten() for k in sorted(after)])  # [P]


def last_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def first_informative_step(run: Path, after: int, kind: str = "any") -> int:
    """The first step after `after` of the history run whose α is not 1 (it has degenerate and informative
    groups): there α and no α give different losses. kind "mixed": α not an integer, i.e. (α windows of two
    groups, each with α 1 or 2) windows with α = 2 and with α = 1 in one step, where α changes the update's
    direction."""
    for line in (run / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if m["step"] > after and m.get("has_signal") and m["alpha"] != 1.0 and (
                kind == "any" or m["alpha"] != round(m["alpha"])):
            return m["step"]
    raise SystemExit(f"{run}: no step after {after} with 1 < α ({kind}): pass another --steps or --search")


def one_setting(config: str, work: Path, name: str, arms: tuple, flags: list[str], steps: int, seed: int,
                search: int = 8) -> dict:
    base = work / name / "history"
    shutil.rmtree(work / name, ignore_errors=True)
    common = [f"train.seed={seed}", *flags]
    _, alpha_arm, plain_arm, kind = arms
    train(config, base, *alpha_arm, f"train.max_steps={steps + search}", f"train.keep_checkpoints={steps + search}",
          *common)
    steps = first_informative_step(base, max(steps, 1), kind) - 1  # branch from the checkpoint before it
    updates, records = {}, {}
    for arm, arm_flags in (("alpha", alpha_arm), ("none", plain_arm)):
        branch = work / name / arm
        # the logs and checkpoint K only (1.6 GB each for SmolLM2 in fp32 with AdamW's moments)
        shutil.copytree(base, branch, ignore=lambda d, names: [n for n in names if n.startswith("checkpoint-")
                                                               and n != f"checkpoint-{steps:08d}" or n == "final"])
        train(config, branch, *arm_flags, f"train.max_steps={steps + 1}", "train.resume=true",
              "train.keep_checkpoints=2", *common)
        updates[arm], records[arm] = flat_update(branch, steps + 1), last_metrics(branch)
        shutil.rmtree(branch)
    shutil.rmtree(work / name)
    with_alpha, without = updates["alpha"], updates["none"]
    m_a, m_1 = records["alpha"], records["none"]
    assert m_a["reward_mean"] == m_1["reward_mean"], "the two branches drew different samples"
    if not m_a.get("has_signal"):
        raise SystemExit(f"{name}: step {steps + 1} has no informative group (no update to compare): pass another "
                         "--steps")
    return {
        "setting": name, "preset": arms[0], "flags": flags, "step": steps + 1, "alpha": m_a["alpha"],
        "grad_norm_with_alpha": m_a.get("grad_norm"), "grad_norm_without": m_1.get("grad_norm"),
        "clipped_with_alpha": m_a.get("clipped"), "clipped_without": m_1.get("clipped"),
        "update_norm_ratio": float(with_alpha.norm() / without.norm()),
        "update_cosine": float(torch.nn.functional.cosine_similarity(with_alpha, without, dim=0)),
        "relative_difference": float((with_alpha - without).norm() / without.norm()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="recipes/compare/basic_arithmetic.yaml")
    parser.add_argument("--steps", type=int, default=3, help="history steps before the counterfactual step")
    parser.add_argument("--rerun", default="", help="settings to measure again even if --out holds them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search", type=int, default=8, help="history steps after --steps searched for one with α ≠ 1")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--work", default="runs/alpha_update")
    parser.add_argument("--overrides", nargs="*", default=[], help="extra section.key=value for every run")
    parser.add_argument("--out", default="", help="a JSON file; rows already in it are kept, not rerun")
    args = parser.parse_args()
    done = json.loads(Path(args.out).read_text())["rows"] if args.out and Path(args.out).exists() else []
    rows = [r for r in done if r["setting"] not in args.rerun.split(",")]  # rows of other settings are kept
    for name in args.settings.split(","):
        if any(r["setting"] == name for r in rows):
            continue
        arms, flags = SETTINGS[name]
        row = one_setting(args.config, Path(args.work), name, arms, [*flags, *args.overrides], args.steps, args.seed,
                          args.search)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:  # after every setting: an interrupted measurement keeps what it finished
            result = {"config": args.config, "overrides": args.overrides, "seed": args.seed,
                      "machine": machine(), "rows": rows}
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
