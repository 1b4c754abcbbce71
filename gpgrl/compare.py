"""`gpgrl compare`: several algorithms trained the same way, over several seeds, and the report of the result.

Owns the run grid (algorithm × seed → its own directory under `<train.output_dir>/runs/`), the reuse of
finished runs (a re-run skips them and resumes an interrupted one from its checkpoint), the baseline
evaluation (once per seed: the untrained model does not depend on the algorithm) and the report:
`comparison.md` (mean ± std over seeds), `comparison.json` (every run's numbers and reward curve) and
`comparison.png` (reward and held-out accuracy against step). Every run of a comparison uses the same
config apart from `algorithm.name`, `train.seed` and `train.output_dir`, so data order, generation settings,
budget and evaluation are identical for a given seed.

Run directories that `gpgrl compare` did not ask for but that hold a finished run (`summary.json` and
`metrics.jsonl` in the same format, e.g. `benchmarks/trl_grpo_run.py`'s TRL runs) are reported too.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from gpgrl.config import Config, ConfigError, build_config, load_config, to_dict

COMPARE_KEYS = ("algorithms", "seeds")


@dataclass(frozen=True)
class CompareSpec:
    """What `gpgrl compare` was asked to run."""

    algorithms: tuple[str, ...]
    seeds: tuple[int, ...]
    config_path: str | None
    overrides: tuple[str, ...]  # the section.key=value overrides shared by every run
    base: Config
    world_size: int = 1

    @property
    def output_dir(self) -> Path:
        return Path(self.base.train.output_dir)

    def run_dir(self, algorithm: str, seed: int) -> Path:
        return self.output_dir / "runs" / algorithm / f"seed{seed}"

    def run_config(self, algorithm: str, seed: int, resume: bool = False) -> Config:
        """The config of one run: the shared one with its algorithm, seed and directory (validated again)."""
        own = [f"algorithm.name={algorithm}", f"train.seed={seed}",
               f"train.output_dir={self.run_dir(algorithm, seed)}", "eval.before=false",
               f"train.resume={str(resume).lower()}"]
        return load_config(self.config_path, [*self.overrides, *own], world_size=self.world_size)


def split_arguments(arguments: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Separate `algorithms=...` and `seeds=...` from the section.key=value config overrides."""
    compare: dict[str, str] = {}
    overrides: list[str] = []
    for arg in arguments:
        key, sep, value = arg.partition("=")
        if sep and "." not in key:
            if key not in COMPARE_KEYS:
                raise ConfigError(f"unknown compare argument {key!r}: gpgrl compare takes algorithms=a,b,c and "
                                  "seeds=N (or seeds=0,1,2); config keys are written section.key=value")
            compare[key] = value
        else:
            overrides.append(arg)
    return compare, overrides


def parse_seeds(value: str, first: int) -> tuple[int, ...]:
    """`seeds=N` → N seeds from train.seed on; `seeds=3,7` → exactly those."""
    try:
        if "," in value:
            seeds = tuple(int(v) for v in value.split(",") if v.strip())
        else:
            count = int(value)
            if count < 1:
                raise ValueError
            seeds = tuple(range(first, first + count))
    except ValueError as err:
        raise ConfigError(f"seeds={value!r}: give a count >= 1 (seeds=3) or a list of integers (seeds=0,1,2)") \
            from err
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"seeds={value!r}: the seeds must be distinct and at least one")
    return seeds


def parse_spec(config_path: str | None, arguments: Sequence[str], world_size: int = 1) -> CompareSpec:
    """Read the compare arguments and validate every run's config before anything runs."""
    compare, overrides = split_arguments(arguments)
    if "algorithms" not in compare:
        raise ConfigError("gpgrl compare needs algorithms=a,b,c (see `gpgrl presets` for the names)")
    algorithms = tuple(a.strip() for a in compare["algorithms"].split(",") if a.strip())
    if not algorithms or len(set(algorithms)) != len(algorithms):
        raise ConfigError(f"algorithms={compare['algorithms']!r}: list distinct preset names, e.g. "
                          "algorithms=gpg,grpo,dr_grpo")
    base = load_config(config_path, overrides, world_size=world_size)
    seeds = parse_seeds(compare.get("seeds", "1"), base.train.seed)
    spec = CompareSpec(algorithms, seeds, config_path, tuple(overrides), base, world_size)
    for algorithm in algorithms:  # a bad name or an override that does not fit one preset fails now, not later
        spec.run_config(algorithm, seeds[0])
    return spec


# ---------------------------------------------------------------- running the grid


IGNORED_KEYS = (("train", "resume"), ("train", "output_dir"), ("eval", "before"))
"""Keys that do not change a run's result: a comparison directory may be moved, resumed, or extended."""


def without_ignored(d: dict[str, Any]) -> dict[str, Any]:
    """The config dict `d` (modified in place) without IGNORED_KEYS."""
    for section, key in IGNORED_KEYS:
        d.get(section, {}).pop(key, None)
    return d


def comparable(cfg: Config) -> dict[str, Any]:
    """A run's config without the keys that do not change its result."""
    return without_ignored(to_dict(cfg))


def check_same_config(run_dir: Path, cfg: Config) -> None:
    """A run directory may only be reused by a run with the same config."""
    import yaml

    stored_path = run_dir / "config.yaml"
    if not stored_path.exists():
        return
    try:  # through the config's own defaults: keys added since the run was stored take their default values
        stored = comparable(build_config(yaml.safe_load(stored_path.read_text()) or {}))
    except ConfigError:
        stored = None  # a key that no longer exists, or a value no longer valid
    if stored != comparable(cfg):
        raise ConfigError(f"{run_dir} holds a run with a different config than this comparison asks for: use "
                          "another train.output_dir for a different comparison, or delete that directory")


def run_state(run_dir: Path) -> str:
    """'finished', 'failed' (diverged: a result too), 'partial' (resume it) or 'new'."""
    if (run_dir / "summary.json").exists():
        return "finished"
    if (run_dir / "failed.json").exists():
        return "failed"
    return "partial" if (run_dir / "config.yaml").exists() else "new"


def baseline_path(spec: CompareSpec, seed: int) -> Path:
    return spec.output_dir / "baseline" / f"seed{seed}.json"


def evaluate_baseline(spec: CompareSpec, seed: int, console: Console) -> None:
    """Held-out accuracy of the untrained model for this seed (shared by every algorithm), once."""
    from gpgrl.data import load_splits
    from gpgrl.evaluation import run_evaluation

    path = baseline_path(spec, seed)
    if not spec.base.eval.before or path.exists():
        return
    cfg = load_config(spec.config_path, [*spec.overrides, f"train.seed={seed}", f"eval.output={path}"],
                      world_size=spec.world_size)
    console.rule(f"baseline evaluation, seed {seed}")
    run_evaluation(cfg, console, examples=load_splits(cfg.data)[1])  # the held-out split the runs evaluate on


def train_one(spec: CompareSpec, algorithm: str, seed: int, console: Console) -> str:
    """Train (or resume, or reuse) one run of the grid; returns what was done."""
    from gpgrl.trainer import TrainingDiverged, train

    run_dir = spec.run_dir(algorithm, seed)
    state = run_state(run_dir)
    cfg = spec.run_config(algorithm, seed, resume=state == "partial")
    check_same_config(run_dir, cfg)
    if state in ("finished", "failed"):
        console.print(f"{algorithm} seed {seed}: {state} earlier, reused ({run_dir})")
        return "reused"
    console.rule(f"{algorithm}, seed {seed}" + (" (resumed)" if state == "partial" else ""))
    try:
        train(cfg, console)
        remove_checkpoints(run_dir)
    except TrainingDiverged as err:
        (run_dir / "failed.json").write_text(json.dumps({"error": str(err)}) + "\n")
        console.print(f"[red]{algorithm} seed {seed} diverged:[/red] {err}", highlight=False)
        return "diverged"
    return "resumed" if state == "partial" else "trained"


def remove_checkpoints(run_dir: Path) -> None:
    """A finished run needs no checkpoint (its summary, logs and final/ model stay); a comparison would otherwise
    keep keep_checkpoints full training states per run (3.2 GB for SmolLM2-135M)."""
    from accelerate import PartialState

    from gpgrl.checkpoint import checkpoint_dirs

    if PartialState().is_main_process:
        for _, path in checkpoint_dirs(run_dir):
            shutil.rmtree(path)


def compare(spec: CompareSpec, console: Console) -> dict[str, Any]:
    """Run the whole grid (seed by seed, so that partial results already cover every algorithm) and report."""
    from accelerate import PartialState

    state = PartialState()
    for seed in spec.seeds:
        if state.is_main_process:
            evaluate_baseline(spec, seed, console)
        state.wait_for_everyone()
        for algorithm in spec.algorithms:
            train_one(spec, algorithm, seed, console)
    report = {}
    if state.is_main_process:
        report = write_report(spec.output_dir, spec.algorithms, console)
    state.wait_for_everyone()
    return report


# ---------------------------------------------------------------- the report


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _baseline_accuracy(output_dir: Path, seed: int) -> float | None:
    path = output_dir / "baseline" / f"seed{seed}.json"
    return json.loads(path.read_text())["accuracy"] if path.exists() else None


def run_record(output_dir: Path, name: str, run_dir: Path) -> dict[str, Any] | None:
    """One run's numbers, from its summary.json and metrics.jsonl; None if it has not finished."""
    seed = int(run_dir.name.removeprefix("seed"))
    if (run_dir / "failed.json").exists():
        return {"algorithm": name, "seed": seed, "status": "diverged"}
    if not (run_dir / "summary.json").exists():
        return None
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    rewards = [m.get("reward_mean_sampled", m["reward_mean"]) for m in metrics]
    drawn = sum(m.get("prompts_drawn", 0) for m in metrics)
    before = summary.get("accuracy_before")
    return {
        "algorithm": name, "seed": seed, "status": "finished", "steps": len(metrics),
        "accuracy_before": before if before is not None else _baseline_accuracy(output_dir, seed),
        "accuracy_after": summary.get("accuracy_after"),
        "reward_curve": rewards,
        "reward_auc": sum(rewards) / len(rewards) if rewards else None,
        "informative_fraction": sum(m.get("valid_groups_found", 0) for m in metrics) / drawn if drawn else None,
        "alpha_mean": _alpha_mean(metrics),
        "generated_tokens": sum(m.get("generated_tokens", 0) for m in metrics),
        "train_time_s": sum(m.get("step_time_s", 0.0) for m in metrics),
        # steps + final evaluation: unlike summary.json's wall time, it also covers the parts before a resume
        "wall_time_s": sum(m.get("step_time_s", 0.0) for m in metrics) + _eval_time(run_dir / "eval_after.json"),
    }


def _alpha_mean(metrics: Sequence[dict[str, Any]]) -> float | None:
    """Mean α over the steps that updated (α is logged as 0 on a step without signal); None without α."""
    values = [m["alpha"] for m in metrics if "alpha" in m and m.get("has_signal", 1)]
    return statistics.fmean(values) if values else None


def _eval_time(path: Path) -> float:
    return float(json.loads(path.read_text()).get("wall_time_s", 0.0)) if path.exists() else 0.0


def collect_records(output_dir: Path, algorithms: Sequence[str]) -> list[dict[str, Any]]:
    """Every finished run under output_dir/runs: the asked-for algorithms first, then any others found."""
    runs = output_dir / "runs"
    found = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.exists() else []
    names = [*algorithms, *(n for n in found if n not in algorithms)]
    records = []
    for name in names:
        seed_dirs = sorted((runs / name).glob("seed*"), key=lambda p: int(p.name.removeprefix("seed") or -1))
        records += [r for d in seed_dirs if (r := run_record(output_dir, name, d)) is not None]
    return records


def mean_std(values: Sequence[float | None]) -> tuple[float, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def _fmt(ms: tuple[float, float] | None, digits: int = 3) -> str:
    if ms is None:
        return "–"
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def summarise(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per algorithm: mean ± std over its finished seeds."""
    rows = []
    for name in dict.fromkeys(r["algorithm"] for r in records):
        runs = [r for r in records if r["algorithm"] == name and r["status"] == "finished"]
        diverged = sum(r["algorithm"] == name and r["status"] == "diverged" for r in records)
        gain = [r["accuracy_after"] - r["accuracy_before"] for r in runs
                if r["accuracy_after"] is not None and r["accuracy_before"] is not None]
        rows.append({
            "algorithm": name, "seeds": len(runs), "diverged": diverged,
            **{k: mean_std([r[k] for r in runs]) for k in ("accuracy_before", "accuracy_after", "reward_auc",
                                                            "informative_fraction", "alpha_mean",
                                                            "generated_tokens", "train_time_s", "wall_time_s")},
            "accuracy_gain": mean_std(gain),
        })
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    head = ("| algorithm | seeds | accuracy before | accuracy after | gain | reward AUC | informative groups | "
            "α | generated tokens | wall time (s) |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        seeds = f"{r['seeds']}" + (f" (+{r['diverged']} diverged)" if r["diverged"] else "")
        tokens = "–" if r["generated_tokens"] is None else f"{r['generated_tokens'][0]:,.0f}"
        time_s = "–" if r["wall_time_s"] is None else f"{r['wall_time_s'][0]:.0f}"
        lines.append(f"| {r['algorithm']} | {seeds} | {_fmt(r['accuracy_before'])} | {_fmt(r['accuracy_after'])} | "
                     f"{_fmt(r['accuracy_gain'])} | {_fmt(r['reward_auc'])} | {_fmt(r['informative_fraction'], 2)} | "
                     f"{_fmt(r['alpha_mean'], 2)} | {tokens} | {time_s} |")
    return "\n".join(lines) + "\n"


REPORT_NOTE = ("Mean ± sample standard deviation over seeds. accuracy: held-out, as configured in the eval "
               "section (before = the untrained model). reward AUC: the mean over steps of the mean reward of "
               "everything sampled in the step (all resampling rounds). informative groups: groups with unequal "
               "rewards / groups sampled (all rounds). α: mean over the steps that updated (1 for presets without "
               "the correction; – for runs that log none). generated tokens and wall time (training steps + final "
               "evaluation, without model loading): per run, means.\n")


def write_report(output_dir: Path, algorithms: Sequence[str], console: Console | None = None) -> dict[str, Any]:
    """comparison.md, comparison.json and comparison.png from every finished run in output_dir."""
    records = collect_records(output_dir, algorithms)
    rows = summarise(records)
    table = markdown_table(rows)
    (output_dir / "comparison.md").write_text(f"# gpgrl compare: {output_dir}\n\n{table}\n{REPORT_NOTE}")
    (output_dir / "comparison.json").write_text(json.dumps({"runs": records, "summary": rows}, indent=1) + "\n")
    plot(records, output_dir / "comparison.png")
    if console is not None:
        console.print(table, markup=False, highlight=False)
        console.print(f"wrote {output_dir / 'comparison.md'}, comparison.json and comparison.png")
    return {"runs": records, "summary": rows}


def _curve_stats(curves: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[float]]:
    """Mean, min and max per step over seeds (up to the shortest curve)."""
    n = min(len(c) for c in curves)
    cols = [[c[i] for c in curves] for i in range(n)]
    return [statistics.fmean(c) for c in cols], [min(c) for c in cols], [max(c) for c in cols]


def plot(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Reward (mean over seeds, min–max band) and held-out accuracy (before → after, ± std) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_a) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(r["algorithm"] for r in records):
        runs = [r for r in records if r["algorithm"] == name and r["status"] == "finished" and r["reward_curve"]]
        if not runs:
            continue
        mean, low, high = _curve_stats([r["reward_curve"] for r in runs])
        steps = list(range(1, len(mean) + 1))
        (line,) = ax_r.plot(steps, mean, label=name)
        ax_r.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
        before = mean_std([r["accuracy_before"] for r in runs])
        after = mean_std([r["accuracy_after"] for r in runs])
        if before is not None and after is not None:
            last = max(r["steps"] for r in runs)
            ax_a.errorbar([0, last], [before[0], after[0]], yerr=[before[1], after[1]], marker="o", capsize=3,
                          label=name, color=line.get_color())
    ax_r.set(xlabel="step", ylabel="mean reward of sampled completions", title="reward")
    ax_a.set(xlabel="step", ylabel="held-out accuracy", title="held-out accuracy (mean ± std over seeds)")
    for ax in (ax_r, ax_a):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

