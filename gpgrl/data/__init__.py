"""Data: dataset sources (`sources`), examples, splits, prompt rendering and the prompt queue (`examples`)."""

from gpgrl.data.examples import (
    Example,
    PromptQueue,
    derive_seed,
    load_splits,
    normalise_question,
    render_prompt,
    reward_columns,
)

__all__ = ["Example", "PromptQueue", "derive_seed", "load_splits", "normalise_question", "render_prompt",
           "reward_columns"]
