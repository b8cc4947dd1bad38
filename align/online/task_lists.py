"""Ranked lists of a model's own samples on a built-in task: sample K completions of each prompt (seeded), then rank
them by the task's true score (:func:`align.tasks.preferences.ranked_rows`). The sampling half of
:mod:`align.tasks.preferences`, which stays free of models."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from align.data.prompts import TokenizedPrompt
from align.online.generation import seeded_sample
from align.rewards.grouping import Build
from align.tasks.preferences import DEFAULT_TEMPERATURE, ranked_rows


def sample_texts(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[TokenizedPrompt], k: int, *,
                 max_new_tokens: int, sampling_temperature: float = 1.0, seed: int = 0, batch_size: int = 64
                 ) -> list[list[str]]:
    """``k`` completions of each prompt sampled from ``model`` (seeded; the global RNG is left as it was)."""
    s = seeded_sample(model, tokenizer, [p.prompt_ids for p in prompts], n=k, max_new_tokens=max_new_tokens,
                      temperature=sampling_temperature, batch_size=batch_size, seed=seed)
    return s.texts


def prompt_rows(prompts: Sequence[TokenizedPrompt]) -> list[dict[str, Any]]:
    """The task rows behind tokenized prompts (``prompt`` and the other columns, e.g. ``answer``)."""
    return [{"prompt": p.example.prompt, **p.example.columns} for p in prompts]


def sample_ranked_rows(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[TokenizedPrompt], task: str, k: int,
                       *, max_new_tokens: int, sampling_temperature: float = 1.0, build: Build = "lists",
                       temperature: float = DEFAULT_TEMPERATURE, seed: int = 0, batch_size: int = 64
                       ) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Sample ``k`` completions of each prompt from ``model`` (seeded) and :func:`ranked_rows` them.
    ``prompts`` carry the task's rows (their ``example``: prompt and ``answer``)."""
    texts = sample_texts(model, tokenizer, prompts, k, max_new_tokens=max_new_tokens,
                         sampling_temperature=sampling_temperature, seed=seed, batch_size=batch_size)
    return ranked_rows(prompt_rows(prompts), texts, task, build, temperature)
