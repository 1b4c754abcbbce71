"""The training loop: prompts → rollout → rewards → (resample) → advantages → loss → optimizer step.

One loop for every algorithm: all algorithm choices come from the resolved preset (`gpgrl.algos.presets`),
which the loop calls without ever looking at its name. Group statistics, M, α and the loss normaliser are
computed once per optimizer step over the whole assembled batch, so micro-batching does not change the
result. Samples whose advantage is exactly zero are not run through forward/backward when the loss has no
other term (they carry no gradient under GPG), and the saved fraction is logged.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.console import Console
from rich.table import Table

from gpgrl.algos.aggregation import Normaliser, aggregate
from gpgrl.algos.presets import Algorithm, resolve_algorithm
from gpgrl.checkpoint import LoopState, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from gpgrl.config import Config, ConfigError, to_dict, to_yaml
from gpgrl.data import Example, PromptQueue, load_splits, render_prompt
from gpgrl.evaluate import evaluate, write_eval
from gpgrl.metrics import MetricsWriter, ProgressBar
from gpgrl.models import load_policy, load_reference, save_final
from gpgrl.resample import CollectStats, Group, collect_batch
from gpgrl.rewards import RewardSet
from gpgrl.rollout import Sample, SamplingParams, collate, generate, token_logprobs


@dataclass
class Timer:
    """Accumulates wall time per phase within one step."""

    totals: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[phase] = self.totals.get(phase, 0.0) + time.perf_counter() - start


@dataclass
class Run:
    """Everything a step needs, built once by `setup`."""

    cfg: Config
    algo: Algorithm
    accelerator: Accelerator
    model: Any
    tokenizer: Any
    reference: Any
    train_examples: list[Example]
    eval_examples: list[Example]
    queue: PromptQueue
    rewards: RewardSet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    output_dir: Path
    console: Console
    updates: int = 0  # optimizer steps taken; a crash checkpoint is only exact if the failed step took none

    def prompt(self, example: Example) -> str:
        """The chat-templated prompt text of an example."""
        return render_prompt(self.tokenizer, example, self.cfg.data.system_prompt, self.cfg.data.prompt_template)


# ---------------------------------------------------------------- setup


def lr_lambda(warmup: int, total: int, schedule: str):
    """Multiplier of the peak lr at optimizer step `s` (0-based): linear warm-up, then the schedule."""

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / (warmup + 1)
        progress = (s - warmup) / max(1, total - warmup)
        decay = {"constant": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress))}
        return max(0.0, decay[schedule])

    return factor


def make_optimizer(model, cfg: Config) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optim
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=(o.adam_beta1, o.adam_beta2), weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lr_lambda(o.warmup_steps, cfg.train.max_steps, o.schedule))
    return optimizer, scheduler


def prepare_output_dir(cfg: Config) -> Path:
    """Create the output directory and write config.yaml; never overwrite a previous run's checkpoints."""
    out = Path(cfg.train.output_dir)
    previous = latest_checkpoint(out)
    if previous is not None and not cfg.train.resume:
        raise ConfigError(f"train.output_dir={str(out)!r} already holds a run ({previous.name}): continue it with "
                          "train.resume=true, or choose another train.output_dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(to_yaml(cfg))
    except OSError as err:
        raise ConfigError(f"train.output_dir={str(out)!r} is not writable ({err.strerror}): "
                          "choose another directory") from err
    return out


def setup(cfg: Config, console: Console) -> Run:
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    set_seed(cfg.train.seed)
    algo = resolve_algorithm(cfg.algorithm.name, **cfg.algorithm.overrides())
    output_dir = prepare_output_dir(cfg)
    train_examples, eval_examples = load_splits(cfg.data)
    reward_set = RewardSet.from_config(cfg.reward)
    model, tokenizer = load_policy(cfg.model, cfg.train.seed)
    reference = load_reference(cfg.model) if algo.needs_reference else None
    optimizer, scheduler = make_optimizer(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    if reference is not None:
        reference = reference.to(accelerator.device)
    run = Run(cfg, algo, accelerator, model, tokenizer, reference, [], [], None, reward_set, optimizer, scheduler,
              output_dir, console)
    run.train_examples = drop_long_prompts(run, train_examples, "train")
    run.eval_examples = drop_long_prompts(run, eval_examples, "eval")
    run.queue = PromptQueue(run.train_examples, seed=cfg.train.seed)
    return run


def drop_long_prompts(run: Run, examples: list[Example], split: str) -> list[Example]:
    """Policy for over-long prompts: drop them (as the reference does) and say how many."""
    limit = run.cfg.rollout.max_prompt_tokens
    if limit == 0:
        return examples
    kept = [ex for ex in examples if len(run.tokenizer(run.prompt(ex), add_special_tokens=False).input_ids) <= limit]
    if len(kept) < len(examples):
        run.console.print(f"[yellow]{len(examples) - len(kept)} of {len(examples)} {split} prompts are longer than "
                          f"rollout.max_prompt_tokens={limit} tokens and were dropped")
    if split == "train" and not kept:
        raise ConfigError(f"every training prompt is longer than rollout.max_prompt_tokens={limit}: raise it")
    return kept


# ---------------------------------------------------------------- rollout and scoring


def score_groups(run: Run, examples: Sequence[Example], groups: list[list[Sample]],
                 counts: dict[str, int]) -> list[Group]:
    """Score every completion with the reward set; one `Group` per prompt."""
    flat = [(ex, s) for ex, g in zip(examples, groups, strict=True) for s in g]
    columns = {"answer": [ex.answer for ex, _ in flat]}
    for key in examples[0].columns if examples else ():
        columns[key] = [ex.columns[key] for ex, _ in flat]
    out = run.rewards([ex.question for ex, _ in flat], [s.text for _, s in flat], columns)
    for name, count in out.invalid.items():
        counts[f"reward_invalid/{name}"] = counts.get(f"reward_invalid/{name}", 0) + count
    total = torch.tensor(out.total, dtype=torch.float32)  # [P*G]
    g = run.cfg.rollout.generations_per_prompt
    return [Group(ex, groups[i], total[i * g:(i + 1) * g],
                  {k: v[i * g:(i + 1) * g] for k, v in out.per_function.items()})
            for i, ex in enumerate(examples)]


def rollout_and_score(run: Run, timer: Timer, counts: dict[str, int]):
    """The rollout function handed to the resampling loop: generate G completions per prompt, then score.

    `counts` accumulates generated tokens over all rounds and invalid rewards per function."""
    r = run.cfg.rollout
    params = SamplingParams(r.max_new_tokens, r.temperature, r.top_p, r.generation_batch_size)
    policy = run.accelerator.unwrap_model(run.model)

    def rollout(examples: Sequence[Example]) -> list[Group]:
        prompts = [run.prompt(ex) for ex in examples]
        with timer("generate"):
            groups = generate(policy, run.tokenizer, prompts, r.generations_per_prompt, params)
        counts["generated_tokens"] = counts.get("generated_tokens", 0) + sum(s.length for g in groups for s in g)
        with timer("reward"):
            return score_groups(run, examples, groups, counts)

    return rollout


# ---------------------------------------------------------------- policy update


@dataclass(frozen=True)
class StepBatch:
    """The assembled batch of one optimizer step, flattened over groups."""

    samples: list[Sample]
    group_ids: torch.Tensor  # [N]
    rewards: torch.Tensor  # [N]
    lengths: torch.Tensor  # [N]
    degenerate: torch.Tensor  # [N] bool

    @staticmethod
    def from_groups(groups: Sequence[Group]) -> StepBatch:
        samples = [s for g in groups for s in g.samples]
        gids = torch.tensor([i for i, g in enumerate(groups) for _ in g.samples])  # [N]
        rewards = torch.cat([g.rewards for g in groups])  # [N]
        lengths = torch.tensor([s.length for s in samples])  # [N]
        degenerate = torch.tensor([g.degenerate for g in groups for _ in g.samples])  # [N]
        return StepBatch(samples, gids, rewards, lengths, degenerate)


def micro_batch_loss(run: Run, samples: list[Sample], adv: torch.Tensor, weights: torch.Tensor,
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of this micro-batch's per-token losses (its share of the step's aggregated loss)."""
    mb = collate(samples, run.tokenizer.pad_token_id)
    device = run.accelerator.device
    mask = mb.completion_mask.to(device)  # [B, Lc]
    temperature = run.cfg.rollout.temperature
    logp = token_logprobs(run.model, mb, temperature)  # [B, Lc]
    ref_logp = None
    if run.reference is not None:
        with torch.no_grad():
            ref_logp = token_logprobs(run.reference, mb, temperature)  # [B, Lc]
    # one update per rollout: the sampling policy is the current one, so old log-probs are logp.detach()
    token_loss, stats = run.algo.token_loss(logp, logp.detach(), adv.to(device), mask, ref_logp=ref_logp)
    return aggregate(token_loss, mask, weights.to(device)), stats


def active_indices(run: Run, adv: torch.Tensor) -> list[int]:
    """Samples that need forward/backward: all, unless a zero advantage makes a sample's loss vanish."""
    if not run.algo.zero_advantage_is_noop:
        return list(range(adv.numel()))
    return [i for i in range(adv.numel()) if adv[i] != 0]


def backward_all(run: Run, batch: StepBatch, adv: torch.Tensor, weights: torch.Tensor,
                 active: list[int]) -> dict[str, float]:
    """Forward/backward over micro-batches of the active samples; gradients accumulate into .grad."""
    size = run.cfg.rollout.micro_batch_size
    loss_total, stat_sums, n_mb = 0.0, {}, 0
    scale = run.accelerator.num_processes  # DDP averages over processes; the weights already hold the global sum
    for start in range(0, len(active), size):
        idx = active[start:start + size]
        loss, stats = micro_batch_loss(run, [batch.samples[i] for i in idx], adv[idx], weights[idx])
        run.accelerator.backward(loss * scale)
        loss_total += float(loss.detach())
        for k, v in stats.items():
            stat_sums[k] = stat_sums.get(k, 0.0) + float(v)
        n_mb += 1
    return {"loss": loss_total, **{k: v / max(n_mb, 1) for k, v in stat_sums.items()}}


def optimizer_step(run: Run, loss: float) -> tuple[float, bool]:
    """Clip and step; a non-finite loss or gradient norm skips the update (gradients are dropped)."""
    max_norm = run.cfg.optim.max_grad_norm
    params = [p for p in run.model.parameters() if p.requires_grad]
    grad_norm = float(run.accelerator.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))
    finite = math.isfinite(loss) and math.isfinite(grad_norm)
    if finite:
        run.optimizer.step()
        run.updates += 1
    run.optimizer.zero_grad(set_to_none=True)
    return grad_norm, finite


def update_policy(run: Run, groups: Sequence[Group], timer: Timer) -> dict[str, Any]:
    """Advantages, α and weights for the whole step, then forward/backward and one optimizer step."""
    if not groups:
        return {"has_signal": 0, "alpha": 0.0, "valid_group_fraction": 0.0, "work_saved_fraction": 1.0,
                "finite": True}
    batch = StepBatch.from_groups(groups)
    n = batch.rewards.numel()
    adv = run.algo.advantages(batch.rewards, batch.group_ids, batch.lengths)  # [N]
    total_tokens = int(batch.lengths.sum())
    a = run.algo.alpha_factor(n, int(batch.degenerate.sum()), total_tokens,
                              int(batch.lengths[~batch.degenerate].sum()))
    out: dict[str, Any] = {"alpha": a.alpha, "valid_group_fraction": a.valid_fraction, "has_signal": int(a.has_signal)}
    if not a.has_signal:
        out.update(work_saved_fraction=1.0, finite=True)
        return out
    norm = Normaliser(n, len(groups), total_tokens, run.cfg.rollout.max_new_tokens)
    weights = run.algo.sequence_weights(batch.lengths, batch.group_ids, norm) * a.alpha  # [N]
    active = active_indices(run, adv)
    with timer("train"):
        out.update(backward_all(run, batch, adv, weights, active))
        out["grad_norm"], out["finite"] = optimizer_step(run, out["loss"]) if active else (0.0, True)
    out["work_saved_fraction"] = 1.0 - len(active) / n
    return out


# ---------------------------------------------------------------- metrics of one step


def rollout_metrics(groups: Sequence[Group], stats: CollectStats, counts: dict[str, int]) -> dict[str, Any]:
    samples = [s for g in groups for s in g.samples]
    rewards = torch.cat([g.rewards for g in groups]) if groups else torch.zeros(0)
    m: dict[str, Any] = {
        "reward_mean": float(rewards.mean()) if groups else 0.0,
        "reward_std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
        "tokens": sum(s.length for s in samples),
        "completion_len_mean": sum(s.length for s in samples) / max(len(samples), 1),
        "truncated_fraction": sum(s.truncated for s in samples) / max(len(samples), 1),
        "groups": len(groups), "degenerate_groups": sum(g.degenerate for g in groups),
        "rounds": stats.rounds, "prompts_drawn": stats.prompts_drawn,
        "valid_groups_found": stats.valid_found, "surplus_valid_dropped": stats.surplus_valid_dropped,
        "budget_exhausted": int(stats.budget_exhausted),
    }
    for name in groups[0].per_function if groups else ():
        values = [v for g in groups for v in g.per_function[name]]
        m[f"reward/{name}"] = sum(values) / len(values)
    return {**m, **counts}


def train_step(run: Run, step: int) -> tuple[dict[str, Any], list[Group]]:
    """One optimizer step: collect (with resampling), update; returns the step's metrics and batch."""
    timer, counts = Timer(), {}
    start = time.perf_counter()
    a, r = run.algo, run.cfg.rollout
    groups, stats = collect_batch(run.queue.take, rollout_and_score(run, timer, counts), r.prompts_per_step,
                                  a.beta_th, a.drop_degenerate, r.max_rounds)
    if stats.budget_exhausted:
        run.console.print(f"[yellow]step {step}: resampling budget rollout.max_rounds={r.max_rounds} spent with "
                          f"{stats.valid_found} informative groups (β_th={a.beta_th}); training on what was found")
    updates_before = run.updates
    m = {"step": step, **rollout_metrics(groups, stats, counts), **update_policy(run, groups, timer)}
    m["finite"] = int(m["finite"])
    if run.updates > updates_before:
        run.scheduler.step()  # the schedule counts optimizer updates
    elif not m["has_signal"]:
        run.console.print(f"[yellow]step {step}: every group has identical rewards: no gradient, step skipped")
    elif not m["finite"]:
        run.console.print(f"[yellow]step {step}: non-finite loss ({m['loss']}) or gradient norm ({m['grad_norm']}): "
                          "update skipped")
    elapsed = time.perf_counter() - start
    m.update({"lr": run.scheduler.get_last_lr()[0], "step_time_s": elapsed,
              "tokens_per_s": m["generated_tokens"] / max(timer.totals.get("generate", 0.0), 1e-9),
              "time_generate_s": timer.totals.get("generate", 0.0), "time_reward_s": timer.totals.get("reward", 0.0),
              "time_train_s": timer.totals.get("train", 0.0), "epoch": run.queue.epoch})
    return m, groups


def write_samples(path: Path, step: int, groups: Sequence[Group], k: int) -> None:
    """Append the first `k` completions of the step (with rewards) to completions.jsonl."""
    rows = [(j, g, i) for j, g in enumerate(groups) for i in range(len(g.samples))][:k]
    with path.open("a", encoding="utf-8") as fh:
        for j, g, i in rows:
            fh.write(json.dumps({"step": step, "group": j, "question": g.example.question, "answer": g.example.answer,
                                 "completion": g.samples[i].text, "reward": float(g.rewards[i]),
                                 **{f"reward/{n}": v[i] for n, v in g.per_function.items()}}) + "\n")


# ---------------------------------------------------------------- evaluation, summary, model card


def run_eval(run: Run, name: str) -> dict[str, Any]:
    """Evaluate on the held-out split, write `<name>.json`, return its summary."""
    e = run.cfg.eval
    params = SamplingParams(e.max_new_tokens, e.temperature, 1.0, e.batch_size)
    result = evaluate(run.accelerator.unwrap_model(run.model), run.tokenizer, run.eval_examples, run.prompt, params)
    write_eval(result, run.output_dir / f"{name}.json")
    run.console.print(f"{name}: accuracy {result.accuracy:.3f} on {result.n} held-out items "
                      f"(boxed answers {result.boxed_rate:.2f})")
    return result.summary()


def model_card(cfg: Config, algo: Algorithm, summary: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    return (f"# {cfg.model.name} fine-tuned with gpgrl ({algo.name})\n\n"
            f"Trained with gpgrl's `{algo.name}` preset: {algo.summary}\n"
            f"Paper: {algo.paper}. Data: reasoning-gym `{cfg.data.task}` {cfg.data.task_kwargs}, "
            f"{cfg.data.train_size} training prompts, {cfg.data.eval_size} held-out items.\n"
            f"Rewards: {', '.join(cfg.reward.functions)} with weights {list(cfg.reward.weights)}.\n\n"
            f"## Measured results\n\n| metric | value |\n|---|---|\n{rows}\n\n"
            f"## Configuration\n\n```yaml\n{to_yaml(cfg)}```\n")


def print_summary(console: Console, evals: dict[str, dict[str, Any] | None]) -> None:
    table = Table(title="held-out accuracy")
    for col in ("", "accuracy", "n", "boxed"):
        table.add_column(col)
    for name, res in evals.items():
        if res is not None:
            table.add_row(name, f"{res['accuracy']:.3f}", str(res["n"]), f"{res.get('boxed_rate', 0.0):.2f}")
    console.print(table)


# ---------------------------------------------------------------- checkpoints, resume and stop signals


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived: the current step was finished and a checkpoint written."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; a checkpoint of the last good state was written."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (e.g. a full disk); the previous one is intact."""


class StopSignals:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step; a second one aborts."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def save_state(run: Run, loop: LoopState, rng: dict[str, Any] | None = None, queue: dict | None = None) -> Path:
    """Checkpoint the run at the end of `loop.step` (RNG and queue default to their current state)."""
    parts = {"model": run.accelerator.unwrap_model(run.model).state_dict(), "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict(), "rng": rng or rng_state(),
             "queue": queue or run.queue.state_dict()}
    if not run.accelerator.is_main_process:
        return run.output_dir
    try:
        return save_checkpoint(run.output_dir, loop, parts, run.cfg.train.keep_checkpoints)
    except OSError as err:
        previous = latest_checkpoint(run.output_dir)
        raise CheckpointError(f"could not write the checkpoint of step {loop.step} in {run.output_dir} "
                              f"({err.strerror or err}); the previous checkpoint "
                              f"{previous.name if previous else '(none)'} is intact. Free space or choose another "
                              "train.output_dir, then resume with train.resume=true") from err


def resume_or_start(run: Run) -> LoopState:
    """Restore the newest complete checkpoint when train.resume is set; else the state before step 1."""
    fresh = LoopState(step=0, metrics_offset=0, completions_offset=0, bad_steps_in_a_row=0)
    path = latest_checkpoint(run.output_dir) if run.cfg.train.resume else None
    if path is None:
        if run.cfg.train.resume:
            run.console.print(f"[yellow]train.resume=true but {run.output_dir} has no complete checkpoint: "
                              "starting at step 1")
        return fresh
    loop, parts = load_checkpoint(path)
    run.accelerator.unwrap_model(run.model).load_state_dict(parts["model"])
    run.optimizer.load_state_dict(parts["optimizer"])
    run.scheduler.load_state_dict(parts["scheduler"])
    run.queue.load_state_dict(parts["queue"])
    set_rng_state(parts["rng"])
    run.console.print(f"resumed from {path} (step {loop.step} of {run.cfg.train.max_steps})")
    return loop


def truncate_logs(run: Run, loop: LoopState) -> None:
    """Drop log lines of steps after the checkpoint (they are redone), so each step appears once."""
    for name, offset in (("metrics.jsonl", loop.metrics_offset), ("completions.jsonl", loop.completions_offset)):
        path = run.output_dir / name
        with path.open("a", encoding="utf-8"):
            pass
        os.truncate(path, offset)


def should_save(cfg: Config, step: int, stopping: bool) -> bool:
    every = cfg.train.save_every
    return stopping or step == cfg.train.max_steps or (every > 0 and step % every == 0)


def run_one_step(run: Run, loop: LoopState, step: int, writer: MetricsWriter | None, bar: ProgressBar) -> LoopState:
    """Train one step and log it; on an exception, checkpoint the last completed step first when exact."""
    rng, queue, updates = rng_state(), run.queue.state_dict(), run.updates
    try:
        m, groups = train_step(run, step)
    except Exception:
        if run.updates == updates and loop.step > 0:
            path = save_state(run, loop, rng, queue)
            run.console.print(f"[red]step {step} failed; state after step {loop.step} saved in {path}")
        raise
    bad = 0 if m["finite"] else loop.bad_steps_in_a_row + 1
    if writer is not None:
        writer.log(m)
        write_samples(run.output_dir / "completions.jsonl", step, groups, run.cfg.logging.sample_completions)
    bar.update(m)
    return LoopState(step, _file_size(run.output_dir / "metrics.jsonl"),
                     _file_size(run.output_dir / "completions.jsonl"), bad)


def run_steps(run: Run, loop: LoopState, writer: MetricsWriter | None, bar: ProgressBar) -> LoopState:
    """Steps loop.step+1 .. max_steps with checkpoints, stop signals and the non-finite-step limit."""
    cfg = run.cfg
    with StopSignals() as signals:
        for step in range(loop.step + 1, cfg.train.max_steps + 1):
            loop = run_one_step(run, loop, step, writer, bar)
            diverged = loop.bad_steps_in_a_row >= cfg.train.max_bad_steps
            if should_save(cfg, step, signals.received is not None or diverged):
                path = save_state(run, loop)
            if diverged:
                raise TrainingDiverged(f"{loop.bad_steps_in_a_row} steps in a row had a non-finite loss or gradient "
                                       f"(train.max_bad_steps={cfg.train.max_bad_steps}); the last good state is "
                                       f"in {path}. Lower optim.lr or check the rewards, then resume.")
            if signals.received is not None:
                raise Interrupted(signals.received, f"stopped by {signal.Signals(signals.received).name} after "
                                  f"step {step}; checkpoint {path}. Resume with: gpgrl train --config "
                                  f"{run.output_dir / 'config.yaml'} train.resume=true")
    return loop


# ---------------------------------------------------------------- the run


def train(cfg: Config, console: Console | None = None) -> dict[str, Any]:
    """Run the whole job described by `cfg`; returns the summary written to the model card."""
    console = console or Console()
    started = time.perf_counter()
    run = setup(cfg, console)
    loop = resume_or_start(run)
    main = run.accelerator.is_main_process
    before_path = run.output_dir / "eval_before.json"
    before = None
    if cfg.eval.before:
        before = json.loads(before_path.read_text()) if loop.step > 0 and before_path.exists() \
            else run_eval(run, "eval_before")
    writer = None
    if main:
        truncate_logs(run, loop)
        writer = MetricsWriter(run.output_dir, cfg.logging.tensorboard,
                               cfg.logging.wandb_project if cfg.logging.wandb else None, to_dict(cfg),
                               purge_step=loop.step + 1)
    try:
        with ProgressBar(cfg.train.max_steps, cfg.logging.progress and main, console, loop.step) as bar:
            loop = run_steps(run, loop, writer, bar)
    finally:
        if writer is not None:
            writer.close()
    after = run_eval(run, "eval_after") if cfg.eval.after else None
    summary = {"algorithm": run.algo.name, "steps": loop.step, "wall_time_s": round(time.perf_counter() - started, 1),
               "accuracy_before": before["accuracy"] if before else None,
               "accuracy_after": after["accuracy"] if after else None,
               "eval_n": (after or before or {"n": 0})["n"]}
    if main:
        save_final(run.accelerator.unwrap_model(run.model), run.tokenizer, run.output_dir / "final",
                   model_card(cfg, run.algo, summary))
        (run.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(console, {"before": before, "after": after})
    return summary
