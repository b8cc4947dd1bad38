"""Ranking metrics over ``[n, K]`` scores of lists (pure torch)."""

from __future__ import annotations

import torch

from align.losses.pairs import preference_pairs


def pairwise_accuracy(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> dict[str, float | int]:
    """Fraction of labelled pairs (ties in labels excluded) that ``scores`` order the same way.

    Returns ``pairwise_accuracy`` (strict: a tie in score is wrong, as RewardBench), ``pairwise_accuracy_ties_correct``
    (a tie counts as right, as Chen et al. 2024) and ``n_pairs``.
    """
    pairs = preference_pairs(labels, mask)
    if len(pairs) == 0:
        return {"pairwise_accuracy": float("nan"), "pairwise_accuracy_ties_correct": float("nan"), "n_pairs": 0}
    w, lo = pairs.take(scores.double())
    return {
        "pairwise_accuracy": (w > lo).double().mean().item(),
        "pairwise_accuracy_ties_correct": (w >= lo).double().mean().item(),
        "n_pairs": len(pairs),
    }
