"""Ground-truth preference data from a built-in task: ranked lists of a model's own samples, ranked by the task's
true graded score, with the true preference probability of every pair.

A list is what the offline algorithms train on (``{"prompt", "responses", "scores"}``, the data layer's ranked
format), made as the on-policy papers make theirs: K samples of one prompt from the SFT policy, ranked by a reward,
except that here the reward is the truth. Because each response has a true score s, the probability that a
population of raters prefers a to b is known under a Bradley–Terry model (:func:`align.tasks.preference_probability`):
P(a ≻ b) = σ((s_a − s_b) / T). T is a stated temperature (:data:`DEFAULT_TEMPERATURE`); it sets how noisy the
raters are, and the calibration of a trained model's σ(β·h) is measured against these probabilities
(:func:`align.evaluation.calibration.ece_against`). Sampling the lists from a model is
:mod:`align.online.task_lists` (the sampling layer, above the tasks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from align.rewards.grouping import Build, rank_group
from align.tasks import task_module
from align.tasks.common import preference_probability

DEFAULT_TEMPERATURE = 0.1  # on the sort task's [0, 1] score: one more position right (1/3 of 3) → P ≈ 0.97


def true_preferences(scores: Sequence[float] | torch.Tensor, temperature: float = DEFAULT_TEMPERATURE
                     ) -> torch.Tensor:
    """``[K, K]`` matrix of P(response i ≻ response j) = σ((s_i − s_j) / T); the diagonal is 0.5."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    return preference_probability(s[:, None], s[None, :], temperature)


def ranked_row(row: dict[str, Any], completions: Sequence[str], task: str, build: Build = "lists",
               temperature: float = DEFAULT_TEMPERATURE) -> tuple[dict[str, Any] | None, str | None]:
    """One prompt's completions as a ranked row, or ``(None, reason)`` when they carry no preference.

    Empty completions are dropped and repeated texts kept once; the rest are sorted by the task's true ``score``
    (best first; equal scores keep sampling order). ``build="best_worst"`` keeps only the first and the last.
    The row keeps the task row's other fields (``answer``) and adds ``preference_temperature``.
    Reasons: ``fewer than 2 distinct completions``, ``all scores equal``.
    """
    score = task_module(task).score
    ranked, reason = rank_group(completions, [score(c.strip(), row) for c in completions], build, label="scores")
    if ranked is None:
        return None, reason
    extra = {k: v for k, v in row.items() if k not in ("prompt", "responses", "scores")}
    return {"prompt": row["prompt"], "responses": [t for t, _ in ranked], "scores": [s for _, s in ranked],
            **extra, "preference_temperature": temperature}, None


def ranked_rows(rows: Sequence[dict[str, Any]], completions: Sequence[Sequence[str]], task: str,
                build: Build = "lists", temperature: float = DEFAULT_TEMPERATURE
                ) -> tuple[list[dict[str, Any]], Counter[str]]:
    """:func:`ranked_row` of every prompt; the rows kept and the count of each reason a prompt was left out."""
    if len(rows) != len(completions):
        raise ValueError(f"{len(rows)} rows but {len(completions)} groups of completions")
    out, skipped = [], Counter()
    for row, group in zip(rows, completions):
        r, reason = ranked_row(row, group, task, build, temperature)
        if r is None:
            skipped[reason] += 1
        else:
            out.append(r)
    return out, skipped


def true_pair_probabilities(row: dict[str, Any]) -> list[tuple[int, int, float]]:
    """``(i, j, P(i ≻ j))`` for every pair of a ranked row with s_i > s_j (ties left out, as the losses do), at
    the row's ``preference_temperature``."""
    p = true_preferences(row["scores"], row.get("preference_temperature", DEFAULT_TEMPERATURE))
    s = row["scores"]
    return [(i, j, float(p[i, j])) for i in range(len(s)) for j in range(len(s)) if s[i] > s[j]]
