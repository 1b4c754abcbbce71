"""Rollout I/O: prompts to model inputs (`inputs`), sampling G completions per prompt (`sampling`) and their token
log-probs (`logprobs`)."""

from gpgrl.rollout.inputs import PromptEncoder, PromptInputs, TextEncoder, Vision, VisionEncoder, make_encoder
from gpgrl.rollout.logprobs import (
    MicroBatch,
    can_share_prompts,
    collate,
    selective_log_softmax,
    token_logprobs,
)
from gpgrl.rollout.precision import precision
from gpgrl.rollout.sampling import Sample, SamplingParams, completion_lengths, eos_token_ids, generate

__all__ = ["MicroBatch", "PromptEncoder", "PromptInputs", "Sample", "TextEncoder", "Vision", "VisionEncoder",
           "make_encoder", "SamplingParams", "can_share_prompts", "collate", "completion_lengths",
           "eos_token_ids", "generate", "precision", "selective_log_softmax", "token_logprobs"]
