"""Rollout I/O: sampling G completions per prompt and computing their token log-probs.

Owns the `Sample` record (one prompt + one completion, unpadded), HF `generate` in chunks, the completion
mask rule (up to and including the first EOS; rows without EOS are truncated and flagged), collation of
samples into padded micro-batches (prompts left-padded, completions right-padded, padding trimmed to the
micro-batch), and log-probs of completion tokens at the sampling temperature without materialising a
full log-softmax over the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


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


@dataclass(frozen=True)
class MicroBatch:
    input_ids: Tensor  # [B, Lp + Lc]
    attention_mask: Tensor  # [B, Lp + Lc]
    position_ids: Tensor  # [B, Lp + Lc]
    completion_mask: Tensor  # [B, Lc] float
    completion_len: int  # Lc


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
    out = model.generate(input_ids=enc.input_ids.to(device), attention_mask=enc.attention_mask.to(device),
                         max_new_tokens=params.max_new_tokens, num_return_sequences=n,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos_ids), **kwargs)
    completions = out[:, enc.input_ids.shape[1]:].cpu()  # [P*n, Lc]
    lengths, truncated = completion_lengths(completions, eos_ids)
    samples = []
    for row in range(completions.shape[0]):
        p = row // n
        prompt = enc.input_ids[p][enc.attention_mask[p].bool()]  # [Lp_p]
        ids = completions[row, : int(lengths[row])].clone()  # [Lc_row]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        samples.append(Sample(prompt, ids, text, bool(truncated[row])))
    return samples


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], n: int, params: SamplingParams) -> list[list[Sample]]:
    """`n` completions for each prompt (a group), in prompt order. Uses torch's global RNG."""
    eos_ids = eos_token_ids(model, tokenizer)
    per_call = max(1, params.batch_size // n)
    was_training = model.training
    model.eval()
    try:
        flat: list[Sample] = []
        for start in range(0, len(prompts), per_call):
            flat += _generate_chunk(model, tokenizer, prompts[start:start + per_call], n, params, eos_ids)
    finally:
        model.train(was_training)
    return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]


def collate(samples: Sequence[Sample], pad_id: int) -> MicroBatch:
    """Left-pad prompts and right-pad completions to this micro-batch's own longest rows."""
    lp = max(s.prompt_ids.numel() for s in samples)
    lc = max(max(s.length for s in samples), 1)
    ids = torch.full((len(samples), lp + lc), pad_id, dtype=torch.long)  # [B, Lp+Lc]
    attn = torch.zeros_like(ids)  # [B, Lp+Lc]
    cmask = torch.zeros(len(samples), lc)  # [B, Lc]
    for row, s in enumerate(samples):
        p, c = s.prompt_ids.numel(), s.length
        ids[row, lp - p:lp] = s.prompt_ids
        ids[row, lp:lp + c] = s.completion_ids
        attn[row, lp - p:lp + c] = 1
        cmask[row, :c] = 1.0
    positions = (attn.cumsum(dim=1) - 1).clamp(min=0)  # [B, Lp+Lc], as generate computes them
    return MicroBatch(ids, attn, positions, cmask, lc)


def selective_log_softmax(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[token] without materialising the full log-softmax; row by row to bound memory."""
    out = torch.empty(tokens.shape, dtype=torch.float32, device=logits.device)  # [B, L]
    for row in range(logits.shape[0]):
        lg = logits[row].float()  # [L, V]
        out[row] = lg.gather(-1, tokens[row].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, dim=-1)  # [L]
    return out


def token_logprobs(model, batch: MicroBatch, temperature: float) -> Tensor:
    """log π(completion token | prefix) at the sampling temperature, [B, Lc]; padded positions are junk."""
    device = next(model.parameters()).device
    lc = batch.completion_len
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                position_ids=batch.position_ids.to(device), logits_to_keep=lc + 1, use_cache=False)
    logits = out.logits[:, :-1, :] / temperature  # [B, Lc, V]
    tokens = batch.input_ids[:, -lc:].to(device)  # [B, Lc]
    return selective_log_softmax(logits, tokens)  # [B, Lc]
