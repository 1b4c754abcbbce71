"""The one typed configuration of a gpgrl run.

A frozen dataclass tree (model, data, rollout, algorithm, reward, optim, train, eval, logging, parallel) with the
defaults of the built-in demo. `load_config(path, overrides)` reads YAML, applies `section.key=value`
overrides, coerces strings to the declared types and validates everything once, before anything heavy is
loaded. Every error names the key to change; unknown keys get a did-you-mean suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message says which key to change and how."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _one_of(key: str, value: object, choices: Sequence[object]) -> None:
    _require(value in choices, f"{key}={value!r} is not one of {', '.join(map(repr, choices))}")


DEFAULT_SYSTEM_PROMPT = (
    "You are a careful math assistant. Solve the problem, then put the final answer "
    "within \\boxed{} on the last line."
)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "smollm2-135m-instruct"
    """Hugging Face hub id, local directory, or a built-in name: smollm2-135m-instruct, tiny-random,
    smollm2-135m-vision, tiny-random-qwen2-vl, tiny-random-qwen2.5-vl, tiny-random-idefics3. A text model loads
    with its tokenizer, an image-text-to-text model (Qwen2-VL, Qwen2.5-VL, Idefics3/SmolVLM, ...) with its
    processor."""
    dtype: str = "float32"
    """Parameter dtype: float32 or bfloat16."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory (slower)."""
    lora_r: int = 0
    """LoRA rank; 0 trains all parameters."""
    lora_alpha: int = 16
    """LoRA scaling numerator (used when lora_r > 0)."""
    lora_dropout: float = 0.0
    """LoRA dropout (used when lora_r > 0)."""
    lora_target_modules: str = "all-linear"
    """peft target_modules: 'all-linear' or a comma-separated list of module names."""
    cache_dir: str = ""
    """Where built-in models are converted and cached; empty means $GPGRL_CACHE or ~/.cache/gpgrl."""
    autocast_bf16: bool = False
    """Run sampling and training forwards under bf16 autocast, LM head in fp32; parameters, gradients and optimizer
    state stay fp32. Faster where the hardware has bf16 matmuls; moves log-probs slightly (docs/performance.md)."""
    freeze_vision: bool = False
    """Vision-language models: freeze the vision tower (the projector still trains). Without it the whole eye
    trains, also beside LoRA adapters, which go on the language model only."""
    image_min_pixels: int = 0
    """Vision-language models whose processor resizes by pixel count (Qwen2-VL, Qwen2.5-VL): the least pixels an
    image is resized to (0 = the processor's own setting)."""
    image_max_pixels: int = 0
    """As image_min_pixels, the most pixels (the references use 401408; 0 = the processor's own setting)."""

    def __post_init__(self) -> None:
        _require(bool(self.name), "model.name is empty: give a hub id, a local path, or smollm2-135m-instruct")
        _one_of("model.dtype", self.dtype, ("float32", "bfloat16"))
        _require(self.lora_r >= 0, f"model.lora_r={self.lora_r} must be >= 0 (0 disables LoRA)")
        _require(self.lora_alpha > 0, f"model.lora_alpha={self.lora_alpha} must be > 0")
        _require(0.0 <= self.lora_dropout < 1.0, f"model.lora_dropout={self.lora_dropout} must be in [0, 1)")
        _require(not (self.autocast_bf16 and self.dtype == "bfloat16"),
                 "model.autocast_bf16=true needs model.dtype=float32 (bfloat16 parameters already compute in bf16)")
        _require(self.image_min_pixels >= 0 and self.image_max_pixels >= 0,
                 "model.image_min_pixels and model.image_max_pixels must be >= 0 (0 = the processor's own)")
        low, high = self.image_min_pixels, self.image_max_pixels
        _require(not (low and high and low > high),
                 f"model.image_min_pixels={low} exceeds model.image_max_pixels={high}")


DATA_SOURCES = ("auto", "reasoning_gym", "file", "hf", "champ", "shapes", "given")
DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
OPTIMIZERS = ("adamw", "sgd")
ANSWER_FORMATS = ("plain", "gsm8k", "boxed", "tagged")
_DATA_KEYS_BY_SOURCE = {
    "reasoning_gym": ("task", "task_kwargs", "train_size", "eval_size"),
    "file": ("path", "split", "eval_split", "prompt_column", "answer_column", "answer_format", "group_column",
             "max_rows", "image_column"),
    "hf": ("path", "subset", "split", "eval_split", "prompt_column", "answer_column", "answer_format",
           "group_column", "max_rows", "image_column"),
    "champ": ("split", "eval_split", "prompt_column", "answer_column", "answer_format", "group_column", "max_rows"),
    "shapes": ("task", "train_size", "eval_size", "image_size", "shape_colors"),
    "given": ("eval_split", "prompt_column", "answer_column", "answer_format", "group_column", "image_column"),
}
"""The data.* keys each source reads (data.seed, data.system_prompt, data.prompt_template and data.response_prefix
apply to all)."""


@dataclass(frozen=True)
class DataConfig:
    task: str = "basic_arithmetic"
    """reasoning-gym task name used for training and held-out evaluation (reasoning-gym source); with
    data.source=shapes one of color, count, position, grounding (see gpgrl/data/shapes.py)."""
    task_kwargs: dict = field(default_factory=lambda: {"min_terms": 2, "max_terms": 2, "min_digits": 1,
                                                       "max_digits": 2, "operators": ["+"],
                                                       "allow_parentheses": False, "allow_negation": False})
    """Keyword arguments of the reasoning-gym generator (e.g. data.task_kwargs.max_digits=3)."""
    train_size: int = 2000
    """Number of training prompts generated (one epoch; reasoning-gym source)."""
    eval_size: int = 100
    """Number of held-out evaluation prompts; never overlaps training (reasoning-gym source)."""
    seed: int = 1234
    """Seed of the data generator and of a fractional data.eval_split; the reasoning-gym eval split uses a
    distinct, derived seed and is de-duplicated."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """System message of the chat template; empty for none."""
    prompt_template: str = "{question} Reply with only the result, within \\boxed{}."
    """User message; `{question}` is replaced by the task's question (e.g. '{question} Answer in \\boxed{}.')."""
    response_prefix: str = ""
    """Text the assistant's reply starts with, appended after the chat template's generation prompt (e.g. 'The
    final answer is'); the model generates the rest. Rewards, evaluation and completions.jsonl see prefix +
    generated text; log-probs and the loss cover the generated tokens only (the prefix is part of the prompt).
    rollout.stop_after_answer looks at the generated text only (a box opened in the prefix does not end it)."""
    source: str = "auto"
    """Where prompts come from: reasoning_gym | file (data.path is a .jsonl, .json, .parquet or .csv file) | hf
    (data.path is a Hugging Face hub id or a local dataset directory) | champ (the bundled CHAMP competition-math
    set) | shapes (synthetic images drawn with PIL: data.task color, count, position or grounding) | given (the
    datasets passed to gpgrl.train / gpgrl.evaluate in Python); auto = reasoning_gym when data.path is empty, file
    for those suffixes, else hf."""
    path: str = ""
    """Dataset file or Hugging Face dataset (hub id or local directory); empty = the reasoning-gym data.task."""
    subset: str = ""
    """Hugging Face dataset configuration name (e.g. main for openai/gsm8k); hf only."""
    split: str = "train"
    """Split the training prompts come from (hf: a split name; a file or champ is one split called train);
    empty = no training prompts (evaluation-only data)."""
    eval_split: str = ""
    """Held-out prompts: a split name (hf, e.g. test), or a fraction such as 0.1 of data.split held out by a seeded
    shuffle (1.0 = all of it); empty = none. Training rows whose question also occurs in eval are dropped."""
    prompt_column: str = "question"
    """Column holding the prompt: a string, or a list of {role, content} (or ShareGPT {from, value}) messages ending
    with the user's. Text may mark images: `<image>` (the image column's next image) or `<img>path</img>` (a file
    relative to the data file's folder)."""
    answer_column: str = "answer"
    """Column holding the gold answer (a string, a number, or a box [x1, y1, x2, y2]); empty = the final assistant
    message of the conversation in data.prompt_column (ShareGPT / LLaVA data)."""
    answer_format: str = "plain"
    """How the gold answer is read from data.answer_column: plain (as is) | gsm8k (the text after the last '####',
    thousands separators removed) | boxed (the content of the last \\boxed{...}) | tagged (the content of the first
    <answer>...</answer>, the multimodal references' solutions; the text as is without one)."""
    group_column: str = ""
    """Column whose value groups items in the eval report (e.g. subject, category); empty = no groups.
    reasoning-gym items are grouped by task."""
    max_rows: int = 0
    """Read at most this many rows of each split, in file order (0 = all)."""
    image_column: str = "image"
    """Column holding a row's image or list of images (a path relative to the data file's folder or absolute,
    bytes, a PIL image, or a datasets Image); a row without it has no image. Every image is checked to decode
    before training starts."""
    image_size: int = 56
    """Side in pixels of the images the shapes tasks draw (data.source=shapes)."""
    shape_colors: tuple[str, ...] = ()
    """The colours the shapes tasks draw with (data.source=shapes), e.g. [red, green, blue]; empty = all six (red,
    green, blue, yellow, purple, orange)."""

    def __post_init__(self) -> None:
        _require(bool(self.task), "data.task is empty: name a reasoning-gym task such as basic_arithmetic")
        _require(isinstance(self.task_kwargs, dict), "data.task_kwargs must be a mapping")
        _require(self.train_size > 0, f"data.train_size={self.train_size} must be > 0")
        _require(self.eval_size >= 0, f"data.eval_size={self.eval_size} must be >= 0")
        _require("{question}" in self.prompt_template,
                 f"data.prompt_template={self.prompt_template!r} must contain {{question}} where the question goes")
        _one_of("data.source", self.source, DATA_SOURCES)
        _one_of("data.answer_format", self.answer_format, ANSWER_FORMATS)
        _require(self.max_rows >= 0, f"data.max_rows={self.max_rows} must be >= 0 (0 = all rows)")
        _require(bool(self.image_column), "data.image_column is empty: name the column that holds the images")
        _check_data_source(self)

    def resolved_source(self) -> str:
        """The source data.source=auto stands for: reasoning_gym, file or hf (see data.source)."""
        if self.source != "auto":
            return self.source
        if not self.path:
            return "reasoning_gym"
        return "file" if Path(self.path).suffix.lower() in DATA_FILE_SUFFIXES else "hf"

    def eval_fraction(self) -> float | None:
        """data.eval_split as a fraction in (0, 1], or None when it names a split (or is empty)."""
        try:
            fraction = float(self.eval_split)
        except ValueError:
            return None
        _require(0.0 < fraction <= 1.0, f"data.eval_split={self.eval_split!r} must be a fraction in (0, 1] "
                 "(1.0 holds out the whole split) or a split name")
        return fraction


def _field_default(cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _check_data_source(cfg: DataConfig) -> None:
    """Keys that the resolved source would ignore must keep their defaults; split names must exist."""
    source = cfg.resolved_source()
    used = set(_DATA_KEYS_BY_SOURCE[source])
    why = {"reasoning_gym": f"prompts come from reasoning-gym task {cfg.task!r} because data.path is empty",
           "file": f"prompts come from the file data.path={cfg.path!r}",
           "hf": f"prompts come from the Hugging Face dataset data.path={cfg.path!r}",
           "champ": "prompts come from the bundled CHAMP set",
           "shapes": f"prompts come from the synthetic shapes task {cfg.task!r}",
           "given": "prompts come from the datasets given to gpgrl.train / gpgrl.evaluate"}[source]
    for keys in _DATA_KEYS_BY_SOURCE.values():
        for key in keys:
            value = getattr(cfg, key)
            _require(key in used or value == _field_default(DataConfig, key),
                     f"data.{key}={value!r} has no effect here ({why}): remove it or change data.source/data.path "
                     "(datasets given in Python: data.source=given)")
    if source in ("file", "hf"):
        _require(bool(cfg.path), f"data.source={source} needs data.path (a file or a dataset id)")
    fraction = cfg.eval_fraction()
    if source == "given":
        _require(fraction is not None or not cfg.eval_split,
                 f"data.eval_split={cfg.eval_split!r}: datasets given in Python have no named splits; give a "
                 "fraction of train_dataset such as 0.1, or pass eval_dataset")
    if source in ("file", "champ"):
        _require(cfg.split in ("train", ""), f"data.split={cfg.split!r}: a {source} source is one split called "
                 "'train' (or '' for none); hold out part of it with data.eval_split=0.1")
        _require(fraction is not None or not cfg.eval_split,
                 f"data.eval_split={cfg.eval_split!r}: a {source} source has no named splits; give a fraction "
                 "such as 0.1 (1.0 = every row)")
    _require(fraction is None or bool(cfg.split),
             f"data.eval_split={cfg.eval_split} is a fraction of data.split, which is empty: set data.split")


@dataclass(frozen=True)
class RolloutConfig:
    prompts_per_step: int = 8
    """Prompts (groups) in the batch of one optimizer step, over all processes."""
    generations_per_prompt: int = 6
    """G: completions sampled per prompt (group size); at least 2."""
    max_new_tokens: int = 24
    """Completion length limit; longer completions are truncated and flagged."""
    temperature: float = 0.7
    """Sampling temperature; log-probs are computed at the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 = off)."""
    max_rounds: int = 4
    """Resampling budget per step: at most this many prompt batches are drawn to reach beta_th."""
    micro_batch_size: int = 48
    """Sequences per forward/backward pass (gradient accumulation inside one step); no effect on the result. The
    default holds the default recipe's whole step (8 x 6) in one pass; lower it if memory is short."""
    generation_batch_size: int = 64
    """Sequences generated per `generate` call; no effect on the result beyond padding."""
    max_prompt_tokens: int = 512
    """Prompts longer than this (after the chat template) are dropped from the train and eval sets at start-up
    and counted; 0 = no limit."""
    min_new_tokens: int = 0
    """EOS is masked until this many tokens are generated (0 = off). Meant for equal-length benchmarks: it changes
    the sampling distribution, which the training log-probs do not model."""
    shared_prefill: bool = True
    """Sample (in training and evaluation) with gpgrl's KV-cached loop, which encodes each prompt (images included)
    once for its G completions and drops finished rows, instead of HF `generate` (which encodes it G times). Same
    tokens for the same seed up to float rounding; of the generation settings it applies temperature, top_p,
    min_new_tokens and the never-sampled image tokens only (false: HF `generate` with the model's generation
    config)."""
    stop_after_answer: bool = False
    """End a completion at its first complete answer: the brace that closes its first \\boxed{...}, or its first
    </answer>. For rewards that read only up to the answer (accuracy, boxed_format, label, ...): the tokens up to
    the stop are sampled as before, and the completion, its length and its log-probs are those tokens. Not for
    rewards that read past it (cosine and repetition_penalty score the whole text; a \\boxed{} inside <think>
    would end the completion before its </answer>)."""
    shared_prompt_forward: bool = True
    """Training forward: run each distinct prompt of a micro-batch once and its completions on the prompt's KV
    cache. Same gradient up to float rounding. Falls back to the plain forward, quietly, where a KV cache cannot
    carry gradients: under gradient checkpointing, under DDP (several processes) and under parallel.strategy
    fsdp2 / zero2 / zero3."""
    engine: str = "hf"
    """What samples the training completions: hf (gpgrl's sampler on the trained model itself) or vllm (a vLLM
    engine colocated in every process, weights pushed after every optimizer step; text models; the vllm extra).
    Evaluation always runs on the trained model."""
    importance_cap: float = 0.0
    """rollout.engine=vllm: weight each token's loss by min(π_trainer / π_engine, cap), the truncated importance
    sampling correction of the engine-versus-trainer mismatch (0 = off; TRL and verl use 2-10)."""
    vllm_gpu_memory_utilization: float = 0.3
    """rollout.engine=vllm on a GPU: the fraction of its memory vLLM may take (weights and KV cache), beside the
    trainer's."""

    def __post_init__(self) -> None:
        _one_of("rollout.engine", self.engine, ("hf", "vllm"))
        _require(self.importance_cap == 0 or (self.engine == "vllm" and self.importance_cap >= 1),
                 f"rollout.importance_cap={self.importance_cap} corrects an engine's sampling: it needs "
                 "rollout.engine=vllm and a cap >= 1 (0 = off)")
        _require(0 < self.vllm_gpu_memory_utilization < 1,
                 f"rollout.vllm_gpu_memory_utilization={self.vllm_gpu_memory_utilization} must be in (0, 1)")
        _require(not (self.engine == "vllm" and self.stop_after_answer),
                 "rollout.stop_after_answer is gpgrl's own sampler's: use it with rollout.engine=hf")
        _require(self.prompts_per_step > 0, f"rollout.prompts_per_step={self.prompts_per_step} must be > 0")
        _require(self.generations_per_prompt >= 2,
                 f"rollout.generations_per_prompt={self.generations_per_prompt}: a group needs at least 2 "
                 "completions for a baseline (set it to 2 or more)")
        _require(self.max_new_tokens > 0, f"rollout.max_new_tokens={self.max_new_tokens} must be > 0")
        _require(self.temperature > 0, f"rollout.temperature={self.temperature} must be > 0 (sampling is required)")
        _require(0.0 < self.top_p <= 1.0, f"rollout.top_p={self.top_p} must be in (0, 1]")
        _require(self.max_rounds >= 1, f"rollout.max_rounds={self.max_rounds} must be >= 1")
        _require(self.micro_batch_size > 0, f"rollout.micro_batch_size={self.micro_batch_size} must be > 0")
        _require(self.generation_batch_size > 0,
                 f"rollout.generation_batch_size={self.generation_batch_size} must be > 0")
        _require(self.max_prompt_tokens >= 0, f"rollout.max_prompt_tokens={self.max_prompt_tokens} must be >= 0")
        _require(0 <= self.min_new_tokens <= self.max_new_tokens,
                 f"rollout.min_new_tokens={self.min_new_tokens} must be in [0, rollout.max_new_tokens="
                 f"{self.max_new_tokens}]")


@dataclass(frozen=True)
class AlgorithmConfig:
    name: str = "gpg"
    """Preset name (see `gpgrl presets`)."""
    beta_th: float | None = None
    """Override: resample until the informative-group fraction reaches this (0 = never)."""
    alpha: str | None = None
    """Override: gradient correction none | samples (B/(B-M)) | tokens (exact for token-mean)."""
    f_norm: str | None = None
    """Override (estimators that take it): none | group_std | batch_std."""
    aggregation: str | None = None
    """Override: token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm |
    group-token-mean."""
    kl_coef: float | None = None
    """Override: k3 KL coefficient to the initial policy (> 0 loads a frozen reference model)."""
    clip_low: float | None = None
    """Override (clipped losses): lower clip range epsilon_low."""
    clip_high: float | None = None
    """Override (clipped losses): upper clip range epsilon_high."""
    micro_groups: int | None = None
    """Override: normalise (aggregate, apply α) per local micro-batch of this many groups, as HF-Trainer
    reference code does; 0 = over the whole optimizer step (gpgrl's micro-batch-invariant default)."""
    alpha_groups: int | None = None
    """Override (with micro_groups > 0): groups per α window, one reference micro-step over all its ranks
    (a multiple of micro_groups; 0 = micro_groups)."""

    def overrides(self) -> dict[str, Any]:
        """The preset fields this config overrides (those not None)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "name" and getattr(self, f.name) is not None}


@dataclass(frozen=True)
class RewardConfig:
    functions: tuple[str, ...] = ("accuracy", "boxed_format")
    """Reward functions: built-in names (gpgrl.rewards) or 'module:function' / 'path/to/file.py:function'."""
    weights: tuple[float, ...] = (1.0, 0.5)
    """One weight per function; the reward is the weighted sum. Weight 0 logs a function without using it."""
    kwargs: dict = field(default_factory=dict)
    """Parameters per function, by name or short name: e.g. reward.kwargs.cosine.max_len=2000 or
    reward.kwargs.soft_overlong={max_len: 512, cache: 128}."""
    timeout_s: float = 300.0
    """Wall-clock limit of one batch for all reward functions together (they run in parallel); 0 = none."""
    on_error: str = "raise"
    """A function that raises, times out or returns malformed values: raise (stop with its name) | zero (score
    the batch 0 for it, count it in reward_invalid and log a warning)."""

    def __post_init__(self) -> None:
        _require(len(self.functions) > 0, "reward.functions is empty: name at least one reward, e.g. accuracy")
        _require(len(self.weights) == len(self.functions),
                 f"reward.weights has {len(self.weights)} entries but reward.functions has "
                 f"{len(self.functions)}: give one weight per function")
        _require(isinstance(self.kwargs, dict) and all(isinstance(v, dict) for v in self.kwargs.values()),
                 f"reward.kwargs={self.kwargs!r} must map function names to mappings of parameters")
        _require(self.timeout_s >= 0, f"reward.timeout_s={self.timeout_s} must be >= 0 (0 = no limit)")
        _one_of("reward.on_error", self.on_error, ("raise", "zero"))


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "adamw"
    """adamw (torch AdamW, fused) | sgd (plain SGD: no momentum, the update is lr x gradient, so a gradient scale
    such as α reaches the weights unchanged; AdamW is invariant to a constant scale). adam_beta1/2 apply to adamw."""
    lr: float = 2e-5
    """Peak learning rate."""
    vision_lr: float = 0.0
    """Peak learning rate of a vision-language model's vision tower and projector (0 = optim.lr); an eye that
    starts at random wants a larger one than the pretrained language model."""
    weight_decay: float = 0.0
    """Weight decay (AdamW's decoupled one; SGD's L2 term)."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.99
    """AdamW beta2."""
    warmup_steps: int = 2
    """Linear warm-up steps from 0 to lr."""
    schedule: str = "constant"
    """After warm-up: constant | linear (to 0 at train.max_steps) | cosine (to 0 at train.max_steps)."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm; 0 disables it."""

    def __post_init__(self) -> None:
        _one_of("optim.optimizer", self.optimizer, OPTIMIZERS)
        _require(self.lr > 0, f"optim.lr={self.lr} must be > 0")
        _require(self.vision_lr >= 0, f"optim.vision_lr={self.vision_lr} must be >= 0 (0 = optim.lr)")
        _require(self.weight_decay >= 0, f"optim.weight_decay={self.weight_decay} must be >= 0")
        _require(0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1, "optim.adam_beta1/2 must be in [0, 1)")
        _require(self.warmup_steps >= 0, f"optim.warmup_steps={self.warmup_steps} must be >= 0")
        _one_of("optim.schedule", self.schedule, ("constant", "linear", "cosine"))
        _require(self.max_grad_norm >= 0, f"optim.max_grad_norm={self.max_grad_norm} must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 12
    """Optimizer steps."""
    output_dir: str = "runs/gpgrl"
    """Where config.yaml, metrics.jsonl, TensorBoard events, evals and final/ are written."""
    seed: int = 0
    """Seed of sampling, initialisation of LoRA/tiny models and the prompt order."""
    save_every: int = 50
    """Write a checkpoint every this many steps (and always at the end); 0 = only at the end."""
    keep_checkpoints: int = 2
    """Keep the newest this many checkpoints in train.output_dir."""
    resume: bool = False
    """Continue from the newest complete checkpoint in train.output_dir (exactly: same final weights)."""
    max_bad_steps: int = 3
    """Stop after this many steps in a row with a non-finite loss or gradient (each one is skipped)."""

    def __post_init__(self) -> None:
        _require(self.max_steps >= 0, f"train.max_steps={self.max_steps} must be >= 0")
        _require(bool(self.output_dir), "train.output_dir is empty: give a directory")
        _require(self.save_every >= 0, f"train.save_every={self.save_every} must be >= 0 (0 = only at the end)")
        _require(self.keep_checkpoints >= 1, f"train.keep_checkpoints={self.keep_checkpoints} must be >= 1")
        _require(self.max_bad_steps >= 1, f"train.max_bad_steps={self.max_bad_steps} must be >= 1")


@dataclass(frozen=True)
class EvalConfig:
    before: bool = True
    """Evaluate held-out accuracy before training (eval_before.json)."""
    after: bool = True
    """Evaluate held-out accuracy after training (eval_after.json)."""
    temperature: float = 0.0
    """0 = greedy decoding (one completion per item); > 0 samples eval.num_samples completions per item."""
    max_new_tokens: int = 32
    """Completion length limit during evaluation."""
    batch_size: int = 64
    """Sequences (prompts x eval.num_samples) per generate call during evaluation."""
    top_p: float = 1.0
    """Nucleus sampling threshold of sampled evaluation (1.0 = off; the paper's protocol uses 0.95 at T = 0.6)."""
    num_samples: int = 1
    """n: completions per item (> 1 needs eval.temperature > 0); pass@k and majority vote are computed over them."""
    k: tuple[int, ...] = (1,)
    """The k of the reported pass@k values (each <= eval.num_samples), e.g. eval.k=[1,4,16]."""
    output: str = ""
    """Where `gpgrl eval` writes its JSON summary (and <stem>_completions.jsonl beside it); empty =
    <train.output_dir>/eval.json."""
    scorer: str = ""
    """The reward that decides correctness (a built-in name or module:function, with reward.kwargs.<name> as its
    parameters): correct from its correct_at (1.0; iou: 0.5), and a graded scorer's mean is reported too (iou:
    mean_iou). Empty = accuracy, or for data.source=shapes the task's own (iou for grounding, else label with
    mention=true)."""
    blank_control: bool = False
    """Also score every item with its images replaced by blank ones (<name>_blank.json): how much an answer depends
    on the image."""

    def __post_init__(self) -> None:
        _require(self.temperature >= 0, f"eval.temperature={self.temperature} must be >= 0 (0 = greedy)")
        _require(self.max_new_tokens > 0, f"eval.max_new_tokens={self.max_new_tokens} must be > 0")
        _require(self.batch_size > 0, f"eval.batch_size={self.batch_size} must be > 0")
        _require(0.0 < self.top_p <= 1.0, f"eval.top_p={self.top_p} must be in (0, 1]")
        _require(self.num_samples >= 1, f"eval.num_samples={self.num_samples} must be >= 1")
        _require(self.num_samples == 1 or self.temperature > 0,
                 f"eval.num_samples={self.num_samples} needs eval.temperature > 0: greedy decoding gives one "
                 "completion per item")
        _require(len(self.k) > 0 and all(1 <= k <= self.num_samples for k in self.k),
                 f"eval.k={list(self.k)}: each k must be in [1, eval.num_samples={self.num_samples}]")


@dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = True
    """Write TensorBoard events to train.output_dir/tb."""
    wandb: bool = False
    """Log to Weights & Biases (needs the wandb extra and a login)."""
    wandb_project: str = "gpgrl"
    """W&B project name (used when logging.wandb is true)."""
    progress: bool = True
    """Show a live progress bar."""
    sample_completions: int = 1
    """Completions written to completions.jsonl per step (0 = none)."""

    def __post_init__(self) -> None:
        _require(self.sample_completions >= 0,
                 f"logging.sample_completions={self.sample_completions} must be >= 0")


PARALLEL_STRATEGIES = ("ddp", "fsdp2", "zero2", "zero3")


@dataclass(frozen=True)
class ParallelConfig:
    strategy: str = "ddp"
    """How several processes share the training state: ddp (each holds everything; gradients all-reduced), fsdp2
    (torch fully_shard per decoder layer: parameters, gradients and optimizer state sharded), zero2 (DeepSpeed:
    gradients and optimizer state sharded), zero3 (DeepSpeed: parameters too). Launch with torchrun or accelerate
    launch; an accelerate config that selects FSDP or DeepSpeed sets it (gpgrl/parallel/launcher.py)."""
    mixed_precision: str = "no"
    """fsdp2 only: 'bf16' computes forward/backward with bf16 parameters and reduces gradients in fp32, the sharded
    parameters and optimizer state staying fp32; 'no' keeps everything in the parameters' dtype."""
    cpu_offload: bool = False
    """fsdp2 only: keep the sharded parameters, gradients and optimizer state in CPU memory (torch CPUOffloadPolicy);
    saves GPU memory, costs host-device copies every step."""

    def __post_init__(self) -> None:
        _one_of("parallel.strategy", self.strategy, PARALLEL_STRATEGIES)
        _one_of("parallel.mixed_precision", self.mixed_precision, ("no", "bf16"))
        _require(self.strategy == "fsdp2" or (self.mixed_precision == "no" and not self.cpu_offload),
                 f"parallel.mixed_precision and parallel.cpu_offload apply to parallel.strategy=fsdp2, not "
                 f"{self.strategy!r}: remove them (ZeRO computes in model.dtype; use model.dtype=bfloat16)")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


# ---------------------------------------------------------------- building from YAML and overrides


def _suggest(key: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(candidates)})"


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or say what is wrong."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        # "none" is a value of string fields (algorithm.alpha=none, algorithm.f_norm=none), unset only elsewhere
        unset = ("null",) if inner is str else ("none", "null")
        if value is None or (isinstance(value, str) and value.lower() in unset):
            return None
        return _coerce(key, value, inner)
    if origin is tuple:
        (inner, _) = typing.get_args(hint)
        items = value.split(",") if isinstance(value, str) else value
        _require(isinstance(items, (list, tuple)), f"{key} must be a list, got {value!r}")
        return tuple(_coerce(key, v.strip() if isinstance(v, str) else v, inner) for v in items)
    if hint is dict:
        _require(isinstance(value, dict), f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        _require(isinstance(value, bool), f"{key} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        try:
            number = hint(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        _require(number is not None and (hint is float or float(value) == number),
                 f"{key} must be {'an integer' if hint is int else 'a number'}, got {value!r}")
        return number
    if hint is str:
        _require(not isinstance(value, (dict, list)), f"{key} must be a string, got {value!r}")
        return "" if value is None else str(value)
    raise ConfigError(f"{key}: unsupported field type {hint!r}")  # pragma: no cover - schema bug


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    _require(isinstance(raw, Mapping), f"{prefix or 'the config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        _require(key in names, f"unknown config key {prefix}{key!r}{_suggest(str(key), names)}")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(f"{prefix}{name}", value, hint)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        _require(isinstance(child, dict), f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split 'a.b=value' and parse the value as YAML (so 3, 1e-5, true, [1, 2] work)."""
    key, sep, raw = text.partition("=")
    _require(bool(sep) and bool(key.strip()),
             f"override {text!r} must look like section.key=value (e.g. train.max_steps=10)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _section_keys() -> dict[str, list[str]]:
    hints = typing.get_type_hints(Config)
    return {name: [f.name for f in dataclasses.fields(hints[name])] for name in hints}


def _merge_override(tree: dict[str, Any], key: str, value: Any) -> None:
    """Apply one override; a dict-typed field accepts a nested key (data.task_kwargs.max_digits=3)."""
    sections = _section_keys()
    section, _, rest = key.partition(".")
    _require(section in sections, f"unknown config section {section!r}{_suggest(section, list(sections))}")
    _require(bool(rest), f"override {key!r} names a whole section: use {section}.KEY=value")
    name, _, sub = rest.partition(".")
    hints = typing.get_type_hints(typing.get_type_hints(Config)[section])
    _require(name in hints, f"unknown config key {section}.{name!r}{_suggest(name, sections[section])}")
    if sub and hints[name] is dict:
        current = tree.setdefault(section, {}).get(name)
        merged = dict(current if isinstance(current, dict) else getattr(getattr(Config(), section), name))
        _set_dotted(merged, sub, value)
        value, key = merged, f"{section}.{name}"
    _set_dotted(tree, key, value)


def build_config(raw: Mapping[str, Any] | None = None, overrides: Sequence[str] = (),
                 world_size: int = 1) -> Config:
    """Config from a nested mapping plus 'a.b=c' overrides; validated (raises ConfigError)."""
    tree: dict[str, Any] = _deep_copy(dict(raw or {}))
    for text in overrides:
        key, value = parse_override(text)
        _merge_override(tree, key, value)
    cfg = _build(Config, tree, "")
    validate(cfg, world_size)
    return cfg


def _deep_copy(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _deep_copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_deep_copy(v) for v in tree]
    return tree


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), world_size: int = 1) -> Config:
    """Read a YAML file (optional) and apply overrides; raises ConfigError with the key to change."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        _require(p.is_file(), f"config file {str(p)!r} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {err}") from err
        _require(isinstance(raw, dict), f"config file {str(p)!r} must hold a mapping of sections")
    return build_config(raw, overrides, world_size)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML/JSON output."""
    out = dataclasses.asdict(cfg)

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(out)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ---------------------------------------------------------------- cross-section validation


def validate(cfg: Config, world_size: int = 1) -> None:
    """Checks that involve several sections, the process count or the algorithm registry."""
    from gpgrl.algos.presets import resolve_algorithm  # local: keeps config importable alone

    try:
        algo = resolve_algorithm(cfg.algorithm.name, **cfg.algorithm.overrides())
    except (KeyError, ValueError) as err:
        raise ConfigError(f"algorithm: {err.args[0] if err.args else err}") from err
    p = cfg.rollout.prompts_per_step
    window = algo.alpha_groups or algo.micro_groups
    _require(not window or p % window == 0,
             f"rollout.prompts_per_step={p} is not a multiple of the preset's α window of {window} groups "
             f"(algorithm.alpha_groups / algorithm.micro_groups of {algo.name!r}): every reference micro-step "
             "must be complete; change one of them")
    _require(p % world_size == 0,
             f"rollout.prompts_per_step={p} is not divisible by the {world_size} processes: whole groups of "
             f"rollout.generations_per_prompt={cfg.rollout.generations_per_prompt} completions must stay on one "
             f"process; set rollout.prompts_per_step to a multiple of {world_size}")
