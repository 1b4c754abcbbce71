"""What α = B/(B−M) did inside finished runs: a run with α against its twin without, seed by seed.

    .venv/bin/python benchmarks/alpha_in_runs.py \
        --alpha results/compare/powered_arithmetic:gpg-alpha --no-alpha results/compare/powered_arithmetic:gpg-no-alpha

The twins share the data order, the seed and everything but α, so until their updates differ they draw the same
samples. From each run's metrics.jsonl (the pre-clip `grad_norm`, `clipped`, `clip_factor`, `alpha`), per seed:
how many steps had α > 1; on how many of those clipping bound the α run's gradient and on how many it bound the
twin's; the norm of the gradient that reached the optimizer (after clipping) in each run; the first step whose
sampled rewards differ (the first visible effect of a different update); and the held-out accuracy of both.
benchmarks/alpha_update.py measures the same question as a counterfactual on one step; this reads what happened
over whole runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def source(text: str) -> tuple[Path, str]:
    directory, sep, algorithm = text.rpartition(":")
    if not (sep and directory and algorithm):
        raise argparse.ArgumentTypeError(f"{text!r}: write DIR:ALGORITHM, e.g. results/compare/powered_arithmetic:gpg")
    return Path(directory), algorithm


def step_records(run_dir: Path) -> list[dict[str, Any]]:
    """The per-step records of a run's metrics.jsonl, in step order."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return sorted((r for r in map(json.loads, filter(str.strip, lines)) if "step" in r and "reward_mean" in r),
                  key=lambda r: r["step"])


def optimizer_norm(record: dict[str, Any]) -> float | None:
    """The norm of the gradient the optimizer received (after clipping); None on a step without an update."""
    if not record.get("has_signal") or record.get("grad_norm") is None:
        return None
    return record["grad_norm"] * record.get("clip_factor", 1.0)


def accuracy(run_dir: Path) -> float | None:
    path = run_dir / "eval_after.json"
    return json.loads(path.read_text())["accuracy"] if path.exists() else None


def compare_seed(with_alpha: Path, without: Path) -> dict[str, Any]:
    a, b = step_records(with_alpha), step_records(without)
    boosted = [r for r in a if (r.get("alpha") or 0) > 1]
    first = next((ra["step"] for ra, rb in zip(a, b, strict=False) if ra["reward_mean"] != rb["reward_mean"]), None)
    norms_a = [n for n in map(optimizer_norm, a) if n is not None]
    norms_b = [n for n in map(optimizer_norm, b) if n is not None]
    return {"steps": len(a), "alpha_above_1": len(boosted), "alpha_mean": statistics.fmean(r["alpha"] for r in boosted)
            if boosted else 1.0, "clipped_with_alpha": sum(r.get("clipped") == 1 for r in a),
            "clipped_without": sum(r.get("clipped") == 1 for r in b), "first_differing_step": first,
            "optimizer_norm_with_alpha": statistics.fmean(norms_a) if norms_a else None,
            "optimizer_norm_without": statistics.fmean(norms_b) if norms_b else None,
            "accuracy_with_alpha": accuracy(with_alpha), "accuracy_without": accuracy(without)}


def seeds_of(compare_dir: Path, algorithm: str) -> dict[int, Path]:
    """{seed: run directory} of the finished runs (a summary.json) of one algorithm in a compare directory."""
    runs = compare_dir / "runs" / algorithm
    return {int(d.name.removeprefix("seed")): d for d in sorted(runs.glob("seed*")) if (d / "summary.json").exists()}


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(rows: dict[int, dict[str, Any]]) -> list[str]:
    out = ["| seed | steps with α > 1 (mean α) | clipped: with α / without | gradient norm into the optimizer: "
           "with α / without (mean) | first step whose rewards differ | held-out accuracy: with α / without |",
           "|---|---|---|---|---|---|"]
    for seed, r in rows.items():
        out.append(f"| {seed} | {r['alpha_above_1']} of {r['steps']} ({r['alpha_mean']:.2f}) | "
                   f"{r['clipped_with_alpha']} / {r['clipped_without']} | {fmt(r['optimizer_norm_with_alpha'], '.2f')}"
                   f" / {fmt(r['optimizer_norm_without'], '.2f')} | {fmt(r['first_differing_step'], 'd')} | "
                   f"{fmt(r['accuracy_with_alpha'], '.3f')} / {fmt(r['accuracy_without'], '.3f')} |")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=source, required=True, metavar="DIR:ALGORITHM", help="the runs with α")
    parser.add_argument("--no-alpha", type=source, required=True, metavar="DIR:ALGORITHM", help="their twins, α = 1")
    parser.add_argument("--json", type=Path, help="also write the per-seed figures here")
    args = parser.parse_args(argv)
    with_alpha, without = seeds_of(*args.alpha), seeds_of(*args.no_alpha)
    common = sorted(set(with_alpha) & set(without))
    if not common:
        parser.error(f"no seed has a finished run in both {args.alpha} and {args.no_alpha}")
    rows = {seed: compare_seed(with_alpha[seed], without[seed]) for seed in common}
    print("\n".join(table(rows)))
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in rows.items()}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
