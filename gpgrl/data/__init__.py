"""Data: dataset sources (`sources`), images (`images`), synthetic visual tasks (`shapes`), examples, splits and
the prompt queue (`examples`), prompt rendering (`prompts`)."""

from gpgrl.data.examples import (
    Example,
    PromptQueue,
    dataset_examples,
    derive_seed,
    given_splits,
    load_splits,
    normalise_question,
    reward_columns,
)
from gpgrl.data.prompts import render_prompt, scored_text

__all__ = ["Example", "PromptQueue", "dataset_examples", "derive_seed", "given_splits", "load_splits",
           "normalise_question", "render_prompt", "reward_columns", "scored_text"]
