"""Sampling G completions per prompt, for text and vision-language models.

Owns the `Sample` record (one prompt + one completion, unpadded; the prompt's vision inputs shared by its G
samples), sampling in chunks, and the completion mask rule (up to and including the first EOS; rows without EOS
are truncated and flagged). Prompts arrive encoded (`gpgrl.rollout.inputs.PromptInputs`); the encoder pads them
and names the tokens that are never sampled (a VLM's image placeholders).

Fast path (on by default through `rollout.shared_prefill`; see docs/performance.md): shared prefill
(`SamplingParams.shared_prefill`), a KV-cached sampling loop that encodes each prompt once and copies its cache to
the prompt's `n` completions, into room reserved for the completion tokens (`gpgrl.rollout.kv_cache`), instead of
HF `generate` re-encoding the prompt `n` times and growing its cache by concatenation; rows that have finished
leave the batch (and the cache) instead of being decoded on as padding. It draws the same tokens as `generate`
for the same seed (same logits up to float rounding, the random draw of `torch.multinomial` on the whole batch:
`multinomial_rows`); only temperature, top-p and min_new_tokens are applied (not other processors a model's
generation_config may add). Prompts with vision inputs run their vision tower once per prompt too; their
positions (M-RoPE for Qwen2-VL) come from the encoder, as `generate` computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import StoppingCriteria, StoppingCriteriaList, TopPLogitsWarper

from gpgrl.rewards.answers import answer_end
from gpgrl.rollout.decode_step import decode_step
from gpgrl.rollout.inputs import PromptEncoder, PromptInputs, Vision
from gpgrl.rollout.kv_cache import expand_cache
from gpgrl.rollout.precision import precision
from gpgrl.rollout.prefill import prefill

# The autograd mode of the shared-prefill decoding (`benchmarks/rollout.py` swaps in torch.no_grad to measure it).
DECODE_MODE = torch.inference_mode


@dataclass(frozen=True)
class Sample:
    """One completion of one prompt; tensors are unpadded 1-D token ids on the CPU."""

    prompt_ids: Tensor  # [Lp]
    completion_ids: Tensor  # [Lc], up to and including the first EOS
    text: str
    truncated: bool  # no EOS within max_new_tokens
    vision: Vision | None = None  # the prompt's vision inputs (shared by the prompt's samples)
    sampler_logprobs: Tensor | None = None  # [Lc] the log-probs an engine reported at the sampling temperature

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
    stop_after_answer: bool = False  # a completion ends with its first complete answer (\boxed{...}, </answer>)


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


def _generate_chunk(model, encoder: PromptEncoder, prompts: Sequence[PromptInputs], n: int,
                    params: SamplingParams, eos_ids: set[int]) -> list[Sample]:
    """HF `generate` on each prompt repeated n times (rows p*n .. p*n+n-1 belong to prompt p)."""
    rows = [p for p in prompts for _ in range(n)]
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in encoder.model_inputs(rows).items()}
    sampling = params.temperature > 0
    kwargs = dict(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0) if sampling \
        else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    if params.min_new_tokens > 0:
        kwargs["min_new_tokens"] = params.min_new_tokens
    if encoder.suppressed_ids:
        kwargs["suppress_tokens"] = list(encoder.suppressed_ids)
    lp = inputs["input_ids"].shape[1]
    if params.stop_after_answer:
        kwargs["stopping_criteria"] = StoppingCriteriaList([_AnswerStop(encoder.tokenizer, lp)])
    # each process samples its own chunks with whole parameters (a sharded model is gathered around the round), so
    # transformers must not lock the processes' decode steps together as it does by itself for an FSDP model
    out = model.generate(**inputs, max_new_tokens=params.max_new_tokens, pad_token_id=encoder.pad_id,
                         eos_token_id=sorted(eos_ids), synced_gpus=False, **kwargs)
    return _to_samples(encoder.tokenizer, rows, out[:, lp:].cpu(), eos_ids, params.stop_after_answer)


class AnswerWatch:
    """Which rows of a growing completion batch have written a complete answer (`answer_end`). Only rows whose
    newest token can close one ("}" or ">") are decoded, so the check costs little per token."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._closers: dict[int, bool] = {}

    def _closes(self, token: int) -> bool:
        if token not in self._closers:
            piece = self._tokenizer.convert_ids_to_tokens(token) or ""
            self._closers[token] = "}" in piece or ">" in piece
        return self._closers[token]

    def answered(self, completions: Tensor, rows: Tensor) -> Tensor:
        """Of the candidate `rows` [N] bool of `completions` [N, t], those whose text now holds an answer."""
        out = torch.zeros_like(rows)
        for r in rows.nonzero().flatten().tolist():
            if self._closes(int(completions[r, -1])):
                out[r] = answer_end(self._tokenizer.decode(completions[r], skip_special_tokens=True)) is not None
        return out


class _AnswerStop(StoppingCriteria):
    """HF `generate`'s per-row stop at the first complete answer (`stop_after_answer`)."""

    def __init__(self, tokenizer, prompt_len: int) -> None:
        self._watch, self._lp = AnswerWatch(tokenizer), prompt_len

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs) -> Tensor:
        completions = input_ids[:, self._lp:].cpu()  # [N, t]
        return self._watch.answered(completions, torch.ones(len(completions), dtype=torch.bool)).to(input_ids.device)


def _answer_length(tokenizer, ids: Tensor) -> int | None:
    """The fewest leading tokens of `ids` that hold a complete answer (binary search: holding one is monotone)."""
    if answer_end(tokenizer.decode(ids, skip_special_tokens=True)) is None:
        return None
    low, high = 1, ids.numel()
    while low < high:
        mid = (low + high) // 2
        if answer_end(tokenizer.decode(ids[:mid], skip_special_tokens=True)) is None:
            low = mid + 1
        else:
            high = mid
    return low


def _to_samples(tokenizer, rows: Sequence[PromptInputs], completions: Tensor, eos_ids: set[int],
                stop_after_answer: bool = False) -> list[Sample]:
    """Cut each generated row [N, Lc] at its first EOS (and with `stop_after_answer` at the end of its first
    complete answer, whichever comes first); row r completes prompt rows[r]. A row is truncated when it has
    neither."""
    lengths, truncated = completion_lengths(completions, eos_ids)
    samples = []
    for r, prompt in enumerate(rows):
        length, cut = int(lengths[r]), bool(truncated[r])
        answered = _answer_length(tokenizer, completions[r, :length]) if stop_after_answer else None
        if answered is not None:
            length, cut = answered, False
        ids = completions[r, :length].clone()  # [Lc_r]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        samples.append(Sample(prompt.ids, ids, text, cut, prompt.vision))
    return samples


def _next_tokens(logits: Tensor, step: int, params: SamplingParams, eos: Tensor, suppressed: Tensor,
                 active: Tensor, rows: int) -> Tensor:
    """One sampling step on the fp32 logits [A, V] of the `active` rows [A] of a batch of `rows`, processed as
    `generate` does: suppressed tokens and the EOS mask, 1/T, top-p. The random draw is the one `torch.multinomial`
    makes on all `rows` (`multinomial_rows`), so rows that finished and are no longer computed still take their
    share of the random stream, as in `generate`."""
    if suppressed.numel():
        logits[:, suppressed] = -float("inf")
    if step < params.min_new_tokens:
        logits[:, eos] = -float("inf")
    if params.temperature <= 0:
        return logits.argmax(dim=-1)  # [A]
    scores = logits / params.temperature  # [A, V]
    if params.top_p < 1.0:
        scores = TopPLogitsWarper(params.top_p)(None, scores)
    return multinomial_rows(F.softmax(scores, dim=-1), active, rows)  # [A]


def multinomial_rows(probs: Tensor, active: Tensor, rows: int) -> Tensor:
    """`torch.multinomial(full_probs, 1)[active]` from the probabilities [A, V] of the `active` rows [A] only.

    One sample per row is drawn by torch (ATen's one-sample path) as argmax(p / q) with q ~ Exp(1) of the full
    [rows, V] shape; drawing that q here gives the same tokens and leaves the RNG where multinomial leaves it
    (tested against torch.multinomial, so a torch that changes this shows up as a failing test)."""
    if bool(torch.isnan(probs).any()):
        raise RuntimeError("sampling: the probabilities contain NaN (the model's logits are not finite)")
    q = exponential_noise(rows, probs.shape[1], probs)  # [rows, V]
    return (probs / (q if probs.shape[0] == rows else q[active])).argmax(dim=-1)  # [A]


def exponential_noise(rows: int, vocab: int, like: Tensor) -> Tensor:
    """`like.new_empty(rows, vocab).exponential_()`: the same draws and the same RNG advance, faster for the
    sampler's float32 probabilities on the CPU. There ATen draws them one by one (a float64 uniform u from the
    generator, then -log1p(-u), cast to float32), ~24 ns each, ~7 % of a tiny model's sampling; the same uniforms
    drawn at once and transformed vectorised cost 1.65x less (`benchmarks/exponential_draw.py`). The vectorised
    log1p is within one float64 ulp of the scalar one, which the cast to float32 absorbs (0 differences in 5e7
    draws; tested bit for bit against exponential_ and torch.multinomial). Other dtypes and devices use
    exponential_ itself."""
    if like.device.type != "cpu" or like.dtype != torch.float32:
        return like.new_empty(rows, vocab).exponential_()  # [rows, V]
    u = torch.empty(rows, vocab, dtype=torch.float64).uniform_()  # [rows, V]
    return torch.log1p(u.neg_()).neg_().float()  # [rows, V]


def prebuilt_mask_applies(model, prompts: Sequence[PromptInputs]) -> bool:
    """Whether the decode steps may pass their attention mask already in HF's 4-D form (key padding [N, 1, 1, L],
    True = attend): for SDPA attention over full-attention layers only, text prompts. A one-token query at the end
    of the cache sees every cached key its padding allows, so this is the mask HF's `create_causal_mask` builds
    from the 2-D one at every step (or None when nothing is padded); building it costs ~0.7 ms per decode step on
    this project's CPU, ~9 % of a tiny model's sampling (`benchmarks/profile_step.py`). Sliding-window or other
    attention kinds keep HF's own mask."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None)  # absent (Llama): full attention unless a window is set
    full = all(kind == "full_attention" for kind in layer_types) if layer_types \
        else text is not None and getattr(text, "sliding_window", None) is None
    return (getattr(text, "_attn_implementation", None) == "sdpa" and full
            and all(p.vision is None for p in prompts))


def _sample_chunk(model, encoder: PromptEncoder, prompts: Sequence[PromptInputs], n: int, params: SamplingParams,
                  eos_ids: set[int]) -> list[Sample]:
    """Shared-prefill sampling: one prefill per prompt (with its vision inputs; a head all prompts share once,
    `gpgrl.rollout.prefill`), its KV cache repeated n times, then cached decoding with the positions `generate`
    would give. The decoding runs in inference mode (no autograd bookkeeping on any op: ~10% of a tiny model's
    decode step); nothing it makes outlives it but the tokens, copied out as ordinary tensors."""
    with DECODE_MODE():
        tokens = _decode(model, encoder, prompts, n, params, eos_ids)  # [N, Lc]
    return _to_samples(encoder.tokenizer, [p for p in prompts for _ in range(n)], tokens.cpu().clone(), eos_ids,
                       params.stop_after_answer)


def _decode(model, encoder: PromptEncoder, prompts: Sequence[PromptInputs], n: int, params: SamplingParams,
            eos_ids: set[int]) -> Tensor:
    """The completion tokens [N, Lc] of `_sample_chunk` (padding after a row's end), rows in generate's order."""
    device = next(model.parameters()).device
    first = prefill(model, encoder, prompts, device)
    cache, attn, start = first.cache, first.attention_mask, first.start  # attn [P, Lp]; start [P, 1]
    expand_cache(cache, n, params.max_new_tokens)  # rows in generate's order: prompt p -> rows p*n .. p*n+n-1
    logits = first.logits.repeat_interleave(n, dim=0)  # [N, V]
    rows, lp, steps = logits.shape[0], attn.shape[1], params.max_new_tokens
    mask = torch.cat([attn.repeat_interleave(n, dim=0), attn.new_ones(rows, steps)], dim=1)  # [N, Lp+steps]
    prebuilt = prebuilt_mask_applies(model, prompts)
    if prebuilt:
        mask = mask.bool()[:, None, None, :]  # [N, 1, 1, Lp+steps]: the 4-D mask HF would build at every step
    forward = decode_step(model, prebuilt)
    pos = start.repeat_interleave(n, dim=0) - 1  # [N, 1]
    eos = torch.tensor(sorted(eos_ids), device=device)
    suppressed = torch.tensor(encoder.suppressed_ids, dtype=torch.long, device=device)
    tokens = torch.full((rows, steps), encoder.pad_id, dtype=torch.long, device=device)  # [N, steps]
    active = torch.arange(rows, device=device)  # [A] rows still sampling; finished ones leave the batch
    watch = AnswerWatch(encoder.tokenizer) if params.stop_after_answer else None
    for t in range(steps):
        nxt = _next_tokens(logits, t, params, eos, suppressed, active, rows)  # [A]
        tokens[active, t] = nxt
        finished = torch.isin(nxt, eos)  # [A]
        if watch is not None:
            finished |= watch.answered(tokens[active, : t + 1].cpu(), ~finished.cpu()).to(device)
        if t + 1 == steps or bool(finished.all()):
            tokens = tokens[:, : t + 1]
            break
        if bool(finished.any()):  # drop finished rows from the batch: their tokens stay padding
            keep = (~finished).nonzero().squeeze(1)  # [A']
            active, nxt, mask, pos = active[keep], nxt[keep], mask[keep], pos[keep]
            cache.batch_select_indices(keep)
        pos = pos + 1
        cache, logits = forward(nxt, mask[..., : lp + t + 1], pos, cache)  # logits [A, V]
    return tokens


@torch.no_grad()
def generate(model, encoder: PromptEncoder, prompts: Sequence[PromptInputs], n: int,
             params: SamplingParams) -> list[list[Sample]]:
    """`n` completions for each encoded prompt (a group), in prompt order. Uses torch's global RNG."""
    eos_ids = eos_token_ids(model, encoder.tokenizer)
    per_call = max(1, params.batch_size // n)
    chunk = _sample_chunk if params.shared_prefill else _generate_chunk
    was_training = model.training
    model.eval()
    try:
        flat: list[Sample] = []
        with precision(model, params.autocast_bf16):
            for start in range(0, len(prompts), per_call):
                flat += chunk(model, encoder, prompts[start:start + per_call], n, params, eos_ids)
    finally:
        model.train(was_training)
    return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]
