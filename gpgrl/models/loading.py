"""Loading the policy, its tokenizer or processor and the frozen reference, and the final save.

Owns resolving `model.name` (a built-in name from `gpgrl.models.builtins`, a local directory or a hub id), the
model kind (`gpgrl.models.kinds`: a text model with its tokenizer, or a vision-language model with its processor),
tokenizer conventions (left padding, a pad token, a chat template), dtype / KV-cache / gradient-checkpointing
settings, LoRA wrapping (peft; on a vision-language model, on its language model only) with a seeded
initialisation, which vision parameters train (`model.freeze_vision`), the frozen reference model of the KL term
and the atomic final save (LoRA merged) with a model card.
"""

from __future__ import annotations

import copy
import difflib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from gpgrl.config import ModelConfig
from gpgrl.logs import phase
from gpgrl.models.builtins import BUILTIN_MODELS, ModelLoadError, _discard, cache_root, ensure_builtin
from gpgrl.models.kinds import KINDS, ModelKind, lora_target_names, model_kind, vision_parameters
from gpgrl.models.processors import load_processor

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def looks_like_path(name: str) -> bool:
    """A hub id is 'name' or 'org/name'; anything else with separators, '.', '~' or a drive is a path."""
    return (os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.count("/") > 1
            or name.endswith("/") or (os.altsep is not None and os.altsep in name))


def _is_local(source: str) -> bool:
    return Path(source).expanduser().is_dir()


def resolve_model_source(cfg: ModelConfig) -> str:
    """Built-in name → its cached directory (built on first use); local directory → itself; else a hub id."""
    if cfg.name in BUILTIN_MODELS:
        return str(ensure_builtin(cfg.name, cache_root(cfg)))
    path = Path(cfg.name).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ModelLoadError(f"model.name={cfg.name!r} is a file: give the directory that holds config.json, "
                             "the weights and the tokenizer")
    if looks_like_path(cfg.name):
        raise ModelLoadError(f"model.name={cfg.name!r}: no such directory; give an existing checkpoint "
                             f"directory, a hub id, or a built-in name ({', '.join(BUILTIN_MODELS)})")
    return cfg.name


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    """Padding is masked everywhere, so eos can serve as pad when the tokenizer defines none."""
    if tokenizer.pad_token is not None:
        return
    if tokenizer.eos_token is None:
        raise ModelLoadError(f"tokenizer of {source!r} has neither a pad nor an eos token; batched "
                             "generation needs one: add a pad_token to its tokenizer_config.json")
    tokenizer.pad_token = tokenizer.eos_token


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """Tokenizer of `source`, left padding (batched generation), a pad token; needs a chat template."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=_is_local(source))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load a tokenizer from {source!r}: {err}") from err
    tokenizer.padding_side = "left"
    _ensure_pad_token(tokenizer, source)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            f"tokenizer of {source!r} has no chat template: gpgrl formats prompts as chat messages, so use "
            "an instruct/chat model (e.g. model.name=smollm2-135m-instruct) or add a chat_template.jinja to "
            "the checkpoint directory (plain-text prompts are not supported yet)")
    return tokenizer


def _pixel_limits(processor: Any, cfg: ModelConfig) -> None:
    """model.image_min_pixels / image_max_pixels onto a Qwen2-VL-style image processor (0 keeps its own)."""
    if not (cfg.image_min_pixels or cfg.image_max_pixels):
        return
    size = getattr(processor.image_processor, "size", None)
    if size is None or getattr(size, "shortest_edge", None) is None or getattr(size, "longest_edge", None) is None:
        raise ModelLoadError(f"model.image_min_pixels / model.image_max_pixels apply to image processors that "
                             f"resize by pixel count (Qwen2-VL, Qwen2.5-VL); {type(processor.image_processor).__name__}"
                             f" of model.name={cfg.name!r} does not: leave them at 0")
    lower = cfg.image_min_pixels or size.shortest_edge
    upper = cfg.image_max_pixels or size.longest_edge
    if lower > upper:
        raise ModelLoadError(f"model.image_min_pixels={lower} exceeds model.image_max_pixels={upper}")
    size.shortest_edge, size.longest_edge = lower, upper


def load_processor_for(source: str, cfg: ModelConfig) -> Any:
    """The processor of a vision-language checkpoint, with the tokenizer conventions of `load_tokenizer`."""
    try:
        processor = load_processor(source, _is_local(source))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model.name={cfg.name!r}: cannot load an image-text processor from {source!r}: "
                             f"{err}") from err
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    _ensure_pad_token(tokenizer, source)
    if not getattr(processor, "chat_template", None):
        processor.chat_template = getattr(tokenizer, "chat_template", None)
    if not processor.chat_template:
        raise ModelLoadError(f"model.name={cfg.name!r}: the processor of {source!r} has no chat template: add a "
                             "chat_template.jinja to the checkpoint directory")
    _pixel_limits(processor, cfg)
    return processor


def _check_kind_options(cfg: ModelConfig, kind: ModelKind) -> None:
    if kind.name == "text" and (cfg.freeze_vision or cfg.image_min_pixels or cfg.image_max_pixels):
        raise ModelLoadError(f"model.freeze_vision / model.image_min_pixels / model.image_max_pixels apply to "
                             f"vision-language models; model.name={cfg.name!r} is a text model: remove them")


def _load_base(cfg: ModelConfig, source: str, kind: ModelKind) -> PreTrainedModel:
    """The kind's auto class in cfg.dtype; any failure becomes a ModelLoadError naming model.name."""
    try:
        model = kind.auto_class.from_pretrained(source, dtype=_DTYPES[cfg.dtype], local_files_only=_is_local(source))
    except (OSError, ValueError, KeyError) as err:
        close = difflib.get_close_matches(cfg.name, list(BUILTIN_MODELS), n=1, cutoff=0.6)
        hint = f" (did you mean the built-in {close[0]!r}?)" if close else ""
        what = "causal language model" if kind.name == "text" else "vision-language model"
        raise ModelLoadError(
            f"model.name={cfg.name!r}{hint}: cannot load a {what} from {source!r}: {err}. "
            f"Give a local checkpoint directory, a built-in name ({', '.join(BUILTIN_MODELS)}), or a hub id "
            "(offline, only ids already in the Hugging Face cache load)") from err
    model.config.use_cache = False  # training forwards build no KV cache ...
    model.generation_config.use_cache = True  # ... but `generate` keeps using one
    return model


def _apply_lora(model: PreTrainedModel, cfg: ModelConfig, seed: int, scope: str) -> torch.nn.Module:
    """Wrap in a peft LoRA model (adapters under `scope` only); the adapter init is seeded by `seed` without
    touching the global RNG."""
    from peft import LoraConfig, get_peft_model

    targets = lora_target_names(model, cfg.lora_target_modules, scope)
    hint = ("Use 'all-linear' or comma-separated module names such as q_proj,k_proj,v_proj,o_proj")
    if not targets:
        raise ModelLoadError(f"model.lora_target_modules={cfg.lora_target_modules!r} names no linear layer of the "
                             f"language model of model.name={cfg.name!r}. {hint}")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return get_peft_model(model, lora)
    except ValueError as err:
        raise ModelLoadError(f"model.lora_target_modules={cfg.lora_target_modules!r} does not fit model.name="
                             f"{cfg.name!r}: {err}. {hint}") from err


def _set_vision_trainable(model: torch.nn.Module, freeze_vision: bool) -> None:
    """The eye trains in full (also beside LoRA adapters) unless model.freeze_vision freezes the tower; the
    projector always trains."""
    tower, projector = vision_parameters(model)
    for p in tower:
        p.requires_grad_(not freeze_vision)
    for p in projector:
        p.requires_grad_(True)


def _enable_checkpointing(model: PreTrainedModel) -> None:
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _source_kind(cfg: ModelConfig) -> tuple[str, ModelKind]:
    source = resolve_model_source(cfg)
    try:
        kind = model_kind(source, _is_local(source))
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"model.name={cfg.name!r}: cannot read the model config of {source!r}: {err}. Give a "
                             f"local checkpoint directory, a built-in name ({', '.join(BUILTIN_MODELS)}), or a hub "
                             "id (offline, only ids already in the Hugging Face cache load)") from err
    _check_kind_options(cfg, kind)
    return source, kind


def load_processing(cfg: ModelConfig) -> Any:
    """The tokenizer (text model) or processor (vision-language model) of model.name, without the weights."""
    return _processing(*_source_kind(cfg), cfg)


def _processing(source: str, kind: ModelKind, cfg: ModelConfig) -> Any:
    if kind.name == "vision":
        return load_processor_for(source, cfg)
    try:
        return load_tokenizer(source)
    except ModelLoadError as err:
        raise ModelLoadError(f"model.name={cfg.name!r}: {err}") from err


def load_policy(cfg: ModelConfig, seed: int) -> tuple[torch.nn.Module, Any]:
    """The trainable policy (train mode; a peft model when model.lora_r > 0) and its tokenizer (a text model) or
    processor (a vision-language model).

    `model.config.use_cache` is False (training forwards); `generation_config.use_cache` stays True, so call
    `model.eval()` around `generate` (gradient checkpointing disables the cache in train mode).
    """
    source, kind = _source_kind(cfg)
    processing = _processing(source, kind, cfg)
    phase(f"loading model {cfg.name!r} ({kind.name}) from {source}")
    return _policy(cfg, seed, _load_base(cfg, source, kind), kind), processing


def _policy(cfg: ModelConfig, seed: int, model: torch.nn.Module, kind: ModelKind) -> torch.nn.Module:
    """The settings of model.* applied to a loaded model: gradient checkpointing, LoRA, the eye, train mode."""
    if cfg.gradient_checkpointing:
        _enable_checkpointing(model)
        if cfg.lora_r > 0:
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still get grad input
    if cfg.lora_r > 0:
        model = _apply_lora(model, cfg, seed, kind.lora_scope(model))
    _set_vision_trainable(model, cfg.freeze_vision)
    model.train()
    return model


def prepare_loaded(cfg: ModelConfig, seed: int, model: torch.nn.Module, processing: Any) -> tuple[torch.nn.Module, Any]:
    """An already-loaded model and tokenizer (or processor) made ready as `load_policy` makes its own: tokenizer
    conventions, cache flags, then gradient checkpointing, LoRA and the eye as model.* says."""
    kind = KINDS["vision" if getattr(processing, "image_processor", None) is not None else "text"]
    _check_kind_options(cfg, kind)
    tokenizer = processing.tokenizer if kind.name == "vision" else processing
    tokenizer.padding_side = "left"
    _ensure_pad_token(tokenizer, "the given tokenizer")
    if not getattr(processing, "chat_template", None) and not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError("the given tokenizer (or processor) has no chat template: gpgrl formats prompts as chat "
                             "messages; set its chat_template")
    if kind.name == "vision" and not getattr(processing, "chat_template", None):
        processing.chat_template = tokenizer.chat_template
    model.config.use_cache = False
    model.generation_config.use_cache = True
    return _policy(cfg, seed, model, kind), processing


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy (eval mode, no gradients) of a given model, as the KL term's reference."""
    reference = copy.deepcopy(model)
    reference.eval()
    reference.requires_grad_(False)
    return reference


def load_reference(cfg: ModelConfig) -> PreTrainedModel:
    """A frozen copy of the base model (no LoRA, eval mode, no gradients) for the KL penalty."""
    source, kind = _source_kind(cfg)
    model = _load_base(cfg, source, kind)
    model.eval()
    model.requires_grad_(False)
    return model


# ---------------------------------------------------------------- final save


def _plain_model(model: torch.nn.Module) -> PreTrainedModel:
    """Unwrap DDP-style `.module`; merge LoRA into a copy (the caller's peft model stays usable)."""
    model = getattr(model, "module", model)
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model


def save_final(model: torch.nn.Module, tokenizer: Any, out_dir: Path, card: str) -> None:
    """Write a standalone checkpoint (LoRA merged) + tokenizer or processor + README.md card to `out_dir`,
    atomically."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    plain = _plain_model(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    saved_use_cache = plain.config.use_cache
    try:
        plain.config.use_cache = True  # the saved checkpoint is for inference
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(card if card.endswith("\n") else card + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private
        if out_dir.exists():
            _discard(out_dir)
        os.rename(tmp, out_dir)
    finally:
        plain.config.use_cache = saved_use_cache
        shutil.rmtree(tmp, ignore_errors=True)
