"""The reward module of recipe.yaml beside it: ``function: myrewards:sorted_reward`` finds it here, whatever the
working directory (align looks beside the recipe first, then on the import path)."""

from __future__ import annotations

from typing import Any


def sorted_reward(prompts: list, completions: list, answer: list, **kwargs: Any) -> list[float | None]:
    """TRL's reward-function signature: the fraction of positions where the completion's numbers equal the sorted
    answer; None (not scored) for a completion with no number at all."""
    out: list[float | None] = []
    for completion, target in zip(completions, answer):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        got, want = text.split(), target.split()
        if not any(t.isdigit() for t in got):
            out.append(None)
            continue
        out.append(sum(g == w for g, w in zip(got, want)) / len(want))
    return out
