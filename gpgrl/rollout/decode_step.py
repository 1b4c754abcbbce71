"""One decode step of the shared-prefill sampler: the model's forward over one new token per row.

For most models this is the model's own forward (`hf_step`). For the Llama and Qwen2 families, which every
built-in text model and most small open models belong to, `fused_step` runs the same computation without
transformers' per-forward machinery: the decoder layers' arithmetic written out once (the norms, rotary embedding,
activation and attention function are the model's own code, called directly; the projections are `F.linear` on
the model's own weights), so a step is ~30 module calls and kwargs-dict passes fewer per layer. On a 2-layer
model that machinery is ~25 % of a decode step (`benchmarks/rollout.py`, docs/performance.md); on SmolLM2 it is
small against the matmuls but still paid 24 times a round.

The fused step is exact: it performs the same operations in the same order on the same tensors, so its logits are
bitwise those of `model(...)` (tested against the model's forward for Qwen2 and Llama configurations, with and
without grouped-query attention and biases). It applies only where that can be guaranteed
(`fused_step_applies`): the exact transformers classes (not a subclass, not FSDP2's wrapped classes), every
projection a plain `nn.Linear` (no LoRA), no module hooks (DeepSpeed ZeRO-3, accelerate offloading) and no
instance-patched forwards, SDPA over full-attention layers with the prebuilt 4-D mask (`prebuilt_mask_applies`),
no autocast (whose fp32-head patch `gpgrl.rollout.precision` installs), and no attention dropout in training mode
(the sampler decodes in eval mode). Anything else runs `hf_step`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpgrl.rollout.precision import cache_kwargs, output_cache

DecodeStep = Callable[[Tensor, Tensor, Tensor, Any], tuple[Any, Tensor]]
"""(next tokens [A], attention mask [A, 1, 1, L] or [A, L], positions [A, 1], cache) -> (cache, fp32 logits [A, V])."""

FUSED = True
"""Whether `decode_step` may choose the fused step (`benchmarks/rollout.py` turns it off to measure it)."""


def hf_step(model) -> DecodeStep:
    """The model's own forward, as `generate` calls it for one new token per row."""

    def step(ids: Tensor, mask: Tensor, pos: Tensor, cache) -> tuple[Any, Tensor]:
        out = model(input_ids=ids[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                    **cache_kwargs(model, cache))
        return output_cache(out), out.logits[:, -1].float()  # [A, V]

    return step


def decode_step(model, prebuilt_mask: bool) -> DecodeStep:
    """The fused step where it is exact (`fused_step_applies`), else the model's forward."""
    if FUSED and prebuilt_mask and fused_step_applies(model):
        return fused_step(getattr(model, "module", model))
    return hf_step(model)


def _families() -> dict[type, tuple[type, type, type, type, type]]:
    """CausalLM class -> (decoder layer, attention, MLP, RMSNorm, rotary embedding) classes of the fused families."""
    from transformers.models.llama import modeling_llama as llama
    from transformers.models.qwen2 import modeling_qwen2 as qwen2

    return {llama.LlamaForCausalLM: (llama.LlamaDecoderLayer, llama.LlamaAttention, llama.LlamaMLP,
                                     llama.LlamaRMSNorm, llama.LlamaRotaryEmbedding),
            qwen2.Qwen2ForCausalLM: (qwen2.Qwen2DecoderLayer, qwen2.Qwen2Attention, qwen2.Qwen2MLP,
                                     qwen2.Qwen2RMSNorm, qwen2.Qwen2RotaryEmbedding)}


def _plain(module: nn.Module) -> bool:
    """No hooks and no forward patched onto the instance: calling its pieces directly runs what its call would."""
    return not (module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__)


def _global_hooks() -> bool:
    """Whether torch has module hooks registered for every module (`register_module_forward_hook`)."""
    import torch.nn.modules.module as module_lib

    return bool(module_lib._global_forward_hooks or module_lib._global_forward_pre_hooks)


def fused_step_applies(model) -> bool:
    """Whether `fused_step` computes exactly what the model's forward computes (module docstring)."""
    base = getattr(model, "module", model)  # under DDP
    classes = _families().get(type(base))
    if classes is None or torch.is_autocast_enabled(base.lm_head.weight.device.type) or _global_hooks():
        return False
    if base.training and getattr(base.config, "attention_dropout", 0.0):  # the forward would drop attention out
        return False
    layer_cls, attn_cls, mlp_cls, norm_cls, rope_cls = classes
    inner = base.model
    expected = [(inner.norm, norm_cls), (inner.rotary_emb, rope_cls), (base.lm_head, nn.Linear),
                (inner.embed_tokens, nn.Embedding)]
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        expected += [(layer, layer_cls), (attn, attn_cls), (mlp, mlp_cls), (layer.input_layernorm, norm_cls),
                     (layer.post_attention_layernorm, norm_cls)]
        expected += [(lin, nn.Linear) for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj,
                                                  mlp.gate_proj, mlp.up_proj, mlp.down_proj)]
        if getattr(attn, "sliding_window", None) is not None:
            return False
    return (all(type(module) is cls for module, cls in expected) and all(_plain(m) for m in base.modules())
            and base.config._attn_implementation == "sdpa")


def fused_step(base) -> DecodeStep:
    """The decode step of a Llama- or Qwen2-family model written out (`fused_step_applies` must hold)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    inner = base.model
    rotary = sys.modules[type(inner.layers[0].self_attn).__module__].apply_rotary_pos_emb

    def attention(attn, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, cache) -> Tensor:
        rows, dim = x.shape[0], attn.head_dim
        q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias).view(rows, 1, -1, dim).transpose(1, 2)  # [A,H,1,D]
        k = F.linear(x, attn.k_proj.weight, attn.k_proj.bias).view(rows, 1, -1, dim).transpose(1, 2)  # [A,Hk,1,D]
        v = F.linear(x, attn.v_proj.weight, attn.v_proj.bias).view(rows, 1, -1, dim).transpose(1, 2)
        q, k = rotary(q, k, cos, sin)
        k, v = cache.update(k, v, attn.layer_idx)  # [A, Hk, L, D]
        out, _ = sdpa_attention_forward(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling,
                                        sliding_window=None)  # [A, 1, H, D]
        return F.linear(out.reshape(rows, 1, -1).contiguous(), attn.o_proj.weight, attn.o_proj.bias)  # [A,1,E]

    def mlp(block, x: Tensor) -> Tensor:
        gate = block.act_fn.forward(F.linear(x, block.gate_proj.weight, block.gate_proj.bias))
        up = F.linear(x, block.up_proj.weight, block.up_proj.bias)
        return F.linear(gate * up, block.down_proj.weight, block.down_proj.bias)  # [A, 1, E]

    def step(ids: Tensor, mask: Tensor, pos: Tensor, cache) -> tuple[Any, Tensor]:
        h = inner.embed_tokens.forward(ids[:, None])  # [A, 1, E]
        cos, sin = inner.rotary_emb.forward(h, pos)  # [A, 1, D] each
        for layer in inner.layers[: base.config.num_hidden_layers]:
            h = h + attention(layer.self_attn, layer.input_layernorm.forward(h), cos, sin, mask, cache)
            h = h + mlp(layer.mlp, layer.post_attention_layernorm.forward(h))
        h = inner.norm.forward(h)
        logits = F.linear(h, base.lm_head.weight, base.lm_head.bias)  # [A, 1, V]
        return cache, logits[:, -1].float()

    return step
