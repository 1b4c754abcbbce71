"""The built-in vision-language models, all built offline: tiny random VLMs for tests, and SmolLM2 with an eye.

No pretrained VLM or vision encoder ships in any package this project can install (../shared/docs/MULTIMODAL.md),
so the built-ins are built here:

* `tiny-random-qwen2-vl`, `tiny-random-qwen2.5-vl`, `tiny-random-idefics3`: NOT real models. Random weights
  (2-layer language model, hidden 64; 2-layer vision tower) with the tiny byte-level BPE tokenizer of
  `tiny-random` plus the family's vision tokens, a processor built in-process, for tests of each family's inputs;
* `smollm2-135m-vision`: the real SmolLM2-135M-Instruct (the `smollm2-135m-instruct` built-in) as the language
  model of a Qwen2-VL whose small vision tower and projector start at random: a real language model with an
  untrained eye. Its language model's weights are loaded unchanged (Qwen2's q/k/v biases are zero, M-RoPE's three
  sections see the same positions on text), so on text-only prompts it gives exactly SmolLM2's logits over
  SmolLM2's vocabulary; the four added vision tokens get the mean embedding and are never sampled.

Each builder writes a `from_pretrained`-loadable directory (model, processor, chat template) into the cache of
`gpgrl.models.builtins`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from gpgrl.models.processors import Qwen2_5_VLProcessorNoVideo, Qwen2VLProcessorNoVideo

QWEN_VISION_TOKENS = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>")
IDEFICS3_TOKENS = ("<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>")

_CONTENT = (
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ IMAGE }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
)


def chat_template(image: str, default_system: str = "") -> str:
    """ChatML with list contents: `{"type": "image"}` blocks become `image`, text blocks their text. A non-empty
    `default_system` is added when the conversation has no system message (SmolLM2's own template does that)."""
    system = ("{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n" + default_system
              + "<|im_end|>\n' }}{% endif %}") if default_system else ""
    return ("{% for message in messages %}" + system + "{{ '<|im_start|>' + message['role'] + '\n' }}"
            + _CONTENT.replace("{{ IMAGE }}", "{{ '" + image + "' }}") + "{{ '<|im_end|>\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _seeded(build, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _tiny_tokenizer(extra_tokens: tuple[str, ...]):
    from gpgrl.models.builtins import _tiny_tokenizer as text_tokenizer

    tokenizer = text_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", *extra_tokens]})
    return tokenizer


def _qwen_ids(tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids(list(QWEN_VISION_TOKENS))
    return dict(zip(("vision_start_token_id", "image_token_id", "vision_end_token_id", "video_token_id"), ids,
                    strict=True))


def _special_ids(tokenizer) -> dict[str, int | None]:
    """The text config's special ids (Qwen2-VL's defaults name Qwen's 151k vocabulary)."""
    return {"bos_token_id": None, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}


def _generation_ids(model: PreTrainedModel, tokenizer) -> None:
    config = model.generation_config
    config.pad_token_id, config.eos_token_id, config.bos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id, None


# ---------------------------------------------------------------- tiny random VLMs: NOT real models (tests)

_TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True)
_TINY_PIXELS = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
"""4 to 16 visual tokens per image (one per 28 x 28 pixels after the 2 x 2 merge)."""


def _tiny_qwen2_vl(tokenizer):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    config = Qwen2VLConfig(
        text_config={**_TINY_TEXT, **_special_ids(tokenizer), "vocab_size": len(tokenizer), "rope_parameters": {
            "rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}},
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2),
        tie_word_embeddings=True, **_qwen_ids(tokenizer))
    return Qwen2VLForConditionalGeneration(config)


def _tiny_qwen2_5_vl(tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config={**_TINY_TEXT, **_special_ids(tokenizer), "vocab_size": len(tokenizer), "rope_parameters": {
            "rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}},
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           window_size=56, fullatt_block_indexes=[1]),
        tie_word_embeddings=True, **_qwen_ids(tokenizer))
    return Qwen2_5_VLForConditionalGeneration(config)


def _build_tiny_qwen(out: Path, family: str) -> dict[str, Any]:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = _tiny_tokenizer(QWEN_VISION_TOKENS)
    template = chat_template("<|vision_start|><|image_pad|><|vision_end|>")
    tokenizer.chat_template = template
    model = _seeded(lambda: (_tiny_qwen2_vl if family == "qwen2_vl" else _tiny_qwen2_5_vl)(tokenizer))
    _generation_ids(model, tokenizer)
    cls = Qwen2VLProcessorNoVideo if family == "qwen2_vl" else Qwen2_5_VLProcessorNoVideo
    processor = cls(image_processor=Qwen2VLImageProcessorPil(**_TINY_PIXELS), tokenizer=tokenizer,
                    chat_template=template)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return {"source": f"gpgrl.models.vision tiny {family} (random weights, NOT a real model)",
            "params": sum(p.numel() for p in model.parameters())}


def _build_tiny_idefics3(out: Path) -> dict[str, Any]:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tokenizer = _tiny_tokenizer(IDEFICS3_TOKENS)
    template = chat_template("<image>")
    tokenizer.chat_template = template
    config = Idefics3Config(
        text_config={"model_type": "llama", **_TINY_TEXT, **_special_ids(tokenizer), "vocab_size": len(tokenizer)},
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        scale_factor=2, image_token_id=tokenizer.convert_tokens_to_ids("<image>"), tie_word_embeddings=True)
    model = _seeded(lambda: Idefics3ForConditionalGeneration(config))
    _generation_ids(model, tokenizer)
    image_processor = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 64},
                                                max_image_size={"longest_edge": 64})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=template)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return {"source": "gpgrl.models.vision tiny idefics3 (random weights, NOT a real model)",
            "params": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------- SmolLM2-135M-Instruct with an untrained eye

SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
"""The system message SmolLM2's own chat template adds when a conversation has none."""
SMOLLM2_VISION_PIXELS = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
"""4 to 16 visual tokens per image: a 56 x 56 image gives 4, 112 x 112 gives 16."""


def _smollm2_vision_config(text: Any, tokenizer) -> Any:
    from transformers import Qwen2VLConfig

    text_config = {
        **_special_ids(tokenizer), "vocab_size": len(tokenizer), "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers, "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads, "hidden_act": text.hidden_act,
        "max_position_embeddings": text.max_position_embeddings, "rms_norm_eps": text.rms_norm_eps,
        "tie_word_embeddings": True, "rope_parameters": {
            "rope_type": "default", "rope_theta": text.rope_parameters["rope_theta"],
            "mrope_section": [8, 12, 12]}}  # head_dim 64: 32 frequencies over (time, height, width)
    vision = dict(depth=2, embed_dim=128, hidden_size=text.hidden_size, num_heads=4, mlp_ratio=2)
    return Qwen2VLConfig(text_config=text_config, vision_config=vision, tie_word_embeddings=True,
                         **_qwen_ids(tokenizer))


def _copy_language_model(vlm: PreTrainedModel, llama: PreTrainedModel, vocab: int) -> None:
    """SmolLM2's weights into the Qwen2 language model: same names, zero q/k/v biases, mean rows for new tokens."""
    state = dict(llama.model.state_dict())
    embed = state.pop("embed_tokens.weight")  # [V, H]
    target = vlm.model.language_model
    for name, param in target.state_dict().items():
        if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
            state[name] = torch.zeros_like(param)
    state["embed_tokens.weight"] = torch.cat([embed, embed.mean(0, keepdim=True).expand(vocab - embed.shape[0], -1)])
    target.load_state_dict(state, strict=True)
    vlm.tie_weights()


def _match_embedding_scale(vlm: PreTrainedModel) -> float:
    """Scale the projector's last layer so that image tokens start with the RMS of the text token embeddings."""
    merger_out = vlm.model.visual.merger.mlp[-1]
    text_rms = float(vlm.model.language_model.embed_tokens.weight.detach().pow(2).mean().sqrt())
    with torch.no_grad():
        patches = torch.randn(64, vlm.config.vision_config.in_channels * 2 * 14 * 14)  # [patches, 3*T*14*14]
        grid = torch.tensor([[1, 8, 8]])
        image_rms = float(vlm.model.visual(patches, grid_thw=grid).pooler_output.pow(2).mean().sqrt())
        factor = text_rms / image_rms
        merger_out.weight.mul_(factor)
        merger_out.bias.mul_(factor)
    return factor


def _build_smollm2_vision(out: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from gpgrl.models.builtins import BUILTIN_MODELS, ensure_builtin

    text_dir = ensure_builtin("smollm2-135m-instruct", out.parent)
    tokenizer = AutoTokenizer.from_pretrained(text_dir, local_files_only=True)
    text_vocab = len(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_VISION_TOKENS)})
    template = chat_template("<|vision_start|><|image_pad|><|vision_end|>", SMOLLM2_SYSTEM)
    tokenizer.chat_template = template
    llama = AutoModelForCausalLM.from_pretrained(text_dir, dtype=torch.float32, local_files_only=True)
    config = _smollm2_vision_config(llama.config, tokenizer)
    vlm = _seeded(lambda: Qwen2VLForConditionalGeneration(config))
    _copy_language_model(vlm, llama, len(tokenizer))
    scale = _seeded(lambda: _match_embedding_scale(vlm), seed=1)
    _generation_ids(vlm, tokenizer)
    vlm.generation_config.eos_token_id = llama.generation_config.eos_token_id
    processor = Qwen2VLProcessorNoVideo(image_processor=Qwen2VLImageProcessorPil(**SMOLLM2_VISION_PIXELS),
                                        tokenizer=tokenizer, chat_template=template)
    vlm.save_pretrained(out)
    processor.save_pretrained(out)
    vision = sum(p.numel() for p in vlm.model.visual.parameters())
    return {"source": f"{BUILTIN_MODELS['smollm2-135m-instruct'].cache_name} + random Qwen2-VL vision tower",
            "text_vocab": text_vocab, "vision_params": vision, "projector_scale": round(math.log10(scale), 3)}
