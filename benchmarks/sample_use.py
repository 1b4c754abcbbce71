"""What each algorithm of a compare grid trained on and what it paid in samples, from its runs' metrics.jsonl.

    .venv/bin/python benchmarks/sample_use.py results/compare/powered_arithmetic \
        results/compare/powered_arithmetic_microbatch results/compare/powered_arithmetic_microbatch_no_alpha

Per algorithm, pooled over its finished seeds (a run with a summary.json): informative groups trained on per step
(`valid_group_fraction × groups`), steps skipped because every group had identical rewards (`has_signal = 0`),
sampling rounds per step (`rounds`, > 1 under β_th resampling) and generated tokens per run (`generated_tokens`,
every round counted). It separates what resampling buys (more informative groups per step) from what it costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alpha_in_runs import seeds_of, step_records  # noqa: E402


def run_use(run_dir: Path) -> dict[str, float]:
    """One run's sums: steps, informative groups, skipped steps, rounds, generated tokens."""
    steps = step_records(run_dir)
    return {"steps": len(steps), "informative": sum(r["valid_group_fraction"] * r["groups"] for r in steps),
            "skipped": sum(not r.get("has_signal") for r in steps), "rounds": sum(r.get("rounds", 1) for r in steps),
            "generated_tokens": sum(r.get("generated_tokens", r.get("tokens", 0)) for r in steps)}


def logs_groups(run_dir: Path) -> bool:
    """Whether the run logged its groups (gpgrl's runs do; benchmarks/trl_grpo_run.py's TRL runs do not)."""
    return all("valid_group_fraction" in r for r in step_records(run_dir))


def algorithm_use(runs: dict[int, Path]) -> dict[str, Any]:
    """Pooled over seeds: per-step means, skipped steps of all steps, mean generated tokens per run."""
    per_run = [run_use(d) for d in runs.values()]
    steps = sum(r["steps"] for r in per_run)
    return {"seeds": len(per_run), "steps": steps,
            "informative_groups_per_step": sum(r["informative"] for r in per_run) / steps,
            "skipped_steps": sum(r["skipped"] for r in per_run), "rounds_per_step": sum(r["rounds"] for r in per_run)
            / steps, "generated_tokens_per_run": statistics.fmean(r["generated_tokens"] for r in per_run)}


def algorithms(compare_dir: Path) -> list[str]:
    return sorted(d.name for d in (compare_dir / "runs").iterdir() if d.is_dir())


def table(rows: dict[str, dict[str, Any]]) -> list[str]:
    out = ["| algorithm | seeds | informative groups per step | skipped steps | sampling rounds per step | "
           "generated tokens per run (mean) |", "|---|---|---|---|---|---|"]
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["informative_groups_per_step"]):
        out.append(f"| {name} | {r['seeds']} | {r['informative_groups_per_step']:.2f} | {r['skipped_steps']} of "
                   f"{r['steps']} | {r['rounds_per_step']:.2f} | {r['generated_tokens_per_run']:,.0f} |")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_dirs", type=Path, nargs="+", help="gpgrl compare output directories")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    rows: dict[str, dict[str, Any]] = {}
    for compare_dir in args.compare_dirs:
        if not (compare_dir / "runs").is_dir():
            parser.error(f"{compare_dir}: no runs/ folder; pass a `gpgrl compare` output directory")
        for name in algorithms(compare_dir):
            runs = seeds_of(compare_dir, name)
            if runs and not all(map(logs_groups, runs.values())):
                note = f"skipped {compare_dir}/runs/{name}: its metrics.jsonl has no valid_group_fraction"
                print(note, file=sys.stderr)
            elif runs:
                rows[name if name not in rows else f"{name} ({compare_dir.name})"] = algorithm_use(runs)
    if not rows:
        parser.error("no finished run (with a summary.json) in the directories given")
    print("\n".join(table(rows)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
