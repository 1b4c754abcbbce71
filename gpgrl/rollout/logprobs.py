"""The training forward: collating samples into micro-batches and log-probs of completion tokens.

Owns `MicroBatch`; `collate` (prompts left-padded, completions right-padded, padding trimmed to the micro-batch;
a vision-language micro-batch carries its samples' vision inputs, assembled per sample and image by
`gpgrl.rollout.inputs.vision_batch`); the shared prompt forward (`collate(..., share_prompts=True)`: each distinct
prompt of a micro-batch, with its vision inputs, runs once and its completions on its KV cache, and a head all its
text prompts share runs once for all of them; same gradient up to rounding);
and `token_logprobs` (log-probs at the sampling temperature without materialising a full log-softmax over the
vocabulary; tokens that are never sampled are masked out of it, as `generate` masks them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers.cache_utils import DynamicLayer

from gpgrl.rollout.inputs import PromptInputs, model_positions, rope_start, vision_batch
from gpgrl.rollout.precision import cache_kwargs, output_cache, precision
from gpgrl.rollout.prefill import forward_with_head, shared_head_length
from gpgrl.rollout.sampling import Sample


@dataclass(frozen=True)
class MicroBatch:
    input_ids: Tensor  # [B, Lp + Lc]
    attention_mask: Tensor  # [B, Lp + Lc]
    position_ids: Tensor | None  # [B, Lp + Lc]; None: the model computes them (M-RoPE with vision inputs)
    completion_mask: Tensor  # [B, Lc] float
    completion_len: int  # Lc
    prompt_rows: Tensor | None = None  # [U] one row per distinct prompt (collate(share_prompts=True)), else None
    prompt_owner: Tensor | None = None  # [B] index into prompt_rows of each row's prompt
    vision: dict[str, Tensor] = field(default_factory=dict)  # the samples' vision inputs, by model argument
    suppressed_ids: tuple[int, ...] = ()  # tokens never sampled: masked out of the log-softmax
    prompt_vision: dict[str, Tensor] = field(default_factory=dict)  # vision inputs of the prompt_rows only


def _distinct_prompts(samples: Sequence[Sample]) -> tuple[Tensor, Tensor]:
    """Row of the first sample with each distinct prompt [U], and each sample's index into those rows [B]. Prompts
    with vision inputs are the same prompt when they share their ids and their (one, shared) vision inputs."""
    index: dict[tuple[object, ...], int] = {}
    rows, owner = [], []
    for row, s in enumerate(samples):
        key = (id(s.vision), *s.prompt_ids.tolist())
        if key not in index:
            index[key] = len(rows)
            rows.append(row)
        owner.append(index[key])
    return torch.tensor(rows), torch.tensor(owner)


def collate(samples: Sequence[Sample], pad_id: int, share_prompts: bool = False,
            suppressed_ids: tuple[int, ...] = ()) -> MicroBatch:
    """Left-pad prompts and right-pad completions to this micro-batch's own longest rows; vision inputs are
    gathered from the samples (per-token ones zero over padding and completion).

    With `share_prompts`, also record which rows share a prompt (and gather those rows' vision inputs), so
    `token_logprobs` runs each distinct prompt once (only when some prompt occurs more than once)."""
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
    prompts = [PromptInputs(s.prompt_ids, s.vision) for s in samples]
    vision = vision_batch(prompts, lp, lp + lc)
    positions = None if model_positions(prompts) else (attn.cumsum(dim=1) - 1).clamp(min=0)  # as generate does
    rows, owner = _distinct_prompts(samples) if share_prompts else (None, None)
    if rows is not None and rows.numel() == len(samples):
        rows, owner = None, None  # nothing to share
    prompt_vision = vision_batch([prompts[r] for r in rows.tolist()], lp, lp) if rows is not None else {}
    return MicroBatch(ids, attn, positions, cmask, lc, rows, owner, vision, tuple(suppressed_ids), prompt_vision)


CHUNK_ELEMENTS = 1 << 24
"""Logits per chunk of `selective_log_softmax` (64 MiB in fp32): bounds its temporary memory."""


def selective_log_softmax(logits: Tensor, tokens: Tensor, temperature: float = 1.0,
                          suppressed_ids: Sequence[int] = ()) -> Tensor:
    """log softmax(logits / temperature)[token] without materialising the full log-softmax, in chunks of rows;
    `suppressed_ids` get probability 0 (as `generate`'s suppress_tokens gives them).

    The temperature is applied chunk by chunk (no full-size scaled copy); the chunks come from one `split`, so
    backward assembles the logits' gradient in one piece. Same speed as a row-by-row loop on SmolLM2
    (benchmarks/logprobs.py)."""
    rows = max(1, CHUNK_ELEMENTS // max(1, logits[0].numel()))
    masked = torch.tensor(list(suppressed_ids), dtype=torch.long, device=logits.device)
    out = []
    for lg, tk in zip(logits.split(rows), tokens.split(rows), strict=True):
        lg = lg.float() / temperature if temperature != 1.0 else lg.float()  # [b, L, V]
        if masked.numel():
            lg = lg.index_fill(-1, masked, -float("inf"))  # [b, L, V]
        out.append(lg.gather(-1, tk.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, dim=-1))  # [b, L]
    return torch.cat(out)  # [B, L]


def _full_logits(model, batch: MicroBatch) -> Tensor:
    """Logits predicting each completion token from one forward over prompt + completion, [B, Lc, V]."""
    device = next(model.parameters()).device
    lc = batch.completion_len
    extra = {k: v.to(device) for k, v in batch.vision.items()}
    if batch.position_ids is not None:
        extra["position_ids"] = batch.position_ids.to(device)
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                logits_to_keep=lc + 1, use_cache=False, **extra)
    return out.logits[:, :-1, :]  # [B, Lc, V]


def _shared_prompt_logits(model, batch: MicroBatch) -> Tensor:
    """As `_full_logits`, but each distinct prompt (with its vision inputs) is run once and its KV cache indexed out
    to its rows.

    Indexing the cache is differentiable, so each prompt's activations get the sum of its completions'
    gradients: the same gradient as the plain forward, with the prompt computed U instead of B times. M-RoPE
    prompts get their positions from the model; their completions continue after the largest prompt position."""
    device = next(model.parameters()).device
    lc, rows, owner = batch.completion_len, batch.prompt_rows.to(device), batch.prompt_owner.to(device)
    ids, attn = batch.input_ids.to(device), batch.attention_mask.to(device)
    lp = ids.shape[1] - lc
    prompt = {"input_ids": ids[rows, :lp], "attention_mask": attn[rows, :lp],
              **{k: v.to(device) for k, v in batch.prompt_vision.items()}}
    pos = batch.position_ids.to(device) if batch.position_ids is not None else None
    texts = [] if pos is None or batch.prompt_vision else _unpadded(prompt)
    head = shared_head_length(texts)
    if head:
        out, prompt_mask, _ = forward_with_head(model, texts, head, 0, device)  # pad id: masked, any id
    else:
        out = model(**prompt, position_ids=pos[rows, :lp] if pos is not None else None, use_cache=True,
                    logits_to_keep=1)
        prompt_mask = prompt["attention_mask"]  # [U, Lp]
    first = out.logits.index_select(0, owner)  # [B, 1, V]: predicts the first completion token
    if lc == 1:
        return first
    cache = output_cache(out)
    select_cache_rows(cache, owner)  # [U, ...] -> [B, ...]
    if pos is None:
        start = rope_start(model, prompt)[owner]  # [B, 1]
        rest_pos = start + torch.arange(lc - 1, device=device)  # [B, Lc-1]
    else:
        rest_pos = pos[:, lp:-1]  # [B, Lc-1]
    mask = torch.cat([prompt_mask[owner], attn[:, lp:-1]], dim=1)  # [B, L'p + Lc-1]
    rest = model(input_ids=ids[:, lp:-1], attention_mask=mask, position_ids=rest_pos,
                 use_cache=True, **cache_kwargs(model, cache)).logits  # [B, Lc-1, V]
    return torch.cat([first, rest], dim=1)  # [B, Lc, V]


def select_cache_rows(cache, rows: Tensor) -> None:
    """`cache.batch_select_indices(rows)`, for a `rows` [B] that repeats rows, with a reproducible gradient.

    HF selects by `keys[rows]`, whose backward (index_put with accumulate) adds duplicated rows with unordered
    atomics on a multi-threaded CPU, so two same-seed runs could differ in the last bit; `index_select`'s backward
    adds them in order. Layers that keep other state than keys and values select their own way."""
    for layer in getattr(cache, "layers", None) or [cache]:
        plain = type(layer).batch_select_indices is DynamicLayer.batch_select_indices
        if plain and layer.is_initialized and layer.keys.numel():
            layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
        else:
            layer.batch_select_indices(rows)


def _unpadded(prompt: dict[str, Tensor]) -> list[PromptInputs]:
    """The distinct prompts of a micro-batch without their left padding."""
    return [PromptInputs(row[mask.bool()]) for row, mask in zip(prompt["input_ids"], prompt["attention_mask"],
                                                                strict=True)]


def can_share_prompts(model) -> bool:
    """The shared prompt forward needs a KV cache with gradients: not under gradient checkpointing or DDP."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    flag = "is_activation_checkpointing" if hasattr(type(base), "is_activation_checkpointing") else \
        "is_gradient_checkpointing"  # transformers >= 5.x renamed it
    return not getattr(base, flag, False)


def token_logprobs(model, batch: MicroBatch, temperature: float, autocast_bf16: bool = False) -> Tensor:
    """log π(completion token | prefix) at the sampling temperature, [B, Lc]; padded positions are junk.

    Uses the shared prompt forward when the batch was collated with `share_prompts` and the model allows it."""
    shared = batch.prompt_rows is not None and can_share_prompts(model)
    with precision(model, autocast_bf16):
        logits = _shared_prompt_logits(model, batch) if shared else _full_logits(model, batch)  # [B, Lc, V]
    tokens = batch.input_ids[:, -batch.completion_len:].to(logits.device)  # [B, Lc]
    return selective_log_softmax(logits, tokens, temperature, batch.suppressed_ids)  # [B, Lc]
