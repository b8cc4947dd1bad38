"""Reward functions for the online tests: cheap rules whose values differ between almost any two samples, so that
every group carries a preference whatever a tiny untrained model writes."""

from __future__ import annotations

from typing import Any

from align.rewards.text import completion_text


def length(prompts: list, completions: list, **columns: Any) -> list[float]:
    """The completion's length in characters (TRL reward-function signature)."""
    return [float(len(completion_text(c))) for c in completions]


def short(prompts: list, completions: list, **columns: Any) -> list[float]:
    """Minus the completion's length in characters: the policy can raise it fast by ending sooner."""
    return [-float(len(completion_text(c))) for c in completions]


def constant(prompts: list, completions: list, **columns: Any) -> list[float]:
    """1.0 for every completion: every group has zero variance."""
    return [1.0] * len(completions)


def length_distinct(prompts: list, completions: list, **columns: Any) -> list[float]:
    """The length in characters plus a fraction in [0, 1) from a checksum of the text: two different completions
    (almost surely) never tie, so every group of distinct samples carries a preference."""
    import zlib

    texts = [completion_text(c) for c in completions]
    return [float(len(t)) + zlib.crc32(t.encode()) / 2**32 for t in texts]
