"""One TRL GRPOTrainer run per seed, at the budget and settings of a gpgrl run, written as a finished gpgrl run.

    .venv/bin/python benchmarks/trl_grpo_run.py --compare-dir DIR [--name trl-grpo] [--beta 0.04]
        [--config FILE.yaml] [--seeds 0,1,2] [section.key=value ...]

The gpgrl config is loaded as `gpgrl compare` loads it (`load_config(--config, overrides)`, then per seed
`train.seed=S`, `train.output_dir=DIR/runs/<name>/seed<S>`, `eval.before=false`), and each seed is trained by TRL
in its own subprocess into `DIR/runs/<name>/seed<S>/`: `metrics.jsonl` (one line per step), `eval_after.json`
(+ `eval_after_completions.jsonl`), `trl_config.json` and, last, `summary.json`. `gpgrl compare` (run with
train.output_dir=DIR) then reports it next to its own algorithms; the untrained accuracy comes from the
comparison's DIR/baseline/seed<S>.json. A seed whose summary.json exists is reused (not run again); a seed dir
without one is started again from scratch. `--seeds` reads as gpgrl compare's `seeds=`: `3` = three seeds from
train.seed on, `0,4` = exactly those; default: train.seed.

How gpgrl's config maps onto TRL (equal work):

  model            model.name → `gpgrl.models.resolve_model_source` (the same local HF directory), loaded with
                   transformers in float32 (LoRA, bfloat16 and bf16 autocast are refused); gpgrl's tokenizer
                   (`load_tokenizer`); gradient_checkpointing = model.gradient_checkpointing
  data             `load_splits(data)`, prompts over rollout.max_prompt_tokens dropped as gpgrl drops them,
                   gpgrl's `PromptQueue(train, seed=train.seed)`: its first max_steps × prompts_per_step prompts
                   become TRL's dataset, in order (shuffle_dataset=False), as plain text rendered by
                   `render_prompt` (chat template, data.system_prompt, data.prompt_template)
  batch            num_generations = G = rollout.generations_per_prompt; per_device_train_batch_size =
                   prompts_per_step × G, gradient_accumulation_steps = 1: one generation batch per optimizer
                   step; num_iterations = 1
  sampling         max_completion_length = rollout.max_new_tokens, temperature, top_p, top_k = 0 (off, as gpgrl),
                   rollout.min_new_tokens → generation_kwargs
  rewards          `RewardSet.from_config(reward)` as ONE TRL reward function returning the weighted total
                   (questions, the completion strings, gpgrl's reward columns and completion token counts)
  loss             loss_type = grpo, scale_rewards = group, beta = --beta (0.04: the GRPO paper's baseline; > 0
                   loads TRL's reference model), fp32 (bf16 = fp16 = False), use_cpu without CUDA
  optimizer        gpgrl's own `make_optimizer` (fused AdamW with optim.lr, adam betas, weight decay on every
                   parameter, and `LambdaLR(lr_lambda)`: warm-up (s+1)/(warmup+1), then optim.schedule), passed
                   to TRL as `optimizers=`; HF's constant_with_warmup would start at lr 0. max_grad_norm,
                   max_steps = train.max_steps and seed = train.seed go to GRPOConfig; the GRPOConfig learning
                   rate fields are recorded in trl_config.json for reference only.
  evaluation       gpgrl's `evaluate` on the same held-out split with the eval section's settings, torch seeded
                   with train.seed; `write_eval` → eval_after.json

Checked while running (a failure stops the run): each step scores prompts_per_step × G completions, in groups
of G consecutive completions of one prompt, and the prompts are exactly the queue's next prompts_per_step ones
(step 1: a fresh queue's first prompts_per_step); the tokenizer adds no special tokens to the rendered text
(TRL tokenizes plain-text prompts with add_special_tokens=True, gpgrl with False).

metrics.jsonl per step: step, reward_mean = reward_mean_sampled (mean total reward of the step's completions),
reward_std, reward/<function>, reward_invalid/<function>, groups = prompts_drawn (prompts_per_step: TRL does
not resample), valid_groups_found (groups whose rewards are not all equal: max − min > gpgrl's DEGENERATE_TOL),
degenerate_groups, generated_tokens (completion tokens including EOS, as gpgrl counts them),
completion_len_mean, truncated_fraction, time_reward_s, step_time_s (wall time from one step's begin to the
next's, as benchmarks/step_time.py times TRL) and TRL's own logged values as trl/<key>. No `alpha`: TRL has none.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpgrl.compare import comparable, parse_seeds, without_ignored
from gpgrl.config import Config, ConfigError, load_config, to_dict

DEFAULT_NAME = "trl-grpo"
SCHEDULE_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


class EqualWorkError(RuntimeError):
    """TRL is not doing the work the gpgrl run it is compared with does."""


def check(ok: bool, message: str) -> None:
    if not ok:
        raise EqualWorkError(f"equal-work check failed: {message}")


# ---------------------------------------------------------------- configuration


def run_dir(args: argparse.Namespace, seed: int) -> Path:
    return Path(args.compare_dir) / "runs" / args.name / f"seed{seed}"


def seed_config(args: argparse.Namespace, seed: int) -> Config:
    """The config of one seed, as `gpgrl compare` builds a run's (its algorithm name plays no part here)."""
    own = [f"train.seed={seed}", f"train.output_dir={run_dir(args, seed)}", "eval.before=false"]
    cfg = load_config(args.config, [*args.overrides, *own])
    m = cfg.model
    if m.lora_r > 0 or m.dtype != "float32" or m.autocast_bf16:
        raise ConfigError("this TRL baseline trains the full model in float32: leave model.lora_r=0, "
                          "model.dtype=float32 and model.autocast_bf16=false")
    if cfg.train.max_steps < 1:
        raise ConfigError(f"train.max_steps={cfg.train.max_steps}: the TRL run needs at least one step")
    return cfg


def stored_identity(cfg: Config, beta: float) -> dict[str, Any]:
    """What must match for a finished seed to be reused (JSON round-tripped, as stored): `gpgrl compare`'s rule,
    so that a moved or committed comparison directory is reused here too."""
    return json.loads(json.dumps({"gpgrl_config": comparable(cfg), "beta": beta}))


def check_reusable(path: Path, cfg: Config, beta: float) -> None:
    """A finished seed may only be reused by a run with the same gpgrl config and beta."""
    stored_path = path / "trl_config.json"
    if not stored_path.exists():
        return
    stored = json.loads(stored_path.read_text())
    stored_config = without_ignored(stored.get("gpgrl_config") or {})
    if {"gpgrl_config": stored_config, "beta": stored.get("beta")} != stored_identity(cfg, beta):
        raise ConfigError(f"{path} holds a TRL run with a different config or beta: use another --compare-dir or "
                          "--name, or delete that directory")


# ---------------------------------------------------------------- data: gpgrl's prompts in gpgrl's order


@dataclass(frozen=True)
class Data:
    tokenizer: Any
    render: Callable[[Any], str]
    train: list[Any]  # gpgrl Examples (over-long prompts dropped)
    eval: list[Any]
    steps: list[Any]  # the queue's first max_steps × prompts_per_step examples: TRL's dataset rows
    texts: list[str]  # their rendered prompts
    first_step: list[str]  # a fresh queue's first prompts_per_step rendered prompts


def prepare_data(cfg: Config, tokenizer: Any) -> Data:
    from rich.console import Console

    from gpgrl.data import PromptQueue, load_splits, render_prompt
    from gpgrl.trainer import drop_long_prompts

    d, r = cfg.data, cfg.rollout

    def render(ex: Any) -> str:
        return render_prompt(tokenizer, ex, d.system_prompt, d.prompt_template, response_prefix=d.response_prefix)

    def length(ex: Any) -> int:
        return len(tokenizer(render(ex), add_special_tokens=False).input_ids)

    train, evals = load_splits(d)
    train = drop_long_prompts(train, length, r.max_prompt_tokens, "train", Console())
    evals = drop_long_prompts(evals, length, r.max_prompt_tokens, "eval", Console())
    steps = PromptQueue(train, seed=cfg.train.seed).take(cfg.train.max_steps * r.prompts_per_step)
    first = [render(ex) for ex in PromptQueue(train, seed=cfg.train.seed).take(r.prompts_per_step)]
    data = Data(tokenizer, render, train, evals, steps, [render(ex) for ex in steps], first)
    plain = tokenizer(data.texts[0]).input_ids == tokenizer(data.texts[0], add_special_tokens=False).input_ids
    check(plain, "the tokenizer adds special tokens to a rendered prompt; TRL would tokenize it with them, gpgrl "
          "without (the prompts would differ)")
    return data


# ---------------------------------------------------------------- rewards and the per-step log


def step_metrics(out: Any, completion_ids: Sequence[Sequence[int]], g: int, eos_ids: set[int]) -> dict[str, Any]:
    """gpgrl's rollout metrics of one step's scored completions (groups of g consecutive completions)."""
    import torch

    from gpgrl.algos.groups import DEGENERATE_TOL

    totals = torch.tensor(out.total, dtype=torch.float32)  # [P*G]
    by_group = totals.view(-1, g)  # [P, G]
    groups = by_group.shape[0]
    valid = int((by_group.max(dim=1).values - by_group.min(dim=1).values > DEGENERATE_TOL).sum())
    lengths = [len(ids) for ids in completion_ids]
    truncated = [not any(t in eos_ids for t in ids) for ids in completion_ids]
    n = len(lengths)
    return {
        "reward_mean": float(totals.mean()), "reward_mean_sampled": float(totals.mean()),
        "reward_std": float(totals.std()) if n > 1 else 0.0,
        **{f"reward/{k}": sum(v) / len(v) for k, v in out.per_function.items()},
        **{f"reward_invalid/{k}": v for k, v in out.invalid.items()},
        "groups": groups, "prompts_drawn": groups, "valid_groups_found": valid, "degenerate_groups": groups - valid,
        "generated_tokens": sum(lengths), "completion_len_mean": sum(lengths) / max(n, 1),
        "truncated_fraction": sum(truncated) / max(n, 1),
    }


class StepLog:
    """gpgrl's RewardSet as one TRL reward function, the equal-work checks, and metrics.jsonl (one line a step)."""

    def __init__(self, cfg: Config, data: Data, rewards: Any, eos_ids: set[int], path: Path) -> None:
        self.data, self.rewards, self.eos_ids = data, rewards, eos_ids
        self.prefix = cfg.data.response_prefix
        self.p, self.g = cfg.rollout.prompts_per_step, cfg.rollout.generations_per_prompt
        self.out = path.open("w", encoding="utf-8")
        self.step, self.started, self.record = 0, None, {}

    def begin(self) -> None:
        self.finish()
        self.step += 1
        self.record = {"step": self.step}
        self.started = time.perf_counter()

    def finish(self) -> None:
        """Close the current step (at the next step's begin or the end of training) and write its line."""
        if self.started is None:
            return
        check("reward_mean" in self.record, f"step {self.step}: TRL scored no completions in this step")
        self.record["step_time_s"] = time.perf_counter() - self.started
        self.out.write(json.dumps(self.record) + "\n")
        self.out.flush()
        self.started = None

    def close(self) -> None:
        self.finish()
        self.out.close()

    def trl_logs(self, logs: dict[str, Any]) -> None:
        if self.started is not None and "train_runtime" not in logs:
            self.record.update({f"trl/{k}": v for k, v in logs.items() if isinstance(v, int | float)})

    def check_batch(self, prompts: list[str], rows: list[int]) -> list[Any]:
        """The step's completions are P × G, grouped by prompt, on the queue's next P prompts; their examples."""
        s = self.step - 1
        check("reward_mean" not in self.record, f"step {self.step}: TRL scored a second batch in one step")
        check(len(prompts) == self.p * self.g, f"step {self.step}: {len(prompts)} completions, expected "
              f"prompts_per_step × G = {self.p} × {self.g}")
        check(rows == [i for i in range(s * self.p, (s + 1) * self.p) for _ in range(self.g)],
              f"step {self.step}: TRL's prompt rows {rows} are not the queue's next {self.p}, each {self.g} times")
        check(prompts == [self.data.texts[i] for i in rows], f"step {self.step}: TRL's prompt text differs")
        check(self.step != 1 or prompts[::self.g] == self.data.first_step,
              "step 1's prompts are not gpgrl's first prompts_per_step prompts of the queue")
        return [self.data.steps[i] for i in rows]

    def gpgrl_reward(self, prompts: list[str], completions: list[str], completion_ids: list[list[int]],
                     example_index: list[int], **_: Any) -> list[float]:
        """TRL reward function: gpgrl's weighted total reward of each completion."""
        from gpgrl.data import reward_columns, scored_text

        start = time.perf_counter()
        examples = self.check_batch(list(prompts), [int(i) for i in example_index])
        texts = [scored_text(self.prefix, c) for c in completions]  # as gpgrl scores them (data.response_prefix)
        out = self.rewards([ex.question for ex in examples], texts, reward_columns(examples),
                           completion_lengths=[len(ids) for ids in completion_ids])
        self.record.update(step_metrics(out, completion_ids, self.g, self.eos_ids))
        self.record["time_reward_s"] = time.perf_counter() - start
        return list(out.total)


def callback(log: StepLog) -> Any:
    from transformers import TrainerCallback

    class Hooks(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            log.begin()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **__: Any) -> None:
            log.trl_logs(logs or {})

        def on_train_end(self, *_: Any, **__: Any) -> None:
            log.finish()

    return Hooks()


# ---------------------------------------------------------------- the TRL trainer


def grpo_config(cfg: Config, beta: float, out_dir: str) -> Any:
    import torch
    from trl import GRPOConfig

    r, o = cfg.rollout, cfg.optim
    return GRPOConfig(
        output_dir=out_dir, use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False,
        gradient_checkpointing=cfg.model.gradient_checkpointing, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, seed=cfg.train.seed, shuffle_dataset=False,
        per_device_train_batch_size=r.prompts_per_step * r.generations_per_prompt, gradient_accumulation_steps=1,
        num_generations=r.generations_per_prompt, max_completion_length=r.max_new_tokens,
        temperature=r.temperature, top_p=r.top_p, top_k=0, loss_type="grpo", scale_rewards="group", beta=beta,
        num_iterations=1, max_steps=cfg.train.max_steps, max_grad_norm=o.max_grad_norm,
        learning_rate=o.lr, lr_scheduler_type=SCHEDULE_NAMES[o.schedule], warmup_steps=o.warmup_steps,
        adam_beta1=o.adam_beta1, adam_beta2=o.adam_beta2, weight_decay=o.weight_decay,
        dataloader_num_workers=0, log_completions=False,
        generation_kwargs={"min_new_tokens": r.min_new_tokens} if r.min_new_tokens else None)


def build_trainer(cfg: Config, beta: float, source: str, data: Data, log_path: Path, out_dir: str):
    """GRPOTrainer on gpgrl's model files, prompts and rewards, with gpgrl's optimizer and lr schedule."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOTrainer

    from gpgrl.rewards import RewardSet
    from gpgrl.rollout import eos_token_ids
    from gpgrl.trainer import make_optimizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, local_files_only=Path(source).is_dir())
    if torch.cuda.is_available():
        model = model.to("cuda")  # before the optimizer is built on its parameters
    log = StepLog(cfg, data, RewardSet.from_config(cfg.reward), eos_token_ids(model, data.tokenizer), log_path)
    dataset = Dataset.from_list([{"prompt": t, "example_index": i} for i, t in enumerate(data.texts)])
    trainer = GRPOTrainer(model=model, reward_funcs=[log.gpgrl_reward], args=grpo_config(cfg, beta, out_dir),
                          train_dataset=dataset, processing_class=data.tokenizer,
                          optimizers=make_optimizer(model, cfg), callbacks=[callback(log)])
    return trainer, log


def trl_record(cfg: Config, beta: float, trainer: Any) -> dict[str, Any]:
    import trl

    return {"trl_version": trl.__version__, "beta": beta, "grpo_config": json.loads(trainer.args.to_json_string()),
            "optimizer": "gpgrl.trainer.make_optimizer: fused AdamW(optim.lr, (adam_beta1, adam_beta2), "
                         "weight_decay on every parameter) + LambdaLR(gpgrl.trainer.lr_lambda(optim.warmup_steps, "
                         "train.max_steps, optim.schedule)), passed as optimizers=; the GRPOConfig learning_rate, "
                         "lr_scheduler_type, warmup_steps, adam_* and weight_decay above are not used by it",
            "gpgrl_config": to_dict(cfg)}


# ---------------------------------------------------------------- one seed


def evaluate_after(cfg: Config, model: Any, data: Data, out_dir: Path) -> dict[str, Any] | None:
    """gpgrl's held-out evaluation of the trained model → eval_after.json (as gpgrl's run_eval)."""
    import torch

    from gpgrl.evaluation import evaluate, sampling_params, write_eval
    from gpgrl.rewards import RewardSet
    from gpgrl.rollout import TextEncoder

    if not cfg.eval.after:
        return None
    torch.manual_seed(cfg.train.seed)
    e = cfg.eval
    encoder = TextEncoder(data.tokenizer, cfg.data.system_prompt, cfg.data.prompt_template, cfg.data.response_prefix)
    result = evaluate(model, encoder, data.eval, sampling_params(cfg), num_samples=e.num_samples, ks=e.k,
                      rewards=RewardSet.from_config(cfg.reward))
    write_eval(result, out_dir / "eval_after.json")
    print(f"eval_after: accuracy {result.accuracy:.3f} on {result.n} held-out items "
          f"(boxed answers {result.boxed_rate:.2f})")
    return result.summary()


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Train one seed with TRL and write its run directory (summary.json last)."""
    from gpgrl.models import load_tokenizer, resolve_model_source

    started = time.perf_counter()
    cfg = seed_config(args, seed)
    out = run_dir(args, seed)
    out.mkdir(parents=True, exist_ok=True)
    source = resolve_model_source(cfg.model)
    data = prepare_data(cfg, load_tokenizer(source))
    with tempfile.TemporaryDirectory(prefix="trl-grpo-") as trl_out:
        trainer, log = build_trainer(cfg, args.beta, source, data, out / "metrics.jsonl", trl_out)
        (out / "trl_config.json").write_text(json.dumps(trl_record(cfg, args.beta, trainer), indent=2) + "\n")
        try:
            trainer.train()
        finally:
            log.close()
        check(log.step == cfg.train.max_steps, f"TRL ran {log.step} steps, train.max_steps={cfg.train.max_steps}")
        after = evaluate_after(cfg, trainer.accelerator.unwrap_model(trainer.model), data, out)
    import trl

    summary = {"algorithm": f"{args.name} (TRL {trl.__version__}, loss_type grpo, beta {args.beta:g})",
               "steps": log.step, "wall_time_s": round(time.perf_counter() - started, 1), "accuracy_before": None,
               "accuracy_after": after["accuracy"] if after else None, "eval_n": after["n"] if after else 0}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------- driver: one subprocess per seed


def worker_argv(args: argparse.Namespace, seed: int) -> list[str]:
    argv = ["--compare-dir", str(args.compare_dir), "--name", args.name, "--beta", repr(args.beta)]
    if args.config:
        argv += ["--config", args.config]
    return [*argv, "--worker-seed", str(seed), *args.overrides]


def run_all(args: argparse.Namespace) -> None:
    base = load_config(args.config, args.overrides)
    seeds = parse_seeds(args.seeds, base.train.seed) if args.seeds else (base.train.seed,)
    configs = {seed: seed_config(args, seed) for seed in seeds}  # a bad config fails before anything runs
    for seed, cfg in configs.items():
        path = run_dir(args, seed)
        if (path / "summary.json").exists():
            check_reusable(path, cfg, args.beta)
            print(f"{args.name} seed {seed}: finished earlier, reused ({path})")
            continue
        print(f"{args.name} seed {seed}: training with TRL into {path}", flush=True)
        cmd = [sys.executable, "-X", "faulthandler", str(Path(__file__).resolve()), *worker_argv(args, seed)]
        code = subprocess.run(cmd, check=False).returncode
        if code != 0:
            raise SystemExit(f"{args.name} seed {seed}: the TRL run failed (exit {code}); see its output above")
    print(f"{args.name}: {len(seeds)} seed(s) in {Path(args.compare_dir) / 'runs' / args.name}; `gpgrl compare` "
          f"with train.output_dir={args.compare_dir} reports them next to its algorithms")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare-dir", required=True, help="the comparison's directory (gpgrl compare's "
                    "train.output_dir); runs go to DIR/runs/<name>/seed<S>")
    ap.add_argument("--name", default=DEFAULT_NAME, help="the run's name in the report (default trl-grpo)")
    ap.add_argument("--beta", type=float, default=0.04, help="TRL's KL coefficient (0.04: the GRPO paper's)")
    ap.add_argument("--config", help="gpgrl YAML config (as given to gpgrl compare)")
    ap.add_argument("--seeds", help="as gpgrl compare's seeds=: a count from train.seed on, or a list 0,1,2 "
                    "(default: train.seed)")
    ap.add_argument("--worker-seed", type=int, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="gpgrl section.key=value overrides (as given to gpgrl compare)")
    return ap.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    try:
        if args.worker_seed is not None:
            run_seed(args, args.worker_seed)
        else:
            run_all(args)
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from err


if __name__ == "__main__":
    main()
