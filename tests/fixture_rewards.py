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


def crash_on_second_step(prompts, completions, **columns):
    """has_digit; with GPGRL_TEST_CRASH_FILE set, the second call scoring exactly 6 completions (a training step
    of 2 prompts x 3; size the eval split differently) raises: a run that dies mid-way."""
    import os
    from pathlib import Path

    path = os.environ.get("GPGRL_TEST_CRASH_FILE")
    if path and len(completions) == 6:
        counter = Path(path)
        calls = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(calls))
        if calls == 2:
            raise RuntimeError("injected crash at step 2")
    return has_digit(prompts, completions)


def overflowing_on_even_steps(prompts, completions, trainer_state=None, **columns):
    """has_digit, scaled to 3e38 on even steps: the advantages' loss overflows to inf there (a non-finite loss the
    step must skip), finite on odd steps."""
    scale = 3e38 if trainer_state is not None and trainer_state.global_step % 2 == 1 else 1.0
    return [scale * float(any(c.isdigit() for c in text)) for text in completions]
