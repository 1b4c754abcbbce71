"""The shared-prefill sampler's prefill: each prompt of a chunk encoded once, and a head that every prompt shares
(a system prompt, a chat template's opening) encoded once for the whole chunk.

Text prompts of one run usually start with the same tokens: SmolLM2's chat template and the default recipe's
system prompt are ~40 of a ~70-token prompt, which made the prefill over half of an evaluation's arithmetic. When the
prompts of a chunk share at least `MIN_SHARED_HEAD` leading tokens, `prefill` runs that head once (batch 1),
repeats its KV cache over the prompts and runs only each prompt's own tail on it. The tails are left-padded, so
the padding sits between the head and the tail: the attention mask has a hole there and every real token keeps
the position it has in the whole prompt, so the logits equal those of one prefill over the whole prompts up to
float rounding. Prompts with vision inputs (whose positions the model may compute itself) are always prefilled
whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gpgrl.rollout.inputs import PromptEncoder, PromptInputs, pad_prompts, text_positions
from gpgrl.rollout.precision import cache_kwargs, output_cache

MIN_SHARED_HEAD = 16
"""The fewest leading tokens all prompts of a chunk must share for their head to be encoded once."""


@dataclass
class Prefilled:
    """A chunk of P prompts after the prefill."""

    cache: object  # the KV cache of every prompt position, P rows
    logits: Tensor  # [P, V] fp32, at each prompt's last token
    attention_mask: Tensor  # [P, L] of the cached positions (1 = a real token)
    start: Tensor  # [P, 1] the position of the first completion token


def shared_head_length(prompts: Sequence[PromptInputs]) -> int:
    """Leading tokens common to all `prompts` (each keeps at least one of its own), or 0 when fewer than
    `MIN_SHARED_HEAD`, fewer than two prompts, or any prompt has vision inputs."""
    if len(prompts) < 2 or any(p.vision is not None for p in prompts):
        return 0
    limit = min(p.ids.numel() for p in prompts) - 1
    if limit < MIN_SHARED_HEAD:
        return 0
    first = prompts[0].ids[:limit]  # [limit]
    same = torch.stack([p.ids[:limit] == first for p in prompts[1:]]).all(dim=0)  # [limit]
    length = limit if bool(same.all()) else int((~same).int().argmax())
    return length if length >= MIN_SHARED_HEAD else 0


def prefill(model, encoder: PromptEncoder, prompts: Sequence[PromptInputs], device: torch.device) -> Prefilled:
    """Encode `prompts` for decoding; a shared head (`shared_head_length`) once for all of them."""
    head = shared_head_length(prompts)
    if head:
        out, mask, positions = forward_with_head(model, prompts, head, encoder.pad_id, device)
        return Prefilled(output_cache(out), out.logits[:, -1].float(), mask, positions[:, -1:] + 1)
    inputs = {k: v.to(device) for k, v in encoder.model_inputs(prompts).items()}
    start, positions = encoder.positions(model, inputs)  # [P, 1]; [P, Lp] or None
    out = model(**inputs, position_ids=positions, use_cache=True, logits_to_keep=1)
    return Prefilled(output_cache(out), out.logits[:, -1].float(), inputs["attention_mask"], start)


def forward_with_head(model, prompts: Sequence[PromptInputs], head: int, pad_id: int, device: torch.device):
    """One forward over `prompts` whose first `head` tokens are the same: the head once (batch 1), its KV cache
    repeated over the prompts (differentiably, so under autograd the head gets the sum of the prompts' gradients),
    then each prompt's left-padded tail on it. Returns the tail forward's output (its cache covers the whole
    prompts), the attention mask [P, head + Lt] of that cache and the tails' positions [P, Lt]."""
    ids = prompts[0].ids[:head][None].to(device)  # [1, head]
    out = model(input_ids=ids, position_ids=torch.arange(head, device=device)[None], use_cache=True,
                logits_to_keep=1)
    cache = output_cache(out)
    cache.batch_repeat_interleave(len(prompts))  # the head's KV for every prompt
    tails, tail_mask = pad_prompts([PromptInputs(p.ids[head:]) for p in prompts], pad_id)  # [P, Lt] each
    mask = torch.cat([tail_mask.new_ones(len(prompts), head), tail_mask], dim=1).to(device)  # [P, head + Lt]
    positions = text_positions(mask)[:, head:]  # [P, Lt]: real tokens at their place in the whole prompt
    out = model(input_ids=tails.to(device), attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=1, **cache_kwargs(model, cache))
    return out, mask, positions
