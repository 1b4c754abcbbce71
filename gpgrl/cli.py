"""The `gpgrl` command; the only module that reads argv.

    gpgrl train   [--config FILE.yaml] [section.key=value ...]   train, evaluate before/after, save final/
    gpgrl eval    [--config FILE.yaml] [section.key=value ...]   evaluate model.name on the eval split of data.*
    gpgrl compare [--config FILE.yaml] algorithms=a,b seeds=N [section.key=value ...]
                                                                  the same training per algorithm and seed; table
    gpgrl config  [--config FILE.yaml] [section.key=value ...]   print the resolved, validated config
    gpgrl presets                                                 the algorithm presets as a Markdown table
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rich.console import Console

from gpgrl.config import Config, ConfigError, load_config, to_yaml

if TYPE_CHECKING:
    from gpgrl.compare import CompareSpec

EPILOG = ("Overrides are section.key=value pairs, e.g. train.max_steps=10 algorithm.name=grpo "
          "model.name=tiny-random. Run `gpgrl config` to see every key with its default.")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE.yaml", help="YAML recipe (see recipes/)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpgrl", description="Group Policy Gradient (GPG) and baselines for "
                                     "RL fine-tuning of language models.", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="{train,eval,compare,config,presets}", required=True)
    _add_config_args(sub.add_parser("train", help="train a model (defaults: GPG on SmolLM2-135M-Instruct, "
                                    "reasoning-gym basic_arithmetic)", epilog=EPILOG))
    _add_config_args(sub.add_parser("eval", help="evaluate model.name on the eval split of data.* (pass@k, "
                                    "majority vote, per-group table; JSON at eval.output)", epilog=EPILOG))
    _add_config_args(sub.add_parser("compare", help="train each of algorithms=a,b,c over seeds=N (default 1) "
                                    "with identical data, budget and eval; writes comparison.md/.json/.png to "
                                    "train.output_dir and reuses finished runs", epilog=EPILOG))
    _add_config_args(sub.add_parser("config", help="print the resolved and validated config", epilog=EPILOG))
    sub.add_parser("presets", help="list the algorithm presets (name, paper, choices)")
    return parser


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _resolve(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides, world_size=_world_size())


def console_main() -> None:
    """The `gpgrl` command: `main`, then exit with its code.

    After a reported stop (exit 128+N) the process ignores further SIGINT/SIGTERM: interpreter shutdown restores
    Python's default handlers, so a second Ctrl-C arriving then would kill the process (exit -2) instead of
    letting it end with the one line already printed. Only the command does this; in-process callers of `main`
    keep their Ctrl-C.
    """
    code = main()
    if code > 128:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)  # SIG_IGN survives interpreter finalization; SIG_DFL would not
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(soft_wrap=True)  # messages stay on one line (greppable logs)
    from gpgrl.logs import quiet_progress_bars, show_phases

    show_phases()
    if args.command in ("train", "eval", "compare"):
        quiet_progress_bars()
    try:
        if args.command == "presets":
            from gpgrl.algos.presets import presets_table

            print(presets_table())
            return 0
        if args.command == "compare":
            from gpgrl.compare import parse_spec

            return _compare(parse_spec(args.config, args.overrides, world_size=_world_size()), console)
        cfg = _resolve(args)
    except ConfigError as err:
        console.print(f"[red]config error:[/red] {err}", highlight=False)
        return 2
    if args.command == "config":
        print(to_yaml(cfg), end="")
        return 0
    if args.command == "eval":
        return _evaluate(cfg, console)
    console.rule("gpgrl train: resolved config")
    console.print(to_yaml(cfg), highlight=False, markup=False)
    from gpgrl.api import train  # the Python API's call; heavy imports happen there, once the config is valid

    return _run_job(lambda: train(cfg, console=console), console)


def _run_job(job: Callable[[], object], console: Console, resume_hint: str = "") -> int:
    """Run a training job; exit 0, 2 for a config error, 1 for a runtime failure, 128+N on signal N."""
    from gpgrl.models import ModelLoadError
    from gpgrl.rewards import RewardError
    from gpgrl.trainer import Aborted, CheckpointError, Interrupted, TrainingDiverged

    try:
        job()
    except (Interrupted, Aborted, KeyboardInterrupt) as err:
        # a KeyboardInterrupt that cut short the report of a stop (a late signal during shutdown) reports that stop
        stop = err if isinstance(err, Interrupted | Aborted) else err.__context__
        if not isinstance(stop, Interrupted | Aborted):
            raise
        console.print(f"[yellow]{stop}{resume_hint}", highlight=False)
        return 128 + stop.signum
    except (ConfigError, ModelLoadError, RewardError, TrainingDiverged, CheckpointError) as err:
        console.print(f"[red]{type(err).__name__}:[/red] {err}", highlight=False)
        return 2 if isinstance(err, ConfigError) else 1
    return 0


def _compare(spec: CompareSpec, console: Console) -> int:
    """`gpgrl compare`: the grid of runs, then the report."""
    from gpgrl.compare import compare

    console.print(f"gpgrl compare: {', '.join(spec.algorithms)} x seeds {list(spec.seeds)} in {spec.output_dir}")
    return _run_job(lambda: compare(spec, console), console,
                    resume_hint="\n(to continue the whole comparison, run the same gpgrl compare command again: "
                                "finished runs are reused and this one resumes)")


def _evaluate(cfg: Config, console: Console) -> int:
    """`gpgrl eval`: exit 0, 2 for a config or data error, 1 for a model or reward failure."""
    from gpgrl.api import evaluate  # the Python API's call
    from gpgrl.models import ModelLoadError
    from gpgrl.rewards import RewardError

    try:
        evaluate(cfg, console=console)
    except (ConfigError, ModelLoadError, RewardError) as err:
        console.print(f"[red]{type(err).__name__}:[/red] {err}", highlight=False)
        return 2 if isinstance(err, ConfigError) else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
