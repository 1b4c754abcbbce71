"""Reward functions for tests on the random tiny model (loaded through the 'file.py:function' path)."""


def digit_fraction(prompts, completions, **columns):
    """Fraction of digit characters: continuous, so groups of a random model are rarely degenerate."""
    return [sum(c.isdigit() for c in text) / max(len(text), 1) for text in completions]


def constant(prompts, completions, **columns):
    """The same reward everywhere: every group is degenerate."""
    return [1.0 for _ in completions]


def has_digit(prompts, completions, **columns):
    """0/1: some groups degenerate, some not."""
    return [float(any(c.isdigit() for c in text)) for text in completions]
