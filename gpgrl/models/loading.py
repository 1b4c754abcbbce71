"""Loading the policy, its tokenizer and the frozen reference, and the final save.

Owns resolving `model.name` (a built-in name from `gpgrl.models.builtins`, a local directory or a hub id),
tokenizer conventions (left padding, a pad token, a chat template), dtype / KV-cache / gradient-checkpointing
settings, LoRA wrapping (peft) with a seeded initialisation, the frozen reference model of the KL term and the
atomic final save (LoRA merged) with a model card.
"""

from __future__ import annotations

import copy
import difflib
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from gpgrl.config import ModelConfig
from gpgrl.models.builtins import BUILTIN_MODELS, ModelLoadError, _discard, cache_root, ensure_builtin

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _looks_like_path(name: str) -> bool:
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
    if _looks_like_path(cfg.name):
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


def _load_base(cfg: ModelConfig, source: str) -> PreTrainedModel:
    """AutoModelForCausalLM in cfg.dtype; any failure becomes a ModelLoadError naming model.name."""
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=_DTYPES[cfg.dtype],
                                                     local_files_only=_is_local(source))
    except (OSError, ValueError, KeyError) as err:
        close = difflib.get_close_matches(cfg.name, list(BUILTIN_MODELS), n=1, cutoff=0.6)
        hint = f" (did you mean the built-in {close[0]!r}?)" if close else ""
        raise ModelLoadError(
            f"model.name={cfg.name!r}{hint}: cannot load a causal language model from {source!r}: {err}. "
            f"Give a local checkpoint directory, a built-in name ({', '.join(BUILTIN_MODELS)}), or a hub id "
            "(offline, only ids already in the Hugging Face cache load)") from err
    model.config.use_cache = False  # training forwards build no KV cache ...
    model.generation_config.use_cache = True  # ... but `generate` keeps using one
    return model


def _lora_targets(spec: str) -> str | list[str]:
    if spec.strip() == "all-linear":
        return "all-linear"
    return [name.strip() for name in spec.split(",") if name.strip()]


def _apply_lora(model: PreTrainedModel, cfg: ModelConfig, seed: int) -> torch.nn.Module:
    """Wrap in a peft LoRA model; the adapter init is seeded by `seed` without touching the global RNG."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=_lora_targets(cfg.lora_target_modules), task_type="CAUSAL_LM")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return get_peft_model(model, lora)
    except ValueError as err:
        raise ModelLoadError(
            f"model.lora_target_modules={cfg.lora_target_modules!r} does not fit model.name={cfg.name!r}: "
            f"{err}. Use 'all-linear' or comma-separated module names such as q_proj,k_proj,v_proj,o_proj"
        ) from err


def _enable_checkpointing(model: PreTrainedModel) -> None:
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def load_policy(cfg: ModelConfig, seed: int) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The trainable policy (train mode; a peft model when model.lora_r > 0) and its tokenizer.

    `model.config.use_cache` is False (training forwards); `generation_config.use_cache` stays True, so call
    `model.eval()` around `generate` (gradient checkpointing disables the cache in train mode).
    """
    source = resolve_model_source(cfg)
    try:
        tokenizer = load_tokenizer(source)
    except ModelLoadError as err:
        raise ModelLoadError(f"model.name={cfg.name!r}: {err}") from err
    model: torch.nn.Module = _load_base(cfg, source)
    if cfg.gradient_checkpointing:
        _enable_checkpointing(model)
        if cfg.lora_r > 0:
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still get grad input
    if cfg.lora_r > 0:
        model = _apply_lora(model, cfg, seed)
    model.train()
    return model, tokenizer


def load_reference(cfg: ModelConfig) -> PreTrainedModel:
    """A frozen copy of the base model (no LoRA, eval mode, no gradients) for the KL penalty."""
    model = _load_base(cfg, resolve_model_source(cfg))
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


def save_final(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: Path, card: str) -> None:
    """Write a standalone checkpoint (LoRA merged) + tokenizer + README.md card to `out_dir`, atomically."""
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
