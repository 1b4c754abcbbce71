"""Step time of gpgrl's GPG against TRL's GRPOTrainer at equal work, alternating the systems.

Every system runs in its own worker process (so its peak RSS is its own) and is driven one optimizer step at a
time by this script, in a rotating order, so that load from other processes on the machine hits all systems
alike. Two schedules:

* `lockstep` (default for tiny-random): one worker per system, all alive; step i of every system runs before
  step i + 1 of any. Needs the memory of all workers at once.
* `rounds` (default otherwise): one worker alive at a time; each round starts every system in turn for
  `--warmup` untimed + `--steps-per-round` timed steps, in a rotating order.

Equal work: the same prompts per step (gpgrl's prompt queue, handed to TRL in the same order), the same group
size G, max new tokens, temperature 1.0, top-p 1.0, fp32, no gradient checkpointing, one optimizer step per
generation batch. With `--lengths forced` (default) both systems must generate exactly max new tokens per
completion (min_new_tokens = max_new_tokens), so both train on the same number of completion tokens; with
`--lengths natural` completions end at EOS and completion tokens/s is the fair figure.

Systems (`--systems`, comma-separated):
  gpgrl             GPG, beta_th 0, hash reward (no degenerate groups), shared prefill + shared prompt forward
  gpgrl_math        as gpgrl, with the default math rewards (accuracy + boxed_format): degenerate groups skipped
  gpgrl_plain       as gpgrl without the fast paths (gpgrl's defaults before this benchmark)
  gpgrl_prefill     as gpgrl_plain + shared prefill only
  gpgrl_prompt_fwd  as gpgrl_plain + shared prompt forward only
  gpgrl_hf_step     as gpgrl with every decode step the model's own forward (before the fused decode step,
                    `gpgrl.rollout.decode_step`)
  gpgrl_bf16        as gpgrl + bf16 autocast (model.autocast_bf16)
  gpgrl_kl          as gpgrl + a k3 KL term (algorithm.kl_coef=0.04: reference model, no skipping)
  previous_default  the default recipe as it was before issue 13 (plain sampler, plain training forward), with its
                    own settings: natural lengths, T 0.7, beta_th 0.6 resampling, the math rewards
  default           the default recipe as it is: the same keys read from recipes/default.yaml
  trl_beta0.04      TRL GRPOTrainer, loss_type grpo, beta 0.04 (reference model), hash reward
  trl_beta0         TRL GRPOTrainer, loss_type grpo, beta 0, hash reward

Time split per step: generate, reward, ref (log-prob passes without gradient: TRL's reference model; gpgrl
runs its reference pass inside train), train (gpgrl: forward/backward and optimizer step; TRL: the rest of the
step, i.e. loss forward/backward, optimizer step and TRL's own bookkeeping and logging) and other.

The last lines printed are the step-time ratios of `gpgrl` to TRL (`ratio_vs_trl_beta0.04=X`,
`ratio_vs_trl_beta0=Y`), and with `previous_default,default` last of all `ratio_vs_previous_default=X` (median step
time of `default` over `previous_default`; both sample the same tokens, so their steps do the same work); `--out`
writes every measurement as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_prompts, machine, median, peak_rss_mb, write_json  # noqa: E402

REWARD_FILE = Path(__file__).resolve().parent / "bench_rewards.py"
FAST = ("rollout.shared_prefill=true", "rollout.shared_prompt_forward=true")
PLAIN = ("rollout.shared_prefill=false", "rollout.shared_prompt_forward=false")
VARIED = (f"reward.functions=[{REWARD_FILE}:varied]", "reward.weights=[1.0]")
DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "default.yaml"
RECIPE_KEYS = ("rollout.min_new_tokens", "rollout.temperature", "rollout.top_p", "rollout.generation_batch_size",
               "rollout.micro_batch_size", "rollout.shared_prefill", "rollout.shared_prompt_forward",
               "rollout.stop_after_answer", "algorithm.beta_th", "optim.lr", "optim.warmup_steps",
               "model.gradient_checkpointing", "model.dtype")
"""The settings the harness fixes for equal work, which `default` and `previous_default` take from their recipe
instead (natural lengths, T = 0.7, beta_th 0.6 resampling, the math rewards, the recipe's batch sizes)."""


def recipe_overrides(path: Path = DEFAULT_RECIPE) -> tuple[str, ...]:
    """`key=value` overrides that give the harness's fixed keys the values of the recipe at `path`."""
    import yaml

    recipe = yaml.safe_load(path.read_text())
    values = {key: recipe[key.split(".")[0]][key.split(".")[1]] for key in RECIPE_KEYS}
    return tuple(f"{key}={json.dumps(value)}" for key, value in values.items())


PREVIOUS_DEFAULT = ("rollout.min_new_tokens=0", "rollout.temperature=0.7", "rollout.top_p=1.0",
                    "rollout.generation_batch_size=64", "rollout.micro_batch_size=16",
                    "rollout.stop_after_answer=false", "algorithm.beta_th=null", "optim.lr=2e-5",
                    "optim.warmup_steps=2", "model.gradient_checkpointing=false", "model.dtype=\"float32\"", *PLAIN)
"""recipes/default.yaml as it was before issue 13 (commit 6512c6c), in the same keys."""
GPGRL_SYSTEMS: dict[str, tuple[str, ...]] = {
    "gpgrl": FAST + VARIED,
    "gpgrl_math": FAST,
    "gpgrl_plain": PLAIN + VARIED,
    "gpgrl_prefill": FAST[:1] + PLAIN[1:] + VARIED,
    "gpgrl_prompt_fwd": PLAIN[:1] + FAST[1:] + VARIED,
    "gpgrl_hf_step": FAST + VARIED,
    "gpgrl_bf16": FAST + VARIED + ("model.autocast_bf16=true",),
    "gpgrl_kl": FAST + VARIED + ("algorithm.kl_coef=0.04",),
    "previous_default": PREVIOUS_DEFAULT,
    "default": recipe_overrides(),
}
TRL_SYSTEMS = {"trl_beta0.04": 0.04, "trl_beta0": 0.0}
PHASES = ("generate", "reward", "ref", "train", "other")


# ---------------------------------------------------------------- worker side


@dataclass
class Phases:
    """Wall time per phase within the current step."""

    totals: dict[str, float] = field(default_factory=dict)
    tokens: int = 0

    def wrap(self, phase: str, fn: Callable, when: Callable[[], bool] = lambda: True) -> Callable:
        def timed(*args, **kwargs):
            if not when():
                return fn(*args, **kwargs)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[phase] = self.totals.get(phase, 0.0) + time.perf_counter() - start

        return timed


def step_record(elapsed: float, phases: dict[str, float], tokens: int, **extra: Any) -> dict[str, Any]:
    """One step's times; without a measured `train` phase (TRL), train is the rest of the step."""
    phases = dict(phases)
    if "train" not in phases:
        phases["train"] = elapsed - sum(phases.values())
    record = {"step_time_s": elapsed, "completion_tokens": tokens, "tokens_per_s": tokens / max(elapsed, 1e-9),
              **{f"{p}_s": phases.get(p, 0.0) for p in PHASES[:-1]}, **extra}
    record["other_s"] = elapsed - sum(phases.get(p, 0.0) for p in PHASES[:-1])
    return record


def gpgrl_overrides(args: argparse.Namespace, system: str, out_dir: str) -> list[str]:
    p, g, t = args.prompts, args.generations, args.max_new_tokens
    return [f"model.name={args.model}", f"train.seed={args.seed}", f"train.output_dir={out_dir}",
            f"rollout.prompts_per_step={p}", f"rollout.generations_per_prompt={g}", f"rollout.max_new_tokens={t}",
            f"rollout.min_new_tokens={t if args.lengths == 'forced' else 0}", "rollout.temperature=1.0",
            "rollout.top_p=1.0", f"rollout.generation_batch_size={p * g}", "algorithm.name=gpg",
            "algorithm.beta_th=0", f"optim.lr={args.lr}", "optim.warmup_steps=0", "logging.tensorboard=false",
            "logging.progress=false", "model.gradient_checkpointing=false", "model.dtype=float32",
            *GPGRL_SYSTEMS[system], *args.gpgrl_set]


def serve_gpgrl(args: argparse.Namespace, system: str, proto: TextIO, out_dir: str) -> None:
    from rich.console import Console

    from gpgrl.config import build_config
    from gpgrl.trainer import setup, train_step

    cfg = build_config({}, gpgrl_overrides(args, system, out_dir))
    if system == "gpgrl_hf_step":  # not a config key: the fused step is exact, so it has no switch
        import gpgrl.rollout.decode_step as decode_step

        decode_step.FUSED = False
    run = setup(cfg, Console(file=sys.stderr))
    for _ in range(args.start_step):  # the prompts earlier rounds used
        run.queue.take(args.prompts)
    reply(proto, {"ready": True, "rss_after_setup_mb": peak_rss_mb(), "config": cfg.rollout.__dict__})
    step = 0
    while read_command() == "step":
        step += 1
        m, _ = train_step(run, args.start_step + step)
        phases = {"generate": m["time_generate_s"], "reward": m["time_reward_s"], "train": m["time_train_s"]}
        reply(proto, step_record(m["step_time_s"], phases, m["generated_tokens"],
                                 work_saved_fraction=m["work_saved_fraction"], reward_mean=m["reward_mean"]))
    reply(proto, {"peak_rss_mb": peak_rss_mb()})


class LockstepCallback:
    """Blocks each TRL step until the driver says `step`, and reports the step when the next one begins.

    A step is timed from `on_step_begin` to the next `on_step_begin` (or the end of training), so TRL's own
    logging after the optimizer step counts as part of its step, as gpgrl's bookkeeping does."""

    def __init__(self, proto: TextIO, phases: Phases) -> None:
        self.proto, self.phases, self.started = proto, phases, None

    def finish(self) -> None:
        if self.started is not None:
            elapsed = time.perf_counter() - self.started
            reply(self.proto, step_record(elapsed, self.phases.totals, self.phases.tokens, work_saved_fraction=0.0))
            self.started = None

    def on_step_begin(self, *_: Any, **__: Any) -> None:
        self.finish()
        if read_command() != "step":
            raise SystemExit(0)
        self.phases.totals, self.phases.tokens = {}, 0
        self.started = time.perf_counter()

    def on_train_end(self, *_: Any, **__: Any) -> None:
        self.finish()


def trl_trainer(args: argparse.Namespace, beta: float, out_dir: str, callback: Any):
    """TRL's GRPOTrainer on the same model, prompts (in gpgrl's order) and generation settings."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from gpgrl.config import ModelConfig
    from gpgrl.models import load_tokenizer, resolve_model_source
    from gpgrl.rewards import load_reward_function

    source = resolve_model_source(ModelConfig(name=args.model))
    steps = args.warmup + args.steps_per_round
    start = args.start_step * args.prompts
    prompts = default_prompts(args.model, start + steps * args.prompts, args.seed)[start:]
    config = GRPOConfig(
        output_dir=out_dir, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, report_to="none",
        save_strategy="no", logging_steps=1, disable_tqdm=True, seed=args.seed, shuffle_dataset=False,
        per_device_train_batch_size=args.prompts * args.generations, num_generations=args.generations,
        max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, loss_type="grpo",
        scale_rewards="group", beta=beta, num_iterations=1, learning_rate=args.lr, lr_scheduler_type="constant",
        max_steps=steps, dataloader_num_workers=0, log_completions=False,
        generation_kwargs={"min_new_tokens": args.max_new_tokens} if args.lengths == "forced" else None)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    hooks = type("Hooks", (TrainerCallback,), {"on_step_begin": lambda self, *a, **k: callback.on_step_begin(),
                                                "on_train_end": lambda self, *a, **k: callback.on_train_end()})
    return GRPOTrainer(model=model, reward_funcs=[load_reward_function(f"{REWARD_FILE}:varied")], args=config,
                       train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                       processing_class=load_tokenizer(source), callbacks=[hooks()])


def instrument_trl(trainer: Any, phases: Phases) -> None:
    """Time generation, reward and the no-grad log-prob passes (reference / old policy) of each step."""
    import torch

    model = trainer.accelerator.unwrap_model(trainer.model)
    model.generate = phases.wrap("generate", model.generate)
    calc = trainer._calculate_rewards

    def rewards(inputs, prompts, completions, completion_ids_list):
        phases.tokens += sum(len(ids) for ids in completion_ids_list)
        return calc(inputs, prompts, completions, completion_ids_list)

    trainer._calculate_rewards = phases.wrap("reward", rewards)
    trainer._get_per_token_logps_and_entropies = phases.wrap(
        "ref", trainer._get_per_token_logps_and_entropies, when=lambda: not torch.is_grad_enabled())


def serve_trl(args: argparse.Namespace, system: str, proto: TextIO, out_dir: str) -> None:
    phases = Phases()
    callback = LockstepCallback(proto, phases)
    trainer = trl_trainer(args, TRL_SYSTEMS[system], out_dir, callback)
    instrument_trl(trainer, phases)
    reply(proto, {"ready": True, "rss_after_setup_mb": peak_rss_mb()})
    trainer.train()
    while read_command() == "step":  # more steps asked than the trainer was built for
        reply(proto, {"error": "trainer finished"})
    reply(proto, {"peak_rss_mb": peak_rss_mb()})


def read_command() -> str:
    line = sys.stdin.readline()
    return line.strip() or "quit"


def reply(proto: TextIO, payload: dict[str, Any]) -> None:
    proto.write(json.dumps(payload) + "\n")
    proto.flush()


def worker_main(args: argparse.Namespace) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library prints go to the worker log, the protocol stays clean
    sys.stdout = sys.stderr
    with tempfile.TemporaryDirectory(prefix="gpgrl-bench-") as out_dir:
        serve = serve_trl if args.worker in TRL_SYSTEMS else serve_gpgrl
        serve(args, args.worker, proto, out_dir)


# ---------------------------------------------------------------- driver side


class Worker:
    """One system in its own process, driven one step at a time over a pipe."""

    def __init__(self, system: str, argv: list[str], start_step: int, log_dir: Path) -> None:
        self.system = system
        self.log = log_dir / f"{system}-{start_step}.log"
        here = Path(__file__).resolve()
        cmd = [sys.executable, here.name, *argv, "--worker", system, "--start-step", str(start_step)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"),
                                     text=True, cwd=here.parent)
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text()[-3000:]
            raise RuntimeError(f"worker {self.system} died (exit {self.proc.poll()}); log {self.log}:\n{tail}")
        return json.loads(line)

    def step(self) -> dict[str, Any]:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> dict[str, Any]:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        info = self._read()
        self.proc.wait(timeout=120)
        return info


@dataclass
class Results:
    steps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)

    def add(self, system: str, record: dict[str, Any], timed: bool) -> None:
        record = {**record, "timed": timed}
        self.steps.setdefault(system, []).append(record)
        flag = "" if timed else " (warm-up)"
        print(f"  {system:<17} {record['step_time_s']:8.2f} s  {record['tokens_per_s']:8.1f} tok/s{flag}",
              flush=True)

    def close(self, system: str, info: dict[str, Any]) -> None:
        self.rss[system] = max(self.rss.get(system, 0.0), info["peak_rss_mb"])


def worker_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--model", args.model, "--prompts", str(args.prompts), "--generations", str(args.generations),
            "--max-new-tokens", str(args.max_new_tokens), "--lengths", args.lengths, "--seed", str(args.seed),
            "--lr", str(args.lr), "--warmup", str(args.warmup)]
    for item in args.gpgrl_set:
        argv += ["--gpgrl-set", item]
    return argv


def rotated(systems: list[str], k: int) -> list[str]:
    k %= len(systems)
    return systems[k:] + systems[:k]


def run_lockstep(args: argparse.Namespace, systems: list[str], log_dir: Path) -> Results:
    results = Results()
    argv = worker_argv(args) + ["--steps-per-round", str(args.steps)]
    workers = {s: Worker(s, argv, 0, log_dir) for s in systems}
    try:
        for i in range(args.warmup + args.steps):
            print(f"step {i + 1}/{args.warmup + args.steps}", flush=True)
            for s in rotated(systems, i):
                results.add(s, workers[s].step(), timed=i >= args.warmup)
    finally:
        for s, w in workers.items():
            results.close(s, w.close())
    return results


def run_rounds(args: argparse.Namespace, systems: list[str], log_dir: Path) -> Results:
    results = Results()
    k = args.steps_per_round
    rounds = -(-args.steps // k)
    argv = worker_argv(args) + ["--steps-per-round", str(k)]
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", flush=True)
        for s in rotated(systems, r):
            worker = Worker(s, argv, r * (args.warmup + k), log_dir)
            for i in range(args.warmup + k):
                results.add(s, worker.step(), timed=i >= args.warmup)
            results.close(s, worker.close())
    return results


def summarise(results: Results) -> dict[str, dict[str, Any]]:
    table = {}
    for system, records in results.steps.items():
        timed = [r for r in records if r["timed"]]
        row = {key: median([r[key] for r in timed]) for key in
               ("step_time_s", "tokens_per_s", "completion_tokens", "work_saved_fraction",
                *(f"{p}_s" for p in PHASES))}
        table[system] = {**row, "steps": len(timed), "peak_rss_mb": results.rss.get(system, float("nan"))}
    return table


def paired_ratio(results: Results, a: str, b: str) -> float:
    """Median over steps of time(a, step i) / time(b, step i): robust to load that drifts over the run."""
    ta = [r["step_time_s"] for r in results.steps.get(a, []) if r["timed"]]
    tb = [r["step_time_s"] for r in results.steps.get(b, []) if r["timed"]]
    return median([x / y for x, y in zip(ta, tb, strict=False)]) if ta and tb else float("nan")


def print_table(table: dict[str, dict[str, Any]]) -> None:
    head = (f"{'system':<17} {'step s':>8} {'tok/s':>8} {'tokens':>7} {'gen s':>7} {'rew s':>7} {'ref s':>7} "
            f"{'train s':>8} {'other s':>8} {'saved':>6} {'RSS MiB':>8}")
    print(head)
    for s, r in table.items():
        print(f"{s:<17} {r['step_time_s']:8.2f} {r['tokens_per_s']:8.1f} {r['completion_tokens']:7.0f} "
              f"{r['generate_s']:7.2f} {r['reward_s']:7.2f} {r['ref_s']:7.2f} {r['train_s']:8.2f} "
              f"{r['other_s']:8.2f} {r['work_saved_fraction']:6.2f} {r['peak_rss_mb']:8.0f}")


def ratios(table: dict[str, dict[str, Any]], results: Results) -> dict[str, float]:
    out = {}
    for g in (s for s in table if s.startswith("gpgrl") or s.endswith("default")):
        prefix = "" if g == "gpgrl" else f"{g}_"
        for trl in (t for t in TRL_SYSTEMS if t in table):
            tag = trl.removeprefix("trl_")
            out[f"{prefix}rss_ratio_vs_trl_{tag}"] = table[g]["peak_rss_mb"] / table[trl]["peak_rss_mb"]
            out[f"{prefix}paired_ratio_vs_trl_{tag}"] = paired_ratio(results, g, trl)
            out[f"{prefix}ratio_vs_trl_{tag}"] = table[g]["step_time_s"] / table[trl]["step_time_s"]
    if "default" in table and "previous_default" in table:
        out["paired_ratio_vs_previous_default"] = paired_ratio(results, "default", "previous_default")
        out["ratio_vs_previous_default"] = table["default"]["step_time_s"] / table["previous_default"]["step_time_s"]
    main = [k for k in out if k.startswith("ratio_vs_trl_")] + [k for k in out if k == "ratio_vs_previous_default"]
    return {**{k: v for k, v in out.items() if k not in main}, **{k: out[k] for k in main}}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-random", help="tiny-random | smollm2-135m-instruct | a path")
    ap.add_argument("--systems", default="gpgrl,gpgrl_math,trl_beta0.04,trl_beta0")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per system")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per worker process")
    ap.add_argument("--mode", choices=("auto", "lockstep", "rounds"), default="auto")
    ap.add_argument("--steps-per-round", type=int, default=2, help="timed steps per worker in rounds mode")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step (the default recipe's 8)")
    ap.add_argument("--generations", type=int, default=6, help="G (the default recipe's 6)")
    ap.add_argument("--max-new-tokens", type=int, default=24, help="the default recipe's 24")
    ap.add_argument("--lengths", choices=("forced", "natural"), default="forced")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--gpgrl-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra gpgrl override for every gpgrl system (repeatable)")
    ap.add_argument("--out", help="write all measurements to this JSON file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--start-step", type=int, default=0, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        worker_main(args)
        return
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in GPGRL_SYSTEMS and s not in TRL_SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; known: {', '.join([*GPGRL_SYSTEMS, *TRL_SYSTEMS])}")
    mode = args.mode if args.mode != "auto" else ("lockstep" if args.model == "tiny-random" else "rounds")
    env = machine()
    recipes = [s for s in systems if s.endswith("default")]
    lengths = f"{args.lengths} lengths" + (f"; {', '.join(recipes)}: their recipe's lengths, T and rewards"
                                           if recipes else "")
    print(f"{args.model}: {args.prompts} prompts x G={args.generations}, {args.max_new_tokens} new tokens "
          f"({lengths}), {mode}; {env['cpu']}, {env['cores']} cores, loadavg {env['loadavg']}")
    with tempfile.TemporaryDirectory(prefix="gpgrl-bench-logs-") as logs:
        runner = run_lockstep if mode == "lockstep" else run_rounds
        results = runner(args, systems, Path(logs))
    table = summarise(results)
    env["loadavg_end"] = list(os.getloadavg())
    print(f"\nmedians over timed steps (loadavg at start {env['loadavg']}, at end {env['loadavg_end']}):")
    print_table(table)
    out = ratios(table, results)
    write_json(args.out, {"args": {k: v for k, v in vars(args).items() if k not in ("worker", "start_step")},
                          "mode": mode, "machine": env, "summary": table, "ratios": out, "steps": results.steps})
    for key, value in out.items():
        print(f"{key}={value:.3f}")


if __name__ == "__main__":
    main()
