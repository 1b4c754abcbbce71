"""The `gpgrl` command; the only module that reads argv.

    gpgrl train   [--config FILE.yaml] [section.key=value ...]   train, evaluate before/after, save final/
    gpgrl eval    [--config FILE.yaml] [section.key=value ...]   evaluate model.name on the eval split of data.*
    gpgrl config  [--config FILE.yaml] [section.key=value ...]   print the resolved, validated config
    gpgrl presets                                                 the algorithm presets as a Markdown table
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rich.console import Console

from gpgrl.config import Config, ConfigError, load_config, to_yaml

EPILOG = ("Overrides are section.key=value pairs, e.g. train.max_steps=10 algorithm.name=grpo "
          "model.name=tiny-random. Run `gpgrl config` to see every key with its default.")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE.yaml", help="YAML recipe (see recipes/)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpgrl", description="Group Policy Gradient (GPG) and baselines for "
                                     "RL fine-tuning of language models.", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="{train,eval,config,presets}", required=True)
    _add_config_args(sub.add_parser("train", help="train a model (defaults: GPG on SmolLM2-135M-Instruct, "
                                    "reasoning-gym basic_arithmetic)", epilog=EPILOG))
    _add_config_args(sub.add_parser("eval", help="evaluate model.name on the eval split of data.* (pass@k, "
                                    "majority vote, per-group table; JSON at eval.output)", epilog=EPILOG))
    _add_config_args(sub.add_parser("config", help="print the resolved and validated config", epilog=EPILOG))
    sub.add_parser("presets", help="list the algorithm presets (name, paper, choices)")
    return parser


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _resolve(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides, world_size=_world_size())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(soft_wrap=True)  # messages stay on one line (greppable logs)
    try:
        if args.command == "presets":
            from gpgrl.algos.presets import presets_table

            print(presets_table())
            return 0
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
    from gpgrl.models import ModelLoadError  # heavy imports only once the config is valid
    from gpgrl.rewards import RewardError
    from gpgrl.trainer import CheckpointError, Interrupted, TrainingDiverged, train

    try:
        train(cfg, console)
    except Interrupted as stop:
        console.print(f"[yellow]{stop}", highlight=False)
        return 128 + stop.signum
    except (ConfigError, ModelLoadError, RewardError, TrainingDiverged, CheckpointError) as err:
        console.print(f"[red]{type(err).__name__}:[/red] {err}", highlight=False)
        return 2 if isinstance(err, ConfigError) else 1
    return 0


def _evaluate(cfg: Config, console: Console) -> int:
    """`gpgrl eval`: exit 0, 2 for a config or data error, 1 for a model or reward failure."""
    from gpgrl.evaluate import run_eval_command  # heavy imports only once the config is valid
    from gpgrl.models import ModelLoadError
    from gpgrl.rewards import RewardError

    try:
        run_eval_command(cfg, console)
    except (ConfigError, ModelLoadError, RewardError) as err:
        console.print(f"[red]{type(err).__name__}:[/red] {err}", highlight=False)
        return 2 if isinstance(err, ConfigError) else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
