"""Which of the GPG paper's Table-1 orderings hold in a `gpgrl compare` directory, seed by seed.

    .venv/bin/python benchmarks/paper_orderings.py runs/compare/basic_arithmetic [--metric accuracy_after]

The paper's claim is GRPO < GPG(F_norm=1, α=1) < GPG(F_norm=std, α=1) < GPG(α=B/(B−M)) < GPG(α, β_th=0.6), and
GPG ahead of Dr.GRPO. Runs of one seed share the data order and the untrained model, so each ordering is judged
on paired differences: the mean ± std over seeds of (better − worse), and on how many seeds it holds. With three
seeds, "3 of 3" is the strongest statement the data allow (a sign test's one-sided p = 1/8), and a mean
difference smaller than its standard deviation is not evidence either way.
"""

from __future__ import annotations

import argparse
import json
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
    return (f"| {better} > {worse} | {paper} | {mean:+.3f} ± {std:.3f} | {wins}/{len(diffs)}"
            f"{f' ({ties} tied)' if ties else ''} | {verdict} |")


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
    args = parser.parse_args(argv)
    values = by_algorithm(args.compare_dir, args.metric)
    print(f"| expected ordering | paper (Table 1 avg) | paired difference in {args.metric} (mean ± std over "
          "seeds) | seeds where it holds | verdict |")
    print("|---|---|---|---|---|")
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
