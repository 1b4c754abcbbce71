"""The training loop: prompts → rollout → rewards → (resample) → advantages → loss → optimizer step.

One loop for every algorithm: all algorithm choices come from the resolved preset (`gpgrl.algos.presets`),
which the loop calls without ever looking at its name. Group statistics, M, α and the loss normaliser are
computed once per optimizer step over the whole assembled batch, so micro-batching does not change the
result (a preset with algorithm.micro_groups > 0 normalises per reference micro-batch on purpose; those are
made of groups, so they too are independent of rollout.micro_batch_size and the process count). Samples
whose advantage is exactly zero are not run through forward/backward when the loss has no other term (they
carry no gradient under GPG), and the saved fraction is logged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from rich.console import Console
from rich.table import Table

from gpgrl.algos.aggregation import aggregate
from gpgrl.algos.losses import truncated_importance_weights
from gpgrl.algos.presets import Algorithm, resolve_algorithm
from gpgrl.checkpoint import (
    LoopState,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    staging_dir,
)
from gpgrl.config import Config, ConfigError, to_dict, to_yaml
from gpgrl.data import Example, PromptQueue, derive_seed, load_splits, reward_columns, scored_text
from gpgrl.evaluation import blank_path, evaluate_and_write
from gpgrl.metrics import MetricsWriter, ProgressBar
from gpgrl.models import (
    frozen_copy,
    load_policy,
    load_reference,
    prepare_loaded,
    resolve_model_source,
    save_final,
    vision_parameters,
)
from gpgrl.parallel import Strategy, make_strategy, resolve_strategy, strip_launcher_env
from gpgrl.resample import CollectStats, Group, collect_batch
from gpgrl.rewards import RewardSet, TrainerState, trl_inputs
from gpgrl.rollout import (
    PromptEncoder,
    Sample,
    SamplingParams,
    collate,
    eos_token_ids,
    make_encoder,
    token_logprobs,
)
from gpgrl.rollout.engines import Sampler, make_engine


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


@dataclass(frozen=True)
class RunInputs:
    """What a Python caller (`gpgrl.train`) hands in instead of what the config names; None = from the config."""

    rewards: RewardSet | None = None
    examples: tuple[list[Example], list[Example]] | None = None
    """(training, held-out) examples."""
    model: Any = None
    processing: Any = None
    """The tokenizer (or a vision-language model's processor) of `model`."""
    callbacks: tuple[Callable[[dict[str, Any]], Any], ...] = ()
    """Called with each step's metrics on the main process, after the step is logged."""


@dataclass
class Run:
    """Everything a step needs, built once by `setup`."""

    cfg: Config
    algo: Algorithm
    accelerator: Accelerator
    strategy: Strategy
    engine: Any  # the rollout engine (gpgrl.rollout.engines)
    model: Any
    tokenizer: Any  # a tokenizer (text model) or a processor (vision-language model)
    encoder: PromptEncoder
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
    callbacks: tuple[Callable[[dict[str, Any]], Any], ...] = ()


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


def parameter_groups(model, cfg: Config) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the trainable parameters at optim.lr, a VLM's eye at optim.vision_lr when set."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optim.vision_lr <= 0:
        return [{"params": params, "lr": cfg.optim.lr}]
    tower, projector = vision_parameters(model)
    eye = {id(p) for p in tower + projector}
    if not eye:
        raise ConfigError(f"optim.vision_lr={cfg.optim.vision_lr} applies to vision-language models; model.name="
                          f"{cfg.model.name!r} has no vision tower: remove it")
    return [{"params": [p for p in params if id(p) not in eye], "lr": cfg.optim.lr},
            {"params": [p for p in params if id(p) in eye], "lr": cfg.optim.vision_lr}]


OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], Any], torch.optim.Optimizer]] = {
    # fused: one kernel for all tensors (CPU and CUDA); ~4x faster than the default per-tensor loop on CPU
    "adamw": lambda groups, o: torch.optim.AdamW(groups, lr=o.lr, betas=(o.adam_beta1, o.adam_beta2),
                                                 weight_decay=o.weight_decay, fused=True),
    "sgd": lambda groups, o: torch.optim.SGD(groups, lr=o.lr, momentum=0.0, weight_decay=o.weight_decay),
}
"""optim.optimizer -> a builder from parameter groups and the optim config."""


def make_optimizer(model, cfg: Config) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    o = cfg.optim
    optimizer = OPTIMIZERS[o.optimizer](parameter_groups(model, cfg), o)
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


def choose_strategy(cfg: Config, inputs: RunInputs) -> Config:
    """The config with the parallel strategy the launcher and parallel.strategy agree on, checked before anything
    is loaded; accelerate's own engine switches are then removed from the environment (gpgrl shards itself)."""
    name = resolve_strategy(cfg.parallel.strategy, os.environ)
    strip_launcher_env()
    if name != "ddp" and inputs.model is not None:
        raise ConfigError(f"parallel.strategy={name} builds its model from model.name; a model object given to "
                          "gpgrl.train trains with parallel.strategy=ddp")
    if name.startswith("zero"):
        from gpgrl.parallel.zero import import_deepspeed

        import_deepspeed()
    return dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, strategy=name))


def load_models(cfg: Config, algo: Algorithm, inputs: RunInputs) -> tuple[Any, Any, Any]:
    """(policy, tokenizer or processor, frozen reference or None): the given model objects or model.name's."""
    if inputs.model is None:
        model, processing = load_policy(cfg.model, cfg.train.seed)
        return model, processing, load_reference(cfg.model) if algo.needs_reference else None
    reference = frozen_copy(inputs.model) if algo.needs_reference else None
    model, processing = prepare_loaded(cfg.model, cfg.train.seed, inputs.model, inputs.processing)
    return model, processing, reference


def setup(cfg: Config, console: Console, inputs: RunInputs | None = None) -> Run:
    inputs = inputs or RunInputs()
    cfg = choose_strategy(cfg, inputs)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    strategy = make_strategy(cfg.parallel.strategy, accelerator, cfg)
    if not accelerator.is_main_process:
        console = Console(quiet=True)  # one process speaks
    set_seed(cfg.train.seed)
    algo = resolve_algorithm(cfg.algorithm.name, **cfg.algorithm.overrides())
    output_dir = prepare_output_dir(cfg)
    train_examples, eval_examples = inputs.examples or load_splits(cfg.data)
    reward_set = inputs.rewards or RewardSet.from_config(cfg.reward)
    with accelerator.main_process_first():  # the main process builds any cached built-in model first
        model, tokenizer, reference = load_models(cfg, algo, inputs)
    encoder = make_encoder(tokenizer, model, cfg.data.system_prompt, cfg.data.prompt_template,
                           cfg.data.response_prefix)
    check_images(train_examples + eval_examples, encoder, cfg)
    eos_ids = eos_token_ids(model, encoder.tokenizer)
    plain = model
    model, optimizer, scheduler = strategy.prepare(model, lambda m: make_optimizer(m, cfg))
    if reference is not None:
        reference = reference.to(accelerator.device)
    engine = make_engine(cfg.rollout.engine, encoder, cfg,
                         lambda: initial_model_dir(cfg, plain, tokenizer, output_dir, accelerator), accelerator,
                         eos_ids)
    run = Run(cfg, algo, accelerator, strategy, engine, model, tokenizer, encoder, reference, [], [], None,
              reward_set, optimizer, scheduler, output_dir, console, callbacks=tuple(inputs.callbacks))
    limit, length = cfg.rollout.max_prompt_tokens, lambda ex: encoder.encode(ex).ids.numel()
    run.train_examples = drop_long_prompts(train_examples, length, limit, "train", console)
    run.eval_examples = drop_long_prompts(eval_examples, length, limit, "eval", console)
    run.queue = PromptQueue(run.train_examples, seed=cfg.train.seed)
    return run


def initial_model_dir(cfg: Config, model: Any, tokenizer: Any, output_dir: Path, accelerator: Accelerator) -> str:
    """A directory holding the policy's base checkpoint for a rollout engine to load: model.name's own directory,
    else (a hub id, or a given model object) a copy the main process saves. The engine gets the trainer's actual
    weights pushed before the first rollout, so only the architecture and tokenizer matter."""
    source = resolve_model_source(cfg.model)
    if Path(source).is_dir():
        return source
    target = output_dir / "engine-initial"
    if accelerator.is_main_process and not (target / "config.json").exists():
        save_final(model, tokenizer, target, "The initial policy, loaded by the rollout engine.")
    accelerator.wait_for_everyone()
    return str(target)


def check_images(examples: Sequence[Example], encoder: PromptEncoder, cfg: Config) -> None:
    """Images need a vision-language model: say so before anything trains."""
    with_images = sum(bool(ex.images) for ex in examples)
    if with_images and not encoder.accepts_images:
        raise ConfigError(f"{with_images} of the {len(examples)} items have images (data.image_column="
                          f"{cfg.data.image_column!r}, or data.source=shapes) but model.name={cfg.model.name!r} is a "
                          "text model: use a vision-language model such as smollm2-135m-vision")


def drop_long_prompts(examples: list[Example], length: Callable[[Example], int], limit: int, split: str,
                      console: Console) -> list[Example]:
    """Policy for over-long prompts (rollout.max_prompt_tokens; 0 = no limit): drop them, as the reference does,
    and say how many. `length` is a prompt's token count after the chat template (with its image tokens)."""
    if limit == 0:
        return examples
    kept = [ex for ex in examples if length(ex) <= limit]
    if len(kept) < len(examples):
        console.print(f"[yellow]{len(examples) - len(kept)} of {len(examples)} {split} prompts are longer than "
                      f"rollout.max_prompt_tokens={limit} tokens and were dropped")
    if split == "train" and not kept:
        raise ConfigError(f"every training prompt is longer than rollout.max_prompt_tokens={limit}: raise it")
    return kept


# ---------------------------------------------------------------- rollout and scoring


def score_groups(run: Run, examples: Sequence[Example], groups: list[list[Sample]], counts: dict[str, int],
                 step: int) -> list[Group]:
    """Score every completion with the reward set (TRL's calling convention); one `Group` per prompt."""
    g = run.cfg.rollout.generations_per_prompt
    flat = [(ex, s) for ex, group in zip(examples, groups, strict=True) for s in group]
    texts = [scored_text(run.encoder.response_prefix, s.text) for _, s in flat]
    prompts, completions = trl_inputs([ex for ex, _ in flat], texts)
    state = TrainerState(global_step=step - 1, max_steps=run.cfg.train.max_steps, epoch=float(run.queue.epoch))
    out = run.rewards(prompts, completions, reward_columns(examples, g), completion_lengths=[s.length for _, s in flat],
                      completion_ids=[s.completion_ids.tolist() for _, s in flat], trainer_state=state)
    for name, count in out.invalid.items():
        counts[f"reward_invalid/{name}"] = counts.get(f"reward_invalid/{name}", 0) + count
    total = torch.tensor(out.total, dtype=torch.float32)  # [P*G]
    return [Group(ex, groups[i], total[i * g:(i + 1) * g],
                  {k: v[i * g:(i + 1) * g] for k, v in out.per_function.items()})
            for i, ex in enumerate(examples)]


def generate_chunk(run: Run, sample: Sampler, examples: Sequence[Example], seed: int) -> list[list[Sample]]:
    """G completions for each example of one generation chunk, drawn by the engine's `sample` from the chunk's
    own seed."""
    r = run.cfg.rollout
    params = SamplingParams(r.max_new_tokens, r.temperature, r.top_p, r.generation_batch_size, r.min_new_tokens,
                            r.shared_prefill, run.cfg.model.autocast_bf16, r.stop_after_answer)
    prompts = [run.encoder.encode(ex) for ex in examples]  # each prompt's images are processed once, here
    return sample(prompts, r.generations_per_prompt, params, seed)


def rollout_and_score(run: Run, timer: Timer, counts: dict[str, int], step: int):
    """The rollout function handed to the resampling loop: generate G completions per prompt, score, gather.

    A round's prompts are cut into fixed chunks of generation_batch_size // G prompts; chunk c is sampled from
    seed (train.seed, step, round, c) on process c mod W and scored there; the groups of all processes are then
    gathered in chunk order. Every process thus holds the same global groups, whatever the number of processes.
    `counts` accumulates generated tokens and invalid rewards over all rounds."""
    acc, r = run.accelerator, run.cfg.rollout
    per_chunk = max(1, r.generation_batch_size // r.generations_per_prompt)
    rounds = [0]

    def rollout(examples: Sequence[Example]) -> list[Group]:
        rounds[0] += 1
        local: list[tuple[int, Group]] = []
        local_counts: dict[str, int] = {}
        with run.engine.round(run.strategy) as sample:  # a sharded model is gathered once for the round
            for c in range(acc.process_index, math.ceil(len(examples) / per_chunk), acc.num_processes):
                chunk = examples[c * per_chunk:(c + 1) * per_chunk]
                with timer("generate"):
                    samples = generate_chunk(run, sample, chunk, derive_seed(run.cfg.train.seed, step, rounds[0], c))
                with timer("reward"):
                    local += [(c, g) for g in score_groups(run, chunk, samples, local_counts, step)]
        gathered = gather_object([(local, local_counts)]) if acc.num_processes > 1 else [(local, local_counts)]
        for _, part in gathered:
            for key, value in part.items():
                counts[key] = counts.get(key, 0) + value
        groups = [g for _, g in sorted((pair for chunks, _ in gathered for pair in chunks), key=lambda p: p[0])]
        counts["generated_tokens"] = counts.get("generated_tokens", 0) + sum(s.length for g in groups
                                                                             for s in g.samples)
        counts["sampled_completions"] = counts.get("sampled_completions", 0) + sum(len(g.samples) for g in groups)
        counts["sampled_reward_sum"] = counts.get("sampled_reward_sum", 0.0) + sum(float(g.rewards.sum())
                                                                                   for g in groups)
        return groups

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
    share = run.cfg.rollout.shared_prompt_forward and run.strategy.shares_prompt_forward
    mb = collate(samples, run.encoder.pad_id, share_prompts=share, suppressed_ids=run.encoder.suppressed_ids)
    device = run.accelerator.device
    mask = mb.completion_mask.to(device)  # [B, Lc]
    temperature, bf16 = run.cfg.rollout.temperature, run.cfg.model.autocast_bf16
    logp = token_logprobs(run.model, mb, temperature, bf16)  # [B, Lc]
    ref_logp = None
    if run.reference is not None:
        with torch.no_grad():
            ref_logp = token_logprobs(run.reference, mb, temperature, bf16)  # [B, Lc]
    is_weights, mismatch = sampler_correction(run, samples, logp, mask)
    # one update per rollout: the sampling policy is the current one, so old log-probs are logp.detach()
    token_loss, stats = run.algo.token_loss(logp, logp.detach(), adv.to(device), mask, ref_logp=ref_logp,
                                            is_weights=is_weights)
    return aggregate(token_loss, mask, weights.to(device)), {**stats, **mismatch}


def sampler_correction(run: Run, samples: list[Sample], logp: torch.Tensor, mask: torch.Tensor):
    """For samples an engine drew with its own log-probs: the truncated importance weights [B, Lc]
    (rollout.importance_cap; None when off) and the engine-versus-trainer log-prob mismatch statistics."""
    if samples[0].sampler_logprobs is None:
        return None, {}
    engine_logp = torch.zeros_like(logp)  # [B, Lc]
    for row, s in enumerate(samples):
        engine_logp[row, :s.length] = s.sampler_logprobs.to(logp.device)
    gap = (logp.detach() - engine_logp).abs() * mask  # [B, Lc]
    stats = {"sampler_logprob_diff": gap.sum() / mask.sum().clamp_min(1), "sampler_logprob_diff_max": gap.max()}
    cap = run.cfg.rollout.importance_cap
    return truncated_importance_weights(logp, engine_logp, cap) if cap > 0 else None, stats


def active_indices(run: Run, adv: torch.Tensor) -> list[int]:
    """Samples that need forward/backward: all, unless a zero advantage makes a sample's loss vanish."""
    if not run.algo.zero_advantage_is_noop:
        return list(range(adv.numel()))
    return [i for i in range(adv.numel()) if adv[i] != 0]


def process_micro_batches(active: list[int], rank: int, world: int, size: int) -> list[list[int]]:
    """This process's share of the active samples, cut into micro-batches. Every process gets the same number
    of micro-batches (trailing ones may be empty) so that their gradient all-reduces line up."""
    share = active[rank::world]  # [~len(active)/world]
    count = math.ceil(math.ceil(len(active) / world) / size)
    return [share[i * size:(i + 1) * size] for i in range(count)]


def backward_all(run: Run, batch: StepBatch, adv: torch.Tensor, weights: torch.Tensor,
                 active: list[int]) -> dict[str, float]:
    """Forward/backward over this process's micro-batches; gradients are all-reduced once, on the last one."""
    acc = run.accelerator
    parts = process_micro_batches(active, acc.process_index, acc.num_processes, run.cfg.rollout.micro_batch_size)
    loss_total, stat_sums, n_mb = 0.0, {}, 0
    for i, idx in enumerate(parts):
        # an empty share still runs one zero-weight sample so that every process takes part in the all-reduce
        rows, w = (idx, weights[idx]) if idx else ([active[0]], torch.zeros(1))
        last = i == len(parts) - 1
        with run.strategy.sync_context(last):
            loss, stats = micro_batch_loss(run, [batch.samples[j] for j in rows], adv[rows], w)
            # every strategy averages gradients over processes; the weights already hold the global normaliser
            run.strategy.backward(loss * acc.num_processes, last)
        loss_total += float(loss.detach())
        n_mb += bool(idx)
        for k, v in stats.items():  # the same keys on every process, so the reduce below lines up
            stat_sums[k] = stat_sums.get(k, 0.0) + (float(v) if idx else 0.0)
    out = {"loss": loss_total, **{k: v / max(n_mb, 1) for k, v in stat_sums.items()}}
    if acc.num_processes > 1:  # the step's loss is the sum over processes; other stats are averaged
        values = acc.reduce(torch.tensor(list(out.values()), device=acc.device), reduction="sum")
        out = {k: float(v) / (1 if k == "loss" else acc.num_processes) for k, v in zip(out, values, strict=True)}
    return out


def optimizer_step(run: Run, loss: float) -> tuple[float, bool]:
    """Clip and step; a non-finite loss or gradient norm skips the update (gradients are dropped)."""
    grad_norm, applied = run.strategy.clip_and_step(run.cfg.optim.max_grad_norm, loss)
    run.updates += applied
    return grad_norm, applied


def clipping(grad_norm: float, max_norm: float) -> dict[str, float]:
    """Whether clipping bound the update (`clipped`) and the factor it scaled the gradient by (`clip_factor`,
    max_norm / grad_norm when clipped, else 1): with clipping, a gradient scale such as α reaches the optimizer
    only as far as the norm stays below optim.max_grad_norm.

    >>> clipping(4.0, 1.0), clipping(0.5, 1.0), clipping(4.0, 0.0)
    ({'clipped': 1, 'clip_factor': 0.25}, {'clipped': 0, 'clip_factor': 1.0}, {'clipped': 0, 'clip_factor': 1.0})
    """
    bound = max_norm > 0 and math.isfinite(grad_norm) and grad_norm > max_norm
    return {"clipped": int(bound), "clip_factor": max_norm / grad_norm if bound else 1.0}


def update_policy(run: Run, groups: Sequence[Group], timer: Timer) -> dict[str, Any]:
    """Advantages, α and weights for the whole step, then forward/backward and one optimizer step."""
    if not groups:
        return {"has_signal": 0, "alpha": 0.0, "valid_group_fraction": 0.0, "work_saved_fraction": 1.0,
                "finite": True}
    batch = StepBatch.from_groups(groups)
    n = batch.rewards.numel()
    adv = run.algo.advantages(batch.rewards, batch.group_ids, batch.lengths)  # [N]
    weights, a = run.algo.step_weights(batch.lengths, batch.group_ids, batch.degenerate,
                                       run.cfg.rollout.max_new_tokens)  # [N]
    out: dict[str, Any] = {"alpha": a.alpha, "valid_group_fraction": a.valid_fraction, "has_signal": int(a.has_signal)}
    if not a.has_signal:
        out.update(work_saved_fraction=1.0, finite=True)
        return out
    active = active_indices(run, adv)
    with timer("train"):
        out.update(backward_all(run, batch, adv, weights, active))
        out["grad_norm"], out["finite"] = optimizer_step(run, out["loss"]) if active else (0.0, True)
    out.update(clipping(out["grad_norm"], run.cfg.optim.max_grad_norm))
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
    counts = dict(counts)
    # the policy's mean reward over everything sampled this step (all resampling rounds): unlike reward_mean,
    # which is over the assembled batch (informative groups first), it compares fairly across algorithms
    sampled = counts.pop("sampled_completions", 0)
    m["reward_mean_sampled"] = counts.pop("sampled_reward_sum", 0.0) / max(sampled, 1)
    return {**m, **counts}


def train_step(run: Run, step: int) -> tuple[dict[str, Any], list[Group]]:
    """One optimizer step: collect (with resampling), update; returns the step's metrics and batch."""
    timer, counts = Timer(), {}
    start = time.perf_counter()
    a, r = run.algo, run.cfg.rollout
    groups, stats = collect_batch(run.queue.take, rollout_and_score(run, timer, counts, step), r.prompts_per_step,
                                  a.beta_th, a.drop_degenerate, r.max_rounds)
    if stats.budget_exhausted:
        run.console.print(f"[yellow]step {step}: resampling budget rollout.max_rounds={r.max_rounds} spent with "
                          f"{stats.valid_found} informative groups (β_th={a.beta_th}); training on what was found")
    updates_before = run.updates
    m = {"step": step, **rollout_metrics(groups, stats, counts), **update_policy(run, groups, timer)}
    m["finite"] = int(m["finite"])
    if run.updates > updates_before:
        run.scheduler.step()  # the schedule counts optimizer updates
        with timer("push"):
            run.engine.push_weights(run.strategy)
    elif not m["has_signal"]:
        run.console.print(f"[yellow]step {step}: every group has identical rewards: no gradient, step skipped")
    elif not m["finite"]:
        run.console.print(f"[yellow]step {step}: non-finite loss ({m['loss']}) or gradient norm ({m['grad_norm']}): "
                          "update skipped")
    elapsed = time.perf_counter() - start
    m.update({"lr": run.scheduler.get_last_lr()[0], "step_time_s": elapsed,
              "tokens_per_s": m["generated_tokens"] / max(timer.totals.get("generate", 0.0), 1e-9),
              "time_generate_s": timer.totals.get("generate", 0.0), "time_reward_s": timer.totals.get("reward", 0.0),
              "time_train_s": timer.totals.get("train", 0.0), "time_push_s": timer.totals.get("push", 0.0),
              "peak_memory_mib": peak_memory_mib(), "epoch": run.queue.epoch,
              "processes": run.accelerator.num_processes})
    return m, groups


def peak_memory_mib() -> float:
    """This process's peak memory so far: the GPU's allocated peak where there is one, else the resident set's."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # not Linux
        pass
    return float("nan")


def write_samples(path: Path, step: int, groups: Sequence[Group], k: int, response_prefix: str = "") -> None:
    """Append the first `k` completions of the step (with rewards) to completions.jsonl, as they were scored
    (after data.response_prefix)."""
    rows = [(j, g, i) for j, g in enumerate(groups) for i in range(len(g.samples))][:k]
    with path.open("a", encoding="utf-8") as fh:
        for j, g, i in rows:
            fh.write(json.dumps({"step": step, "group": j, "question": g.example.question, "answer": g.example.answer,
                                 "completion": scored_text(response_prefix, g.samples[i].text),
                                 "reward": float(g.rewards[i]),
                                 **{f"reward/{n}": v[i] for n, v in g.per_function.items()}}) + "\n")


# ---------------------------------------------------------------- evaluation, summary, model card


def run_eval(run: Run, name: str, step: int) -> dict[str, Any] | None:
    """Evaluate on the held-out split (main process, while every process holds the whole model), write
    `<name>.json` (and `<name>_blank.json` with eval.blank_control), return its summary (the control's accuracy as
    `accuracy_blank`)."""
    if not run.eval_examples:
        run.console.print(f"{name}: no held-out items (give data.eval_split, data.eval_size or eval_dataset): skipped")
        return None
    summary = None
    with run.strategy.whole_model() as model:
        if run.accelerator.is_main_process:
            summary = evaluate_on_main(run, model, name, step)
        run.accelerator.wait_for_everyone()
    return summary


def evaluate_on_main(run: Run, model: Any, name: str, step: int) -> dict[str, Any]:
    state = TrainerState(global_step=step, max_steps=run.cfg.train.max_steps, epoch=float(run.queue.epoch))
    result, control = evaluate_and_write(model, run.encoder, run.eval_examples, run.cfg, run.rewards,
                                         run.output_dir / f"{name}.json", state)
    means = "".join(f", {k} {v:.3f}" for k, v in result.means.items())
    blank = f", blank-image control {control.accuracy:.3f}" if control is not None else ""
    run.console.print(f"{name}: accuracy {result.accuracy:.3f}{means} on {result.n} held-out items "
                      f"(boxed answers {result.boxed_rate:.2f}){blank}")
    summary = result.summary()
    if control is not None:
        summary["accuracy_blank"] = control.accuracy
    return summary


def stored_eval(path: Path) -> dict[str, Any]:
    """A written evaluation's summary (a resumed run's eval_before), with its blank-image control's accuracy."""
    summary = json.loads(path.read_text())
    blank = blank_path(path)
    if blank.exists():
        summary["accuracy_blank"] = json.loads(blank.read_text())["accuracy"]
    return summary


def data_description(cfg: Config) -> str:
    d = cfg.data
    if d.path or d.source not in ("auto", "reasoning_gym"):
        return f"{d.source} `{d.path or d.source}` (prompt column `{d.prompt_column}`, answer `{d.answer_column}`)"
    return (f"reasoning-gym `{d.task}` {d.task_kwargs}, {d.train_size} training prompts, {d.eval_size} "
            "held-out items")


def card_metadata(cfg: Config, algo: Algorithm, vision: bool) -> dict[str, Any]:
    """The model card's YAML header, as the Hugging Face Hub reads it: base model, datasets, tags."""
    from gpgrl.models import BUILTIN_MODELS
    from gpgrl.models.loading import looks_like_path

    name = cfg.model.name
    base = BUILTIN_MODELS[name].hub_id if name in BUILTIN_MODELS else "" if looks_like_path(name) or \
        Path(name).exists() else name
    meta: dict[str, Any] = {"library_name": "transformers",
                            "pipeline_tag": "image-text-to-text" if vision else "text-generation"}
    if base:
        meta["base_model"] = base
    d = cfg.data
    if d.resolved_source() == "hf" and not Path(d.path).exists():
        meta["datasets"] = [d.path]
    meta["tags"] = list(dict.fromkeys(["gpgrl", "gpg", "reinforcement-learning", algo.name]))
    return meta


def model_card(cfg: Config, algo: Algorithm, summary: dict[str, Any], vision: bool = False) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    front = yaml.safe_dump(card_metadata(cfg, algo, vision), sort_keys=False)
    return (f"---\n{front}---\n\n# {cfg.model.name} fine-tuned with gpgrl ({algo.name})\n\n"
            f"Trained with gpgrl's `{algo.name}` preset: {algo.summary}\n"
            f"Paper: {algo.paper}. Data: {data_description(cfg)}.\n"
            f"Rewards: {', '.join(cfg.reward.functions)} with weights {list(cfg.reward.weights)}.\n\n"
            f"## Measured results\n\n| metric | value |\n|---|---|\n{rows}\n\n"
            f"## Configuration\n\n```yaml\n{to_yaml(cfg)}```\n")


def print_summary(console: Console, evals: dict[str, dict[str, Any] | None]) -> None:
    blank = any(res is not None and "accuracy_blank" in res for res in evals.values())
    table = Table(title="held-out accuracy")
    for col in ("", "accuracy", *(["blank images"] if blank else []), "n", "boxed"):
        table.add_column(col)
    for name, res in evals.items():
        if res is not None:
            control = [f"{res['accuracy_blank']:.3f}" if "accuracy_blank" in res else "-"] if blank else []
            table.add_row(name, f"{res['accuracy']:.3f}", *control, str(res["n"]), f"{res.get('boxed_rate', 0.0):.2f}")
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


class Aborted(BaseException):
    """A second SIGINT/SIGTERM arrived during a step: the run stops at once (a BaseException, as KeyboardInterrupt:
    no handler saves or retries on the way out); the message names the newest checkpoint to resume from."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class StopSignals:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step, said at once; a second one
    aborts (`Aborted`, naming the newest checkpoint). `step` is the step in progress, set by the loop."""

    def __init__(self, say: Callable[[str], Any] = print, newest: Callable[[], str] = lambda: "(none)") -> None:
        self.received: int | None = None
        self.step = 0
        self._say, self._newest = say, newest
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            raise Aborted(signum, f"aborted by a second {name} during step {self.step}; the newest checkpoint is "
                                  f"{self._newest()}")
        self.received = signum
        self._say(f"{name}: stopping after step {self.step} (again to abort)")

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        stopping = self.received is not None and bool(self._previous)
        for sig, handler in self._previous.items():
            # a stop under way (its checkpoint written) absorbs one more signal on the way out, instead of Python's
            # KeyboardInterrupt traceback during shutdown; that signal restores the previous handler
            signal.signal(sig, self._late if stopping else handler)

    def _late(self, signum: int, frame: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._say(f"{signal.Signals(signum).name}: already stopping after step {self.step}; the newest checkpoint is "
                  f"{self._newest()}")


def newest_checkpoint(run: Run) -> str:
    """The newest complete checkpoint of the run and how to resume from it, or that there is none."""
    path = latest_checkpoint(run.output_dir)
    if path is None:
        return "(none: the run starts over)"
    return f"{path} (resume with: gpgrl train --config {run.output_dir / 'config.yaml'} train.resume=true)"


def _file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def save_state(run: Run, loop: LoopState, rng: dict[str, Any] | None = None, queue: dict | None = None) -> Path:
    """Checkpoint the run at the end of `loop.step` (RNG and queue default to their current state)."""
    parts = {**run.strategy.state_parts(), "scheduler": run.scheduler.state_dict(), "rng": rng or rng_state(),
             "queue": queue or run.queue.state_dict()}
    path = run.output_dir / f"checkpoint-{loop.step:08d}"
    acc = run.accelerator
    try:
        tmp = staging_dir(run.output_dir, loop.step) if acc.is_main_process else None
        acc.wait_for_everyone()
        run.strategy.write_shards(staging_dir(run.output_dir, loop.step, create=False))  # each process's own part
        acc.wait_for_everyone()
        if acc.is_main_process:
            path = save_checkpoint(run.output_dir, loop, parts, run.cfg.train.keep_checkpoints, tmp)
        acc.wait_for_everyone()
        return path
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
    run.strategy.load_parts(parts, path)
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
        write_samples(run.output_dir / "completions.jsonl", step, groups, run.cfg.logging.sample_completions,
                      run.cfg.data.response_prefix)
    bar.update(m)
    done = LoopState(step, _file_size(run.output_dir / "metrics.jsonl"),
                     _file_size(run.output_dir / "completions.jsonl"), bad)
    if run.accelerator.is_main_process:
        call_back(run, done, m)
    return done


def call_back(run: Run, loop: LoopState, metrics: dict[str, Any]) -> None:
    """The caller's callbacks get the step's metrics; one that raises stops the run with the step saved."""
    for callback in run.callbacks:
        try:
            callback(dict(metrics))
        except Exception:
            path = save_state(run, loop)
            run.console.print(f"[red]a callback raised after step {loop.step}; state saved in {path}")
            raise


def agreed_signal(run: Run, received: int | None) -> int | None:
    """A stop signal seen by any process stops all of them after the same step."""
    if run.accelerator.num_processes == 1:
        return received
    value = run.accelerator.reduce(torch.tensor(received or 0, device=run.accelerator.device), reduction="max")
    return int(value) or None


def run_steps(run: Run, loop: LoopState, writer: MetricsWriter | None, bar: ProgressBar) -> LoopState:
    """Steps loop.step+1 .. max_steps with checkpoints, stop signals and the non-finite-step limit."""
    cfg = run.cfg
    with StopSignals(run.console.print, lambda: newest_checkpoint(run)) as signals:
        for step in range(loop.step + 1, cfg.train.max_steps + 1):
            signals.step = step
            loop = run_one_step(run, loop, step, writer, bar)
            diverged = loop.bad_steps_in_a_row >= cfg.train.max_bad_steps
            received = agreed_signal(run, signals.received)
            if should_save(cfg, step, received is not None or diverged):
                path = save_state(run, loop)
            if diverged:
                raise TrainingDiverged(f"{loop.bad_steps_in_a_row} steps in a row had a non-finite loss or gradient "
                                       f"(train.max_bad_steps={cfg.train.max_bad_steps}); the last good state is "
                                       f"in {path}. Lower optim.lr or check the rewards, then resume.")
            if received is not None:
                raise Interrupted(received, f"stopped by {signal.Signals(received).name} after "
                                  f"step {step}; checkpoint {path}. Resume with: gpgrl train --config "
                                  f"{run.output_dir / 'config.yaml'} train.resume=true")
    return loop


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class TrainResult:
    """What a training job leaves: its summary (summary.json), the trained model and its tokenizer or processor
    (in memory; final/ holds them on disk), and the output directory."""

    summary: dict[str, Any]
    model: Any
    tokenizer: Any
    output_dir: Path


def train(cfg: Config, console: Console | None = None, inputs: RunInputs | None = None) -> TrainResult:
    """Run the whole job described by `cfg` (with the objects of `inputs` in place of what it names)."""
    console = console or Console()
    started = time.perf_counter()
    run = setup(cfg, console, inputs)
    loop = resume_or_start(run)
    run.engine.push_weights(run.strategy)  # a resumed run's weights (and the exact dtype) into the engine
    main = run.accelerator.is_main_process
    before_path = run.output_dir / "eval_before.json"
    before = None
    if cfg.eval.before:
        before = stored_eval(before_path) if loop.step > 0 and before_path.exists() else run_eval(run, "eval_before", 0)
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
    after = run_eval(run, "eval_after", loop.step) if cfg.eval.after else None
    summary = {"algorithm": run.algo.name, "steps": loop.step, "wall_time_s": round(time.perf_counter() - started, 1),
               "accuracy_before": before["accuracy"] if before else None,
               "accuracy_after": after["accuracy"] if after else None,
               "eval_n": (after or before or {"n": 0})["n"]}
    if cfg.eval.blank_control:
        summary.update(accuracy_before_blank=(before or {}).get("accuracy_blank"),
                       accuracy_after_blank=(after or {}).get("accuracy_blank"))
    final = run.strategy.final_model(lambda: load_policy(cfg.model, cfg.train.seed)[0])  # None off the main process
    if main:
        save_final(final, run.tokenizer, run.output_dir / "final",
                   model_card(cfg, run.algo, summary, run.encoder.accepts_images))
        (run.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(run.console, {"before": before, "after": after})
    return TrainResult(summary, final, run.tokenizer, run.output_dir)
