"""Model kinds: text language models and vision-language models, each one interface, chosen once per run.

A kind says how a checkpoint is loaded (`AutoModelForCausalLM` + tokenizer, or `AutoModelForImageTextToText` +
processor), where LoRA adapters go (a vision-language model gets them on its language model only) and which
parameters form the eye (vision tower and projector: `model.freeze_vision`, `optim.vision_lr`). `model_kind` reads a
checkpoint's config and picks the kind; nothing downstream asks again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

VISION_TOWERS = ("visual", "vision_model", "vision_tower", "vision_encoder")
"""Attribute names under which the families keep their vision encoder (Qwen2-VL: `model.visual`, Idefics3:
`model.vision_model`, LLaVA-style: `model.vision_tower`)."""
PROJECTORS = ("merger", "connector", "multi_modal_projector", "mm_projector")
"""Attribute names of the projector from vision features to the language model's embeddings (Qwen2-VL keeps it
inside the tower as `visual.merger`)."""


@dataclass(frozen=True)
class ModelKind:
    """How one kind of model is loaded and split into parts."""

    name: str
    auto_class: Any
    """The transformers auto class that loads the checkpoint."""
    lora_scope: Callable[[torch.nn.Module], str]
    """The qualified module name under which LoRA adapters may go ('' = the whole model)."""


def _module_name(model: torch.nn.Module, module: torch.nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def language_model_prefix(model: torch.nn.Module) -> str:
    """The qualified name of a vision-language model's language model (its decoder stack)."""
    decoder = model.get_decoder()
    return _module_name(model, decoder)


KINDS: dict[str, ModelKind] = {
    "text": ModelKind("text", AutoModelForCausalLM, lambda model: ""),
    "vision": ModelKind("vision", AutoModelForImageTextToText, language_model_prefix),
}


def model_kind(source: str, local_only: bool) -> ModelKind:
    """The kind of the checkpoint at `source`: vision when its config type has an image-text-to-text model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    return KINDS["vision" if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES else "text"]


def lora_target_names(model: torch.nn.Module, spec: str, scope: str) -> str | list[str]:
    """peft target_modules for `spec` ('all-linear' or comma-separated module names) restricted to `scope`."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not scope:
        return "all-linear" if names == ["all-linear"] else names
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(scope + ".")]
    if names == ["all-linear"]:
        return linear
    return [n for n in linear if n.rsplit(".", 1)[-1] in names]


# ---------------------------------------------------------------- the eye: vision tower and projector


def _named(model: torch.nn.Module, names: tuple[str, ...]) -> list[torch.nn.Module]:
    """Modules whose own attribute name is one of `names`, outermost only."""
    found: list[tuple[str, torch.nn.Module]] = []
    for qualified, module in model.named_modules():
        if qualified.rsplit(".", 1)[-1] in names and not any(qualified.startswith(q + ".") for q, _ in found):
            found.append((qualified, module))
    return [m for _, m in found]


def vision_parameters(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(vision-tower parameters, projector parameters) of a vision-language model; both empty for a text model."""
    projector = {id(p): p for m in _named(model, PROJECTORS) for p in m.parameters()}
    tower = [p for m in _named(model, VISION_TOWERS) for p in m.parameters() if id(p) not in projector]
    return tower, list(projector.values())
