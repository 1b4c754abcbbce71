"""Rollout I/O: sampling G completions per prompt and computing their token log-probs.

Owns the `Sample` record (one prompt + one completion, unpadded), sampling in chunks, the completion
mask rule (up to and including the first EOS; rows without EOS are truncated and flagged), collation of
samples into padded micro-batches (prompts left-padded, completions right-padded, padding trimmed to the
micro-batch), and log-probs of completion tokens at the sampling temperature without materialising a
full log-softmax over the vocabulary.

Three optional fast paths (off by default; see docs/performance.md for what each saves):

* shared prefill (`SamplingParams.shared_prefill`): a KV-cached sampling loop that encodes each prompt once
  and copies its cache to the prompt's `n` completions, instead of HF `generate` re-encoding the prompt `n`
  times (`num_return_sequences`). It draws the same tokens as `generate` for the same seed (same logits up to
  float rounding, the same `torch.multinomial` calls in the same order); only temperature, top-p and
  min_new_tokens are applied (not other processors a model's generation_config may add);
* shared prompt forward (`collate(..., share_prompts=True)`): the training forward runs each distinct prompt
  of a micro-batch once, with a KV cache, and its completions on top of that cache; the prompt's activations
  receive the summed gradient of all its completions, so the result equals the plain forward up to rounding;
* bf16 autocast (`autocast_bf16`): forwards under `torch.autocast(bfloat16)` with the LM head kept in fp32
  (parameters, gradients and optimizer state stay fp32).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import TopPLogitsWarper

from gpgrl.rollout.precision import precision


@dataclass(frozen=True)
class Sample:
    """One completion of one prompt; tensors are unpadded 1-D token ids on the CPU."""

    prompt_ids: Tensor  # [Lp]
    completion_ids: Tensor  # [Lc], up to and including the first EOS
    text: str
    truncated: bool  # no EOS within max_new_tokens

    @property
    def length(self) -> int:
        return int(self.completion_ids.numel())


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float  # 0 = greedy
    top_p: float = 1.0
    batch_size: int = 64  # sequences per generate call
    min_new_tokens: int = 0  # EOS is masked before this many new tokens (equal-length benchmarks)
    shared_prefill: bool = False  # encode each prompt once and copy its KV cache to its n completions
    autocast_bf16: bool = False  # sample under bf16 autocast (LM head in fp32)


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a completion: the generation config's EOS ids plus the tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, (list, tuple)) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("the model and tokenizer define no EOS token: completions could never end")
    return ids


def completion_lengths(ids: Tensor, eos_ids: set[int]) -> tuple[Tensor, Tensor]:
    """Length up to and including the first EOS per row, and whether the row has none (truncated)."""
    is_eos = torch.isin(ids, torch.tensor(sorted(eos_ids), device=ids.device))  # [B, L]
    has_eos = is_eos.any(dim=1)  # [B]
    first = is_eos.int().argmax(dim=1)  # [B]
    lengths = torch.where(has_eos, first + 1, torch.full_like(first, ids.shape[1]))  # [B]
    return lengths, ~has_eos


def _generate_chunk(model, tokenizer, prompts: Sequence[str], n: int, params: SamplingParams,
                    eos_ids: set[int]) -> list[Sample]:
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    sampling = params.temperature > 0
    kwargs = dict(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0) if sampling \
        else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    if params.min_new_tokens > 0:
        kwargs["min_new_tokens"] = params.min_new_tokens
    out = model.generate(input_ids=enc.input_ids.to(device), attention_mask=enc.attention_mask.to(device),
                         max_new_tokens=params.max_new_tokens, num_return_sequences=n,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos_ids), **kwargs)
    return _to_samples(tokenizer, enc, out[:, enc.input_ids.shape[1]:].cpu(), n, eos_ids)


def _to_samples(tokenizer, enc, completions: Tensor, n: int, eos_ids: set[int]) -> list[Sample]:
    """Cut each generated row [P*n, Lc] at its first EOS; rows are grouped by prompt (row // n)."""
    lengths, truncated = completion_lengths(completions, eos_ids)
    samples = []
    for row in range(completions.shape[0]):
        p = row // n
        prompt = enc.input_ids[p][enc.attention_mask[p].bool()]  # [Lp_p]
        ids = completions[row, : int(lengths[row])].clone()  # [Lc_row]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        samples.append(Sample(prompt, ids, text, bool(truncated[row])))
    return samples


def _next_tokens(logits: Tensor, step: int, params: SamplingParams, eos: Tensor) -> Tensor:
    """One sampling step on fp32 logits [N, V], processed as `generate` does: EOS mask, 1/T, top-p."""
    if step < params.min_new_tokens:
        logits[:, eos] = -float("inf")
    if params.temperature <= 0:
        return logits.argmax(dim=-1)  # [N]
    scores = logits / params.temperature  # [N, V]
    if params.top_p < 1.0:
        scores = TopPLogitsWarper(params.top_p)(None, scores)
    return torch.multinomial(F.softmax(scores, dim=-1), num_samples=1).squeeze(1)  # [N]


def _sample_chunk(model, tokenizer, prompts: Sequence[str], n: int, params: SamplingParams,
                  eos_ids: set[int]) -> list[Sample]:
    """Shared-prefill sampling: one prefill per prompt, its KV cache repeated n times, then cached decoding."""
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    attn = enc.attention_mask.to(device)  # [P, Lp]
    positions = (attn.cumsum(dim=1) - 1).clamp(min=0)  # [P, Lp]
    out = model(input_ids=enc.input_ids.to(device), attention_mask=attn, position_ids=positions, use_cache=True,
                logits_to_keep=1)
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)  # rows in generate's order: prompt p -> rows p*n .. p*n+n-1
    logits = out.logits[:, -1].float().repeat_interleave(n, dim=0)  # [N, V]
    rows, lp, steps = logits.shape[0], attn.shape[1], params.max_new_tokens
    mask = torch.cat([attn.repeat_interleave(n, dim=0), attn.new_ones(rows, steps)], dim=1)  # [N, Lp+steps]
    pos = positions[:, -1:].repeat_interleave(n, dim=0)  # [N, 1]
    eos = torch.tensor(sorted(eos_ids), device=device)
    tokens = torch.full((rows, steps), tokenizer.pad_token_id, dtype=torch.long, device=device)  # [N, steps]
    done = torch.zeros(rows, dtype=torch.bool, device=device)  # [N]
    for t in range(steps):
        nxt = torch.where(done, tokenizer.pad_token_id, _next_tokens(logits, t, params, eos))  # [N]
        tokens[:, t] = nxt
        done |= torch.isin(nxt, eos)
        if t + 1 == steps or bool(done.all()):
            tokens = tokens[:, : t + 1]
            break
        pos = pos + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask[:, : lp + t + 1], position_ids=pos,
                    past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1].float()  # [N, V]
    return _to_samples(tokenizer, enc, tokens.cpu(), n, eos_ids)


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], n: int, params: SamplingParams) -> list[list[Sample]]:
    """`n` completions for each prompt (a group), in prompt order. Uses torch's global RNG."""
    eos_ids = eos_token_ids(model, tokenizer)
    per_call = max(1, params.batch_size // n)
    chunk = _sample_chunk if params.shared_prefill else _generate_chunk
    was_training = model.training
    model.eval()
    try:
        flat: list[Sample] = []
        with precision(model, params.autocast_bf16):
            for start in range(0, len(prompts), per_call):
                flat += chunk(model, tokenizer, prompts[start:start + per_call], n, params, eos_ids)
    finally:
        model.train(was_training)
    return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]
