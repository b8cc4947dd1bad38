"""The usual reference of a run: the policy's starting weights (or a named reference model), cached on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from align.models.loading import REFERENCE_ADAPTER  # a PEFT policy's frozen reference adapter, named where it loads
from align.reference.audit import DEFAULT_SAMPLES
from align.reference.provider import CachedReference, LiveReference


def default_cache_root() -> Path:
    """``$ALIGN_HOME/reference`` (``~/.cache/align/reference``)."""
    return Path(os.environ.get("ALIGN_HOME", Path.home() / ".cache" / "align")) / "reference"


def reference_adapter(model: torch.nn.Module) -> str | None:
    """The frozen reference adapter of a PEFT policy, or None (the reference is the base, adapters disabled)."""
    config = getattr(model, "peft_config", None)
    return REFERENCE_ADAPTER if isinstance(config, dict) and REFERENCE_ADAPTER in config else None


def reference_for(model: torch.nn.Module, tokenizer: Any, *, cache_dir: str | os.PathLike | None = None,
                  batch_size: int = 16, shard_size: int = 512, on_corrupt: str = "recompute", per_token: bool = False,
                  source: str | None = None, model_name: str | None = None, engine_managed: bool = False,
                  progress: bool = True, packing: bool = True, audit_samples: int = DEFAULT_SAMPLES
                  ) -> CachedReference:
    """A cached reference whose misses ``model`` computes: the model itself, or for a PEFT policy its reference
    mode (the frozen :data:`REFERENCE_ADAPTER` if it has one, else adapters disabled).

    Identifies the reference (hashes its weights): in a distributed run every rank must call it. ``packing``:
    score misses in the shared-prompt packed layout where the model takes it. ``audit_samples``: cache hits
    scored again by ``model`` and compared at each prefetch (:mod:`align.reference.audit`; 0: off).
    """
    live = LiveReference(model, tokenizer, adapter=reference_adapter(model), batch_size=batch_size,
                         per_token=per_token, engine_managed=engine_managed, packing=packing)
    info = {"model": model_name or getattr(getattr(model, "config", None), "_name_or_path", None),
            "tokenizer": getattr(tokenizer, "name_or_path", None)}
    return CachedReference.for_model(cache_dir or default_cache_root(), live, on_corrupt=on_corrupt,
                                     shard_size=shard_size, source=source, info=info, progress=progress,
                                     audit_samples=audit_samples)
