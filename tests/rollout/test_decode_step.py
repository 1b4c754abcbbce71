"""The fused decode step: bitwise the model's own forward where it applies, the model's forward everywhere else."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from gpgrl.rollout import decode_step as ds
from gpgrl.rollout.kv_cache import expand_cache
from gpgrl.rollout.precision import output_cache

SMALL = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, max_position_embeddings=64)


def build(config_cls, model_cls, **overrides):
    torch.manual_seed(0)
    config = config_cls(**{**SMALL, **overrides})
    config._attn_implementation = "sdpa"
    model = model_cls(config).eval()
    with torch.no_grad():  # non-zero biases and norm weights, so every term of the step is exercised
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


CASES = {
    "qwen2-gqa": lambda: build(Qwen2Config, Qwen2ForCausalLM, num_attention_heads=4, num_key_value_heads=2),
    "llama-mha-biases": lambda: build(LlamaConfig, LlamaForCausalLM, num_attention_heads=4, num_key_value_heads=4,
                                      attention_bias=True, mlp_bias=True),
    "llama-gqa-head-dim": lambda: build(LlamaConfig, LlamaForCausalLM, num_attention_heads=6,
                                        num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
}


def prefilled(model, ids: torch.Tensor, mask: torch.Tensor, reserve: int):
    """The left-padded prompts' KV cache with room for `reserve` tokens, as the sampler holds it."""
    pos = (mask.cumsum(1) - 1).clamp(min=0)  # [P, Lp]
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    cache = output_cache(out)
    expand_cache(cache, 1, reserve)
    return cache, pos[:, -1:]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_fused_step_gives_the_models_logits_bit_for_bit(case):
    model = CASES[case]()
    assert ds.fused_step_applies(model)
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5], [0, 9, 8, 7, 6]])  # [3, 5], left-padded
    attn = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    steps = 4
    full = torch.cat([attn, attn.new_ones(3, steps)], dim=1).bool()[:, None, None, :]  # [3, 1, 1, 5 + steps]
    with torch.inference_mode():
        (hf_cache, pos), (fused_cache, _) = prefilled(model, ids, attn, steps), prefilled(model, ids, attn, steps)
        hf, fused = ds.hf_step(model), ds.fused_step(model)
        tokens = torch.tensor([11, 12, 13])
        for t in range(steps):
            pos = pos + 1
            hf_cache, hf_logits = hf(tokens, full[..., : 6 + t], pos, hf_cache)
            fused_cache, fused_logits = fused(tokens, full[..., : 6 + t], pos, fused_cache)
            assert torch.equal(hf_logits, fused_logits), f"step {t}: max diff {(hf_logits - fused_logits).abs().max()}"
            for a, b in zip(hf_cache.layers, fused_cache.layers, strict=True):
                assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
            tokens = hf_logits.argmax(dim=-1)


def test_the_sampler_draws_the_same_tokens_with_and_without_the_fused_step(monkeypatch, tmp_path):
    from gpgrl.config import ModelConfig
    from gpgrl.models import load_policy
    from gpgrl.rollout import SamplingParams, TextEncoder, generate

    model, tok = load_policy(ModelConfig(name="tiny-random", cache_dir=str(tmp_path)), 0)
    assert ds.fused_step_applies(model)
    encoder = TextEncoder(tok, "", "{question}")
    prompts = [encoder.encode_text(p) for p in ("What is 3 plus 4?", "The sum of 12 and", "Solve")]
    params = SamplingParams(max_new_tokens=12, temperature=1.0, shared_prefill=True)

    def sample(fused: bool) -> list[list[int]]:
        monkeypatch.setattr(ds, "FUSED", fused)
        torch.manual_seed(3)
        return [s.completion_ids.tolist() for group in generate(model, encoder, prompts, 4, params) for s in group]

    assert sample(True) == sample(False)


def test_the_models_forward_runs_wherever_the_fused_step_could_differ():
    model = CASES["qwen2-gqa"]()
    assert isinstance(ds.decode_step(model, prebuilt_mask=False)(torch.tensor([1]), torch.ones(1, 1), torch.zeros(
        1, 1, dtype=torch.long), None)[1], torch.Tensor)  # the 2-D mask path is the model's forward
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not ds.fused_step_applies(model)  # sampling under autocast (its fp32 head is a patched forward)
    handle = model.model.layers[1].mlp.register_forward_hook(lambda *a: None)  # ZeRO-3, accelerate offloading
    assert not ds.fused_step_applies(model)
    handle.remove()
    model.model.norm.forward = model.model.norm.forward  # an instance-patched forward
    assert not ds.fused_step_applies(model)
    del model.model.norm.forward
    assert ds.fused_step_applies(model)
    model.config.attention_dropout = 0.1
    assert ds.fused_step_applies(model)  # in eval mode, as the sampler decodes, dropout does nothing
    model.train()
    assert not ds.fused_step_applies(model)
    model.config.attention_dropout = 0.0
    assert ds.fused_step_applies(model)
    model.eval()
    model.config._attn_implementation = "eager"
    assert not ds.fused_step_applies(model)
    model.config._attn_implementation = "sdpa"

    class Sub(Qwen2ForCausalLM):  # a subclass may change the forward
        pass

    assert not ds.fused_step_applies(Sub(model.config))
    window = build(Qwen2Config, Qwen2ForCausalLM, use_sliding_window=True, sliding_window=4, max_window_layers=0)
    assert not ds.fused_step_applies(window)


def test_lora_and_wrapped_models():
    peft = pytest.importorskip("peft")
    model = CASES["llama-mha-biases"]()

    class Wrapper(torch.nn.Module):  # DistributedDataParallel's layout: the model under .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert ds.fused_step_applies(Wrapper(model))
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert not ds.fused_step_applies(lora)
    assert not ds.fused_step_applies(lora.get_base_model())  # its projections are LoRA layers now
