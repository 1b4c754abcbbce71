"""Reward functions for the benchmarks (TRL-style signature, usable by both gpgrl and TRL)."""

from __future__ import annotations

import hashlib
from typing import Any


def varied(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
    """A deterministic pseudo-random reward in [0, 1) from a hash of the completion text.

    Different completions get different rewards, so practically no group is degenerate: GPG then skips no
    sample and does the same forward/backward work as GRPO. Cheap, so reward time does not blur the timing."""
    return [int.from_bytes(hashlib.sha256(_text(c).encode()).digest()[:4], "big") / 2**32 for c in completions]


def _text(completion: Any) -> str:
    """A completion as text: TRL passes conversational completions as message lists."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion)
    return str(completion)
