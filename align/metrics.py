"""Ranking metrics over ``[n, K]`` scores of lists (pure torch). Higher label = better; masked slots ignored.

- pairwise accuracy: over every labelled pair (ties in labels excluded); strict (a score tie is wrong, as
  RewardBench) and ties-correct (Chen et al. 2024).
- list exact match: a list counts when every one of its labelled pairs is ordered strictly right, i.e. the
  score ranking equals the label ranking up to label ties. Lists whose labels are all tied are left out.
- Kendall τ-b between scores and labels per list, mean over lists with at least one labelled pair; a list
  whose scores are all tied gets τ = 0.
- NDCG over the whole list with graded relevance ψ (the LiPO label: fraction of the list ranked below, ties
  half) and gain 2^ψ − 1. Score ties are broken pessimistically (worst label first): data is often stored
  best-first, and breaking ties by position would give a constant scorer a perfect NDCG.
"""

from __future__ import annotations

import math

import torch

from align.losses.pairs import preference_pairs


def pairwise_accuracy(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> dict[str, float | int]:
    """``pairwise_accuracy`` (strict), ``pairwise_accuracy_ties_correct`` and ``n_pairs``."""
    pairs = preference_pairs(labels, mask)
    if len(pairs) == 0:
        return {"pairwise_accuracy": float("nan"), "pairwise_accuracy_ties_correct": float("nan"), "n_pairs": 0}
    w, lo = pairs.take(scores.double())
    return {
        "pairwise_accuracy": (w > lo).double().mean().item(),
        "pairwise_accuracy_ties_correct": (w >= lo).double().mean().item(),
        "n_pairs": len(pairs),
    }


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x[:, :, None] - x[:, None, :])  # [n, K, K]


def list_metrics(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """``list_exact_match``, ``kendall_tau`` and ``ndcg`` (means over lists with a labelled pair)."""
    mask = mask.bool()
    scores = torch.where(mask, scores.double(), 0.0)
    labels = torch.where(mask, labels.double(), 0.0)
    both = (mask[:, :, None] & mask[:, None, :]).triu(1)  # each unordered pair once
    ls, ss = _sign(labels), _sign(scores)
    has_pair = ((ls != 0) & both).any(dim=(1, 2))
    n = int(has_pair.sum())
    if n == 0:
        return {"list_exact_match": math.nan, "kendall_tau": math.nan, "ndcg": math.nan, "n_lists_ranked": 0}
    # exact match: no labelled pair ordered wrongly or tied by the scores
    wrong = ((ls != 0) & (ls != ss) & both).any(dim=(1, 2))
    exact = (~wrong & has_pair).double().sum() / n
    # Kendall tau-b = (C - D) / sqrt((n0 - ties_labels) (n0 - ties_scores))
    concord = (ls * ss * both).sum(dim=(1, 2))
    n_lab = ((ls != 0) & both).sum(dim=(1, 2)).double()
    n_sco = ((ss != 0) & both).sum(dim=(1, 2)).double()
    denom = (n_lab * n_sco).sqrt()
    tau = torch.where(denom > 0, concord / denom.clamp(min=1e-12), torch.zeros_like(denom))
    # NDCG with relevance psi
    k_valid = mask.sum(-1, keepdim=True).double()
    psi = ((ls > 0).double() + 0.5 * ((ls == 0).double())) * (mask[:, :, None] & mask[:, None, :])
    psi = torch.where(mask, psi.sum(-1) / k_valid.clamp(min=1), 0.0)
    gain = torch.where(mask, 2.0**psi - 1.0, 0.0)
    discount = 1.0 / torch.log2(torch.arange(scores.shape[1], dtype=torch.float64) + 2.0)
    worst_first = torch.sort(torch.where(mask, labels, math.inf), dim=1, stable=True).indices
    keyed = torch.where(mask, scores, -math.inf).gather(1, worst_first)
    by_score = worst_first.gather(1, torch.sort(keyed, dim=1, descending=True, stable=True).indices)
    dcg = (gain.gather(1, by_score) * discount).sum(-1)
    idcg = (torch.sort(gain, dim=1, descending=True).values * discount).sum(-1)
    ndcg = torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.ones_like(idcg))
    return {
        "list_exact_match": exact.item(),
        "kendall_tau": tau[has_pair].mean().item(),
        "ndcg": ndcg[has_pair].mean().item(),
        "n_lists_ranked": n,
    }
