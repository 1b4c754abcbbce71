"""The built-in rewards by name (what `reward.functions` and `eval.scorer` accept besides your own functions)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gpgrl.rewards.text import Accuracy, Cosine, RepetitionPenalty, SoftOverlong, boxed_format, task_score, think_format
from gpgrl.rewards.visual import Label, choice, giou, iou

REWARDS: Mapping[str, Any] = MappingProxyType({
    "accuracy": Accuracy, "cosine": Cosine, "boxed_format": boxed_format, "think_format": think_format,
    "soft_overlong": SoftOverlong, "repetition_penalty": RepetitionPenalty, "task_score": task_score,
    "label": Label, "choice": choice, "iou": iou, "giou": giou})
"""Built-in rewards by name: a function, or a dataclass whose fields are the reward's parameters."""
