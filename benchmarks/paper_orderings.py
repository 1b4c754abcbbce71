"""Which of the GPG paper's orderings hold in `gpgrl compare` directories, seed by seed.

    .venv/bin/python benchmarks/paper_orderings.py runs/compare/basic_arithmetic [--metric accuracy_after]
        [--with LABEL=DIR:ALGORITHM ...] [--all-pairs] [--power] [--per-seed]

The paper's claim is GRPO < GPG(F_norm=1, α=1) < GPG(F_norm=std, α=1) < GPG(α=B/(B−M)) < GPG(α, β_th=0.6), and
GPG ahead of Dr.GRPO, with F_norm = std and α together (44.1) below both of their single changes; its Table 11
(F_norm=std, α=1) orders the group sizes G = 2 < 4 < 8. Runs of one seed share the data order and the untrained
model, so each ordering is judged on paired differences: the mean ± std over seeds of (better − worse), and on
how many seeds it holds. With three seeds, "3 of 3" is the strongest statement
the data allow (a sign test's one-sided p = 1/8), and a mean difference smaller than its standard deviation is
not evidence either way. Each ordering also gets a bootstrap 95 % confidence interval of the mean paired
difference and a verdict at this power: holds (the interval is above 0), reversed (below 0) or undecided, given
only from `--min-seeds` seeds on (default 5, the powered design's minimum): below it the verdict reads "too few
seeds", since with one seed the interval holds no training noise at all, only the held-out items', and with two
to four the percentile bootstrap over seeds is too narrow to trust. For the
held-out accuracy, when every run of the pair kept its per-item evaluation (eval_after_completions.jsonl), the
bootstrap is two-level: seeds are resampled with replacement, then within each drawn seed the held-out items
(the same items for both runs: paired), so the interval covers the training noise between seeds and the
sampling noise of a finite held-out set. Otherwise (another metric, or no per-item files) only seeds are
resampled; with few seeds that interval is too narrow (never wider than the range of the differences).

`--with LABEL=DIR:ALGORITHM` adds the runs of ALGORITHM in another compare directory under the name LABEL (a
different config: e.g. G = 2 as `gpg-std-G2`), `--all-pairs` judges every pair of rows, not only the paper's.

`--power` prints, from the same paired differences, how many seeds a paired comparison needs to detect a given
difference with 80 % power at a two-sided 5 % level (normal approximation: n = ((1.96 + 0.84) σ_d / Δ)²), and
the smallest difference 5 seeds can detect. `--per-seed` prints every row's value seed by seed, its mean and its
mean generated tokens per run, ranked by the mean.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ORDERINGS = [  # (expected better, expected worse, the paper's numbers)
    ("gpg-no-alpha", "grpo", "43.9 > 43.7"),
    ("gpg-std", "gpg-no-alpha", "45.3 > 43.9"),
    ("gpg-alpha", "gpg-std", "47.8 > 45.3"),
    ("gpg-std", "gpg-std-alpha", "45.3 > 44.1 (α with F_norm = std)"),
    ("gpg-alpha", "gpg-std-alpha", "47.8 > 44.1 (F_norm = 1 with α)"),
    ("gpg", "gpg-alpha", "48.3 > 47.8"),
    ("gpg", "grpo", "48.3 > 43.7"),
    ("gpg", "dr_grpo", "48.3 > 43.7"),
    ("gpg", "dapo", "not in Table 1"),
    ("gpg", "trl-grpo", "not in the paper (TRL's GRPO at the same budget)"),
    ("gpg-std", "gpg-std-G2", "Table 11, G = 4 > 2: 43.3 > 41.9"),
    ("gpg-std-G8", "gpg-std", "Table 11, G = 8 > 4: 45.3 > 43.3"),
    ("gpg-ref-microbatch", "gpg-ref-microbatch-no-alpha", "no paper row (α under the reference's micro-batch loss)"),
]

Runs = dict[str, dict[int, dict[str, Any]]]
"""{row label: {seed: its comparison.json run record, plus `run_dir`}}."""


@dataclass(frozen=True)
class Source:
    """The runs of `algorithm` in another compare directory, reported as `label`."""

    label: str
    compare_dir: Path
    algorithm: str

    @classmethod
    def parse(cls, text: str) -> Source:
        label, sep, rest = text.partition("=")
        directory, sep2, algorithm = rest.rpartition(":")
        if not (sep and sep2 and label and directory and algorithm):
            raise argparse.ArgumentTypeError(f"--with {text!r}: write LABEL=DIR:ALGORITHM, e.g. "
                                             "gpg-std-G2=results/compare/powered_arithmetic_g2:gpg-std")
        return cls(label, Path(directory), algorithm)


def finished_runs(compare_dir: Path, algorithm: str | None = None) -> list[dict[str, Any]]:
    """The finished runs of comparison.json (of one algorithm when given), each with its run directory."""
    runs = json.loads((compare_dir / "comparison.json").read_text())["runs"]
    return [{**r, "run_dir": compare_dir / "runs" / r["algorithm"] / f"seed{r['seed']}"} for r in runs
            if r["status"] == "finished" and algorithm in (None, r["algorithm"])]


def load_runs(compare_dir: Path, extra: Sequence[Source] = ()) -> Runs:
    """Every finished run of compare_dir under its algorithm's name, then each extra source under its label."""
    out: Runs = {}
    for r in finished_runs(compare_dir):
        out.setdefault(r["algorithm"], {})[r["seed"]] = r
    for source in extra:
        for r in finished_runs(source.compare_dir, source.algorithm):
            out.setdefault(source.label, {})[r["seed"]] = r
    return out


def by_algorithm(runs: Runs, metric: str) -> dict[str, dict[int, float]]:
    """{row: {seed: metric}} over the runs that report the metric."""
    values = {name: {s: r[metric] for s, r in seeds.items() if r.get(metric) is not None}
              for name, seeds in runs.items()}
    return {name: v for name, v in values.items() if v}


@cache  # --all-pairs reads a run's file once per pair it is in
def item_scores(run_dir: Path) -> dict[int, float] | None:
    """{held-out item index: fraction of its evaluation samples that were correct}; None without the file."""
    path = run_dir / "eval_after_completions.jsonl"
    if not path.exists():
        return None
    per_item: dict[int, list[float]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            per_item.setdefault(record["index"], []).append(float(record["correct"]))
    return {i: statistics.fmean(v) for i, v in per_item.items()}


def paired_items(runs: Runs, better: str, worse: str, seeds: Sequence[int]) -> list[list[float]] | None:
    """Per seed, the per-item differences (better − worse) on the same held-out items, sorted by item; None when a
    run has no per-item file or the runs were not evaluated on the same items."""
    diffs = []
    for seed in seeds:
        a, b = item_scores(runs[better][seed]["run_dir"]), item_scores(runs[worse][seed]["run_dir"])
        if a is None or b is None or a.keys() != b.keys():
            return None
        diffs.append([a[i] - b[i] for i in sorted(a)])
    return diffs if len({len(d) for d in diffs}) == 1 else None


Z_POWER = 1.959964 + 0.841621  # two-sided 5 % level, 80 % power


def bootstrap_ci(diffs: list[float], resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % interval of the mean of `diffs` over resamples (with replacement) of the seeds."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def two_level_ci(item_diffs: list[list[float]], resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % interval of the mean paired difference: seeds resampled with replacement, then within each
    drawn seed its held-out items (the same items for both runs). item_diffs: per seed, per item, better − worse."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    diffs = torch.tensor(item_diffs, dtype=torch.float64)  # [S, n]
    n_seeds, n_items = diffs.shape
    means = []
    for done in range(0, resamples, 500):
        r = min(500, resamples - done)
        seed_draw = torch.randint(n_seeds, (r, n_seeds), generator=gen)  # [r, S]
        item_draw = torch.randint(n_items, (r, n_seeds, n_items), generator=gen)  # [r, S, n]
        means.append(diffs[seed_draw].gather(2, item_draw).mean(dim=(1, 2)))  # [r]
    ordered = torch.cat(means).sort().values.tolist()
    return ordered[int(0.025 * resamples)], ordered[int(0.975 * resamples) - 1]


def verdict_at_power(low: float, high: float, seeds: int, min_seeds: int) -> str:
    if seeds < min_seeds:
        return f"too few seeds ({seeds} < {min_seeds})"
    return "holds" if low > 0 else "reversed" if high < 0 else "undecided"


def seeds_needed(sd: float, delta: float) -> int:
    """Seeds for a paired comparison to detect a mean difference `delta` given the paired std `sd`."""
    return max(2, math.ceil((Z_POWER * sd / delta) ** 2))


def ordering_row(runs: Runs, metric: str, better: str, worse: str, paper: str, min_seeds: int) -> str | None:
    values = by_algorithm(runs, metric)
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
    items = paired_items(runs, better, worse, seeds) if metric == "accuracy_after" else None
    low, high = two_level_ci(items) if items else bootstrap_ci(diffs)
    resampled = f"seeds × {len(items[0])} items" if items else "seeds"
    return (f"| {better} > {worse} | {paper} | {mean:+.3f} ± {std:.3f} | {wins}/{len(diffs)}"
            f"{f' ({ties} tied)' if ties else ''} | {verdict} | [{low:+.3f}, {high:+.3f}] | {resampled} | "
            f"{verdict_at_power(low, high, len(diffs), min_seeds)} |")


def orderings(values: dict[str, dict[int, float]], all_pairs: bool) -> list[tuple[str, str, str]]:
    """The paper's orderings, then (all_pairs) every other pair of rows, the one with the higher mean first."""
    chosen = list(ORDERINGS)
    if all_pairs:
        named = {(b, w) for b, w, _ in chosen} | {(w, b) for b, w, _ in chosen}
        ranked = sorted(values, key=lambda name: -statistics.fmean(values[name].values()))
        chosen += [(a, b, "–") for i, a in enumerate(ranked) for b in ranked[i + 1:] if (a, b) not in named]
    return chosen


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


def per_seed_rows(runs: Runs, metric: str) -> list[str]:
    """Every row's metric seed by seed (— where a seed is missing), its mean and its mean generated tokens per run,
    ranked by the mean (lowest first): the table docs/results.md shows, generated rather than transcribed."""
    values = by_algorithm(runs, metric)
    seeds = sorted({s for v in values.values() for s in v})
    ranked = sorted(values, key=lambda name: statistics.fmean(values[name].values()))
    rows = [f"| row | {' | '.join(f'seed {s}' for s in seeds)} | mean | seeds | generated tokens per run (mean) |",
            "|---|" + "---|" * (len(seeds) + 3)]
    for name in ranked:
        cells = " | ".join(f"{values[name][s]:.3f}" if s in values[name] else "—" for s in seeds)
        tokens = [r["generated_tokens"] for r in runs[name].values() if r.get("generated_tokens") is not None]
        mean_tokens = f"{statistics.fmean(tokens):,.0f}" if tokens else "—"
        rows.append(f"| {name} | {cells} | {statistics.fmean(values[name].values()):.3f} | {len(values[name])} | "
                    f"{mean_tokens} |")
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
    parser.add_argument("--with", dest="extra", type=Source.parse, action="append", default=[],
                        metavar="LABEL=DIR:ALGORITHM", help="the runs of ALGORITHM in compare directory DIR as LABEL")
    parser.add_argument("--all-pairs", action="store_true", help="judge every pair of rows, not only the paper's")
    parser.add_argument("--power", action="store_true", help="the seeds needed to detect 0.05 and 0.10")
    parser.add_argument("--per-seed", action="store_true", help="every row's metric seed by seed, and its mean")
    parser.add_argument("--min-seeds", type=int, default=5,
                        help="the fewest common seeds an ordering needs for a verdict at this power")
    args = parser.parse_args(argv)
    runs = load_runs(args.compare_dir, args.extra)
    values = by_algorithm(runs, args.metric)
    if args.power:
        print(f"| ordering | paired std of {args.metric} | seeds for Δ = 0.05 | seeds for Δ = 0.10 | "
              "smallest Δ 5 seeds detect |")
        print("|---|---|---|---|---|")
        print("\n".join(power_rows(values)))
        return
    if args.per_seed:
        print("\n".join(per_seed_rows(runs, args.metric)))
        return
    print(f"| expected ordering | paper (avg) | paired difference in {args.metric} (mean ± std over seeds) | "
          "seeds where it holds | verdict | bootstrap 95 % CI | resampled | at this power |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [ordering_row(runs, args.metric, b, w, p, args.min_seeds) for b, w, p in orderings(values, args.all_pairs)]
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
