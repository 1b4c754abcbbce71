"""Where a prompt becomes model inputs, for text and vision-language models alike.

Rollout, the training forward, evaluation, compare and resume all go through one `PromptEncoder`, chosen once
per run by `make_encoder` from what the model loaded with (a tokenizer: `TextEncoder`; a processor:
`VisionEncoder`):

* `encode(example)` renders the example's chat prompt and encodes it once: `PromptInputs`, the prompt's token ids
  plus, for a vision-language model, its vision tensors (`Vision`), which its G completions and the training
  forward then share;
* `model_inputs(prompts)` pads a batch for `generate`: prompts left-padded to the longest, the batch's vision
  tensors assembled by their layout (below; `vision_batch` does the same for training micro-batches, per-token
  tensors zero over padding and completion);
* `positions(model, inputs)`: where a prompt batch's completions start (and the prompt's own positions), for the
  KV-cached sampler, which prefills each prompt once for its G completions;
* `suppressed_ids`: tokens never sampled (a VLM's image and video placeholders, which only the processor may
  place) and masked out of the training log-softmax as well, so training log-probs are those of the sampling
  distribution.

The processor's outputs for one prompt come in three layouts, fixed per family (`LAYOUTS`; unknown families:
a tensor shaped like the prompt ids is per-token, anything else is rows):

* `token`: one value per prompt token, [Lp] (Qwen2-VL's `mm_token_type_ids`);
* `rows`: concatenated over the batch along dim 0 (Qwen2-VL's `pixel_values` [patches, C·T·P·P] and
  `image_grid_thw` [images, 3]: sample b's images are its own rows, in batch order);
* `stacked`: [images, ...] per prompt, stacked to [B, max images, ...] with zero padding (Idefics3's
  `pixel_values` [B, N, 3, H, W] and `pixel_attention_mask`; an all-zero image is padding to Idefics3).

M-RoPE families (Qwen2-VL, Qwen2.5-VL) compute their 3-D positions from `mm_token_type_ids` themselves
(`Vision.model_positions`); their completions continue one past the largest prompt position (`rope_start`), which
is where `generate` puts them. Every other batch gets 1-D positions from the attention mask, as `generate` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gpgrl.data.prompts import render_prompt

LAYOUTS: dict[str, dict[str, str]] = {
    "qwen2_vl": {"mm_token_type_ids": "token", "pixel_values": "rows", "image_grid_thw": "rows"},
    "qwen2_5_vl": {"mm_token_type_ids": "token", "pixel_values": "rows", "image_grid_thw": "rows"},
    "idefics3": {"pixel_values": "stacked", "pixel_attention_mask": "stacked"},
    "smolvlm": {"pixel_values": "stacked", "pixel_attention_mask": "stacked"},
    "llava": {"pixel_values": "rows", "image_sizes": "rows"},
}
"""Per model type: the layout of each processor output besides input_ids and attention_mask."""
MODEL_POSITIONS = ("qwen2_vl", "qwen2_5_vl")
"""Model types that compute their own (3-D, M-RoPE) position ids from the vision inputs."""
IMAGE_TOKEN_ATTRIBUTES = ("image_token_id", "video_token_id", "image_token_index", "vision_start_token_id",
                          "vision_end_token_id")
"""Model-config attributes naming placeholder tokens that only the processor may place."""
PROCESSOR_TOKENS = ("image_token", "video_token", "fake_image_token", "global_image_tag")
"""Processor attributes naming such tokens (Idefics3: <fake_token_around_image>, <global-img>)."""


@dataclass(frozen=True)
class Vision:
    """The vision part of one prompt's model inputs, prepared once by the processor."""

    token: Mapping[str, Tensor] = field(default_factory=dict)  # name -> [Lp]
    rows: Mapping[str, Tensor] = field(default_factory=dict)  # name -> [n, ...], concatenated over a batch
    stacked: Mapping[str, Tensor] = field(default_factory=dict)  # name -> [images, ...], stacked over a batch
    model_positions: bool = False  # the model computes its own position ids from these inputs


@dataclass(frozen=True)
class PromptInputs:
    """One encoded prompt: token ids [Lp] and, for a vision-language model, its vision inputs."""

    ids: Tensor  # [Lp]
    vision: Vision | None = None


# ---------------------------------------------------------------- batching


def _token_tensor(name: str, rows: Sequence[PromptInputs], lp: int, total: int) -> Tensor:
    """Per-token values of the prompts placed like their left-padded ids, zero elsewhere: [B, total]."""
    like = next(p.vision.token[name] for p in rows if p.vision is not None and name in p.vision.token)
    out = torch.zeros(len(rows), total, dtype=like.dtype)  # [B, total]
    for b, p in enumerate(rows):
        if p.vision is not None and name in p.vision.token:
            n = p.ids.numel()
            out[b, lp - n:lp] = p.vision.token[name]
    return out


def _stacked_tensor(name: str, rows: Sequence[PromptInputs]) -> Tensor:
    """Per-prompt [images, ...] stacked to [B, max images, ...], zero-padded (zero images are padding)."""
    parts = [p.vision.stacked.get(name) if p.vision is not None else None for p in rows]
    like = next(t for t in parts if t is not None)
    most = max(t.shape[0] for t in parts if t is not None)
    out = torch.zeros(len(rows), most, *like.shape[1:], dtype=like.dtype)  # [B, N, ...]
    for b, t in enumerate(parts):
        if t is not None:
            out[b, : t.shape[0]] = t
    return out


def vision_batch(rows: Sequence[PromptInputs], lp: int, total: int) -> dict[str, Tensor]:
    """The vision inputs of a batch whose prompts are left-padded to `lp` within sequences of `total` tokens."""
    visions = [p.vision for p in rows if p.vision is not None]
    if not visions:
        return {}
    out: dict[str, Tensor] = {}
    for name in dict.fromkeys(k for v in visions for k in v.token):
        out[name] = _token_tensor(name, rows, lp, total)
    for name in dict.fromkeys(k for v in visions for k in v.rows):
        out[name] = torch.cat([v.rows[name] for v in visions if name in v.rows])
    for name in dict.fromkeys(k for v in visions for k in v.stacked):
        out[name] = _stacked_tensor(name, rows)
    return out


def pad_prompts(rows: Sequence[PromptInputs], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-padded ids and attention mask of a batch of prompts: [B, Lp] each."""
    lp = max(p.ids.numel() for p in rows)
    ids = torch.full((len(rows), lp), pad_id, dtype=torch.long)  # [B, Lp]
    mask = torch.zeros_like(ids)  # [B, Lp]
    for b, p in enumerate(rows):
        n = p.ids.numel()
        ids[b, lp - n:] = p.ids
        mask[b, lp - n:] = 1
    return ids, mask


def model_positions(rows: Sequence[PromptInputs]) -> bool:
    """Whether the model computes this batch's position ids itself (M-RoPE families with vision inputs)."""
    return any(p.vision is not None and p.vision.model_positions for p in rows)


def text_positions(attention_mask: Tensor) -> Tensor:
    """1-D positions of a left-padded batch, as `generate` computes them: [B, L]."""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def rope_start(model: Any, inputs: Mapping[str, Tensor]) -> Tensor:
    """Where an M-RoPE prompt batch's completions start, [B, 1]: one past the largest of its 3-D positions, which
    the model's own `get_rope_index` computes (as `generate` and the plain training forward do)."""
    owner = next(m for m in model.modules() if hasattr(m, "get_rope_index") and hasattr(m, "rope_deltas"))
    positions, _ = owner.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"],
                                        image_grid_thw=inputs.get("image_grid_thw"),
                                        attention_mask=inputs["attention_mask"])  # [3, B, L]
    return positions.amax(dim=(0, 2))[:, None] + 1


# ---------------------------------------------------------------- encoders


class TextEncoder:
    """Prompts of a text language model: the chat template applied, then the tokenizer."""

    accepts_images = False

    def __init__(self, tokenizer: Any, system_prompt: str, template: str, response_prefix: str = "") -> None:
        self.tokenizer, self.system_prompt, self.template = tokenizer, system_prompt, template
        self.response_prefix = response_prefix
        self.suppressed_ids: tuple[int, ...] = ()

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def render(self, example: Any) -> str:
        return render_prompt(self.tokenizer, example, self.system_prompt, self.template,
                             response_prefix=self.response_prefix)

    def encode_text(self, text: str) -> PromptInputs:
        return PromptInputs(torch.tensor(self.tokenizer(text, add_special_tokens=False).input_ids, dtype=torch.long))

    def encode(self, example: Any) -> PromptInputs:
        if example.images:
            raise ValueError(f"item {example.index} has {len(example.images)} images but the model is a text model: "
                             "use a vision-language model.name, or data without an image column")
        return self.encode_text(self.render(example))

    def model_inputs(self, rows: Sequence[PromptInputs]) -> dict[str, Tensor]:
        """generate's inputs for a batch of prompts: left-padded ids and attention mask."""
        ids, mask = pad_prompts(rows, self.pad_id)
        return {"input_ids": ids, "attention_mask": mask}

    def positions(self, model: Any, inputs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """(first decode position [B, 1], prefill position ids [B, Lp]) of a prompt batch from `model_inputs`."""
        positions = text_positions(inputs["attention_mask"])  # [B, Lp]
        return positions[:, -1:] + 1, positions


def _layouts(model_type: str, encoded: Mapping[str, Tensor]) -> dict[str, str]:
    known = LAYOUTS.get(model_type)
    if known is not None:
        return {k: known.get(k, "rows") for k in encoded if k not in ("input_ids", "attention_mask")}
    lp = encoded["input_ids"].shape[-1]
    return {k: "token" if tuple(v.shape) == (1, lp) else "rows" for k, v in encoded.items()
            if k not in ("input_ids", "attention_mask")}


def suppressed_token_ids(model_config: Any, processor: Any) -> tuple[int, ...]:
    """The vision placeholder tokens of a model and its processor (never sampled)."""
    ids = {getattr(model_config, a, None) for a in IMAGE_TOKEN_ATTRIBUTES}
    vocab = processor.tokenizer.get_vocab()
    ids |= {vocab.get(str(getattr(processor, a, ""))) for a in PROCESSOR_TOKENS}
    return tuple(sorted(int(i) for i in ids if isinstance(i, int) and i >= 0))


class VisionEncoder:
    """Prompts of a vision-language model: chat messages with image blocks, the processor applied once per prompt."""

    accepts_images = True

    def __init__(self, processor: Any, model_config: Any, system_prompt: str, template: str,
                 response_prefix: str = "") -> None:
        self.processor, self.system_prompt, self.template = processor, system_prompt, template
        self.response_prefix = response_prefix
        self.tokenizer = processor.tokenizer
        self.model_type = model_config.model_type
        self.suppressed_ids = suppressed_token_ids(model_config, processor)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def render(self, example: Any) -> str:
        return render_prompt(self.processor, example, self.system_prompt, self.template, with_images=True,
                             response_prefix=self.response_prefix)

    def encode(self, example: Any) -> PromptInputs:
        images = [image.load() for image in example.images]
        encoded = self.processor(text=[self.render(example)], images=[images] if images else None,
                                 return_tensors="pt")
        if not images:
            return PromptInputs(encoded["input_ids"][0].long())
        vision: dict[str, dict[str, Tensor]] = {"token": {}, "rows": {}, "stacked": {}}
        for name, layout in _layouts(self.model_type, encoded).items():
            value = encoded[name]
            vision[layout][name] = value[0] if layout in ("token", "stacked") else value
        return PromptInputs(encoded["input_ids"][0].long(),
                            Vision(vision["token"], vision["rows"], vision["stacked"],
                                   self.model_type in MODEL_POSITIONS))

    def model_inputs(self, rows: Sequence[PromptInputs]) -> dict[str, Tensor]:
        """generate's inputs for a batch of prompts: left-padded ids, attention mask and the vision inputs."""
        ids, mask = pad_prompts(rows, self.pad_id)
        return {"input_ids": ids, "attention_mask": mask, **vision_batch(rows, ids.shape[1], ids.shape[1])}

    def positions(self, model: Any, inputs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """(first decode position [B, 1], prefill position ids or None when the model computes them) of a prompt
        batch from `model_inputs`. M-RoPE: decoding continues after the largest 3-D position, which is where
        `generate` (text position + rope delta) and the training forward put the completion."""
        if self.model_type in MODEL_POSITIONS and "mm_token_type_ids" in inputs:
            return rope_start(model, inputs), None
        positions = text_positions(inputs["attention_mask"])  # [B, Lp]
        return positions[:, -1:] + 1, positions


PromptEncoder = TextEncoder | VisionEncoder


def make_encoder(processing: Any, model: Any, system_prompt: str, template: str,
                 response_prefix: str = "") -> PromptEncoder:
    """The encoder of a run: a processor (it has an image processor) means a vision-language model."""
    if getattr(processing, "image_processor", None) is not None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else getattr(model, "module", model)
        return VisionEncoder(processing, base.config, system_prompt, template, response_prefix)
    return TextEncoder(processing, system_prompt, template, response_prefix)
