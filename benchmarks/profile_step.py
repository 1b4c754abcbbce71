"""Where a training step's CPU time goes: cProfile around gpgrl's `train_step` at step_time.py's sizes.

    .venv/bin/python benchmarks/profile_step.py [--model tiny-random] [--steps 15] [--top 25] [--match REGEX]

The run is step_time.py's `gpgrl` system (8 prompts × 6, 24 forced new tokens, the default fast paths); after
3 warm-up steps, `--steps` steps run under cProfile. Prints the process CPU time per step (both threads), then the
`--top` functions by own time, or those whose name matches `--match` (e.g. 'unwrap_model|signature'), with their
calls and time per step. cProfile inflates Python-heavy code; read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_time  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--match", default=None, help="a regex on 'file:line(function)'")
    args = ap.parse_args(argv)
    from rich.console import Console

    from gpgrl.config import build_config
    from gpgrl.trainer import setup, train_step

    bench = step_time.parse(["--model", args.model])
    cfg = build_config({}, step_time.gpgrl_overrides(bench, "gpgrl", "runs/bench/profile_step"))
    run = setup(cfg, Console(file=sys.stderr))
    for step in range(1, 4):
        train_step(run, step)
    profile = cProfile.Profile()
    start = time.process_time()
    profile.enable()
    for step in range(4, 4 + args.steps):
        train_step(run, step)
    profile.disable()
    print(f"CPU time per step under cProfile: {(time.process_time() - start) / args.steps:.3f} s")
    stats = pstats.Stats(profile).stats  # {(file, line, function): (calls, primitive, own, cumulative, callers)}
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])
    if args.match:
        rows = [kv for kv in rows if re.search(args.match, f"{kv[0][0]}:{kv[0][1]}({kv[0][2]})")]
    print(f"{'calls/step':>10} {'own ms/step':>11} {'cum ms/step':>11}  function")
    for (file, line, name), (_, calls, own, cum, _) in rows[: args.top]:
        print(f"{calls / args.steps:10.1f} {1e3 * own / args.steps:11.2f} {1e3 * cum / args.steps:11.2f}  "
              f"{Path(file).name}:{line}({name})")


if __name__ == "__main__":
    main()
