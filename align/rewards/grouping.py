"""A group of sampled completions as a ranked list: the rows ``align iterate`` and the ground-truth task train on."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Build = Literal["lists", "best_worst"]


def rank_group(texts: Sequence[str], values: Sequence[float], build: Build = "lists", label: str = "rewards"
               ) -> tuple[list[tuple[str, float]] | None, str | None]:
    """``(text, value)`` pairs best first, or ``(None, reason)`` when the group carries no preference.

    Empty completions and NaN values are dropped; a repeated text (after stripping) is kept once with its best
    value; equal values keep sampling order. ``build="best_worst"`` keeps only the first and the last. Reasons:
    ``fewer than 2 distinct completions`` and ``all {label} equal``.
    """
    if build not in ("lists", "best_worst"):
        raise ValueError(f"build must be 'lists' or 'best_worst', got {build!r}")
    best: dict[str, float] = {}
    for text, value in zip(texts, values):
        t = text.strip()
        if t and not math.isnan(value):
            best[t] = max(value, best.get(t, -math.inf))
    if len(best) < 2:
        return None, "fewer than 2 distinct completions"
    if len(set(best.values())) < 2:
        return None, f"all {label} equal"
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    return ([ranked[0], ranked[-1]] if build == "best_worst" else ranked), None
