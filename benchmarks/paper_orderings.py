"""Which of the GPG paper's Table-1 orderings hold in a `gpgrl compare` directory, seed by seed.

    .venv/bin/python benchmarks/paper_orderings.py runs/compare/basic_arithmetic [--metric accuracy_after]

The paper's claim is GRPO < GPG(F_norm=1, α=1) < GPG(F_norm=std, α=1) < GPG(α=B/(B−M)) < GPG(α, β_th=0.6), and
GPG ahead of Dr.GRPO. Runs of one seed share the data order and the untrained model, so each ordering is judged
on paired differences: the mean ± std over seeds of (better − worse), and on how many seeds it holds. With three
seeds, "3 of 3" is the strongest statement the data allow (a sign test's one-sided p = 1/8), and a mean
difference smaller than its standard deviation is not evidence either way. Each ordering also gets a bootstrap 95 %
confidence interval of the mean paired difference (seeds resampled with replacement) and a verdict at this power:
holds (the interval is above 0), reversed (below 0) or undecided.

`--power` prints, from the same paired differences, how many seeds a paired comparison needs to detect a given
difference with 80 % power at a two-sided 5 % level (normal approximation: n = ((1.96 + 0.84) σ_d / Δ)²), and
the smallest difference 5 seeds can detect.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import sys
from pathlib import Path

ORDERINGS = [  # (expected better, expected worse, the paper's numbers)
    ("gpg-no-alpha", "grpo", "43.9 > 43.7"),
    ("gpg-std", "gpg-no-alpha", "45.3 > 43.9"),
    ("gpg-alpha", "gpg-std", "47.8 > 45.3"),
    ("gpg", "gpg-alpha", "48.3 > 47.8"),
    ("gpg", "grpo", "48.3 > 43.7"),
    ("gpg", "dr_grpo", "48.3 > 43.7"),
    ("gpg", "dapo", "not in Table 1"),
    ("gpg", "trl-grpo", "not in the paper (TRL's GRPO at the same budget)"),
]


def by_algorithm(compare_dir: Path, metric: str) -> dict[str, dict[int, float]]:
    """{algorithm: {seed: metric}} over the finished runs of comparison.json."""
    runs = json.loads((compare_dir / "comparison.json").read_text())["runs"]
    out: dict[str, dict[int, float]] = {}
    for r in runs:
        if r["status"] == "finished" and r.get(metric) is not None:
            out.setdefault(r["algorithm"], {})[r["seed"]] = r[metric]
    return out


Z_POWER = 1.959964 + 0.841621  # two-sided 5 % level, 80 % power


def bootstrap_ci(diffs: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % interval of the mean of `diffs` over resamples (with replacement) of the seeds."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def verdict_at_power(low: float, high: float) -> str:
    return "holds" if low > 0 else "reversed" if high < 0 else "undecided"


def seeds_needed(sd: float, delta: float) -> int:
    """Seeds for a paired comparison to detect a mean difference `delta` given the paired std `sd`."""
    return max(2, math.ceil((Z_POWER * sd / delta) ** 2))


def ordering_row(values: dict[str, dict[int, float]], better: str, worse: str, paper: str) -> str | None:
    if better not in values or worse not in values:
        return None
    seeds = sorted(set(values[better]) & set(values[worse]))
    diffs = [values[better][s] - values[worse][s] for s in seeds]
    if not diffs:
        return None
    mean = statistics.fmean(diffs)
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    wins, ties = sum(d > 0 for d in diffs), sum(d == 0 for d in diffs)
    losses = len(diffs) - wins - ties
    verdict = ("holds on every seed" if wins == len(diffs) else "reversed on every seed" if losses == len(diffs)
               else "never reversed" if losses == 0 else "never holds" if wins == 0 else "mixed")
    low, high = bootstrap_ci(diffs)
    return (f"| {better} > {worse} | {paper} | {mean:+.3f} ± {std:.3f} | {wins}/{len(diffs)}"
            f"{f' ({ties} tied)' if ties else ''} | {verdict} | [{low:+.3f}, {high:+.3f}] | "
            f"{verdict_at_power(low, high)} |")


def paired_sds(values: dict[str, dict[int, float]]) -> dict[str, float]:
    """{ordering: std over seeds of its paired differences} for the orderings with two or more common seeds."""
    out = {}
    for better, worse, _ in ORDERINGS:
        if better in values and worse in values:
            seeds = sorted(set(values[better]) & set(values[worse]))
            if len(seeds) > 1:
                out[f"{better} > {worse}"] = statistics.stdev(values[better][s] - values[worse][s] for s in seeds)
    return out


def power_rows(values: dict[str, dict[int, float]], deltas: tuple[float, ...] = (0.05, 0.10)) -> list[str]:
    rows = []
    for name, sd in paired_sds(values).items():
        needed = " | ".join(str(seeds_needed(sd, d)) if sd > 0 else "2" for d in deltas)
        rows.append(f"| {name} | {sd:.3f} | {needed} | {Z_POWER * sd / math.sqrt(5):.3f} |")
    return rows


PLACEHOLDER = re.compile(r"\\boxed\{(result|ANSWER|answer)\}")
"""A box holding the placeholder word of the prompt ("written as \\boxed{result}") or of the system prompt."""


def placeholder_rates(compare_dir: Path) -> dict[str, list[float]]:
    """{algorithm: [per seed: fraction of held-out completions that box a placeholder instead of a number]}."""
    out: dict[str, list[float]] = {}
    for path in sorted(compare_dir.glob("runs/*/seed*/eval_after_completions.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rate = sum(bool(PLACEHOLDER.search(r["completion"])) for r in records) / max(len(records), 1)
        out.setdefault(path.parent.parent.name, []).append(rate)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--metric", default="accuracy_after", help="a per-run key of comparison.json")
    parser.add_argument("--power", action="store_true", help="the seeds needed to detect 0.05 and 0.10")
    args = parser.parse_args(argv)
    values = by_algorithm(args.compare_dir, args.metric)
    if args.power:
        print(f"| ordering | paired std of {args.metric} | seeds for Δ = 0.05 | seeds for Δ = 0.10 | "
              "smallest Δ 5 seeds detect |")
        print("|---|---|---|---|---|")
        print("\n".join(power_rows(values)))
        return
    print(f"| expected ordering | paper (Table 1 avg) | paired difference in {args.metric} (mean ± std over "
          "seeds) | seeds where it holds | verdict | bootstrap 95 % CI | at this power |")
    print("|---|---|---|---|---|---|---|")
    rows = [ordering_row(values, b, w, p) for b, w, p in ORDERINGS]
    print("\n".join(r for r in rows if r))
    rates = placeholder_rates(args.compare_dir)
    if rates:
        print("\n| algorithm | held-out answers that box a placeholder (\\boxed{result} / {ANSWER}), per seed | "
              "runs where most do |")
        print("|---|---|---|")
        for name, values_ in rates.items():
            print(f"| {name} | {', '.join(f'{v:.2f}' for v in values_)} | {sum(v > 0.5 for v in values_)}/"
                  f"{len(values_)} |")


if __name__ == "__main__":
    sys.exit(main())
