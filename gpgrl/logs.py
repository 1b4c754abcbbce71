"""What a run prints besides its metrics: phase lines, and no carriage-return progress bars in a log file.

On a terminal the libraries' progress bars (GGUF conversion, weight loading and writing, dataset preparation) are
useful; written to a file (`make demo > log`) each is hundreds of carriage-return frames. `quiet_progress_bars`
turns them off when stderr is not a terminal, and gpgrl says each phase in one line instead (`phase`, on the
"gpgrl" logger, which `show_phases` prints to stderr).
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("gpgrl")


def quiet_progress_bars(stream=None) -> bool:
    """Turn off transformers', huggingface_hub's and datasets' progress bars when `stream` (stderr) is not a
    terminal; returns whether it did."""
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return False
    os.environ["TQDM_DISABLE"] = "1"  # read when tqdm is imported: transformers' GGUF conversion calls it directly
    import datasets
    import huggingface_hub.utils
    import transformers

    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    datasets.disable_progress_bars()
    return True


def show_phases() -> None:
    """Print gpgrl's phase lines (INFO and above on the "gpgrl" logger) to stderr, once."""
    if not any(getattr(h, "_gpgrl", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._gpgrl = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def phase(message: str) -> None:
    """One line saying what gpgrl is doing now (loading a model, building a cached one)."""
    logger.info(message)
