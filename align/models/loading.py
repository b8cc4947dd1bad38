"""Resolve a model name (``embedded:tiny``, a local path, or a hub id) and load model and tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED = "embedded:tiny"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def align_home() -> Path:
    """Where built models, SFT checkpoints and reference caches live: ``$ALIGN_HOME`` or ``~/.cache/align``."""
    return Path(os.environ.get("ALIGN_HOME", Path.home() / ".cache" / "align"))


def resolve_model_path(name: str) -> str:
    """``embedded:tiny`` → the built local directory; anything else is passed through to ``from_pretrained``."""
    if name == EMBEDDED:
        from align.models.tiny import ensure_tiny

        return str(ensure_tiny(align_home() / "models"))
    return name


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer and make sure it has a pad token (falls back to eos)."""
    tok = AutoTokenizer.from_pretrained(resolve_model_path(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, dtype: str = "float32") -> PreTrainedModel:
    """Load a causal LM in ``dtype`` (``float32`` | ``bfloat16`` | ``float16`` | ``auto``)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(name), dtype=DTYPES[dtype])
