"""What align prints while it works: :func:`quiet` silences progress bars and info logs for a block (``align.train(...,
quiet=True)``, the study's runs). A leaf module: any layer may use it."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """No progress bars and only warnings from align, Transformers and datasets for the duration of the block."""
    if not enabled:
        yield
        return
    import datasets
    import transformers
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    loggers = [logging.getLogger(n) for n in ("align", "align.data", "align.reference", "align.sft")]
    levels = [lg.level for lg in loggers]
    hf_level = transformers.logging.get_verbosity()
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    transformers.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    disable_progress_bars()
    old_tqdm = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        transformers.logging.set_verbosity(hf_level)
        transformers.utils.logging.enable_progress_bar()
        datasets.enable_progress_bars()
        enable_progress_bars()
        if old_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_tqdm
