"""Ranking metrics over ``[n, K]`` scores of lists (pure torch). Higher label = better; masked slots ignored.

- pairwise accuracy: over every labelled pair (ties in labels excluded); strict (a score tie is wrong, as
  RewardBench) and ties-correct (Chen et al. 2024). Pooled over pairs, so a list of K counts K(K-1)/2 times.
- list exact match: a list counts when every one of its labelled pairs is ordered strictly right, i.e. the
  score ranking equals the label ranking up to label ties. Lists whose labels are all tied are left out.
- top-1 accuracy: the highest-scored response has the best label. A score tie at the top counts as the worst
  of the tied responses.
- Kendall τ-b between scores and labels per list, mean over lists with at least one labelled pair; a list
  whose scores are all tied gets τ = 0.
- NDCG (whole list) and NDCG@k with graded relevance ψ (the LiPO label: fraction of the list ranked below,
  ties half) and gain 2^ψ − 1. Score ties are broken pessimistically (worst label first): data is often stored
  best-first, and breaking ties by position would give a constant scorer a perfect NDCG.

Every list metric is a mean of per-list values (:func:`per_list_metrics`), so a bootstrap over lists
(:mod:`align.evaluation.bootstrap`) resamples exactly what the point estimate averages.
"""

from __future__ import annotations

import math

import torch

LIST_KEYS: tuple[str, ...] = ("list_exact_match", "top1_accuracy", "kendall_tau", "ndcg", "ndcg_at_k")


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x[:, :, None] - x[:, None, :])  # [n, K, K]


def _dcg(gain: torch.Tensor, order: torch.Tensor, k: int | None) -> torch.Tensor:
    discount = 1.0 / torch.log2(torch.arange(gain.shape[1], dtype=torch.float64) + 2.0)
    if k is not None:
        discount[k:] = 0.0
    return (gain.gather(1, order) * discount).sum(-1)


def per_list_metrics(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                     ndcg_k: int | None = None) -> dict[str, torch.Tensor]:
    """Per-list ``[n]`` values: ``n_pairs``, ``correct``, ``correct_ties`` (pair counts), ``has_pair`` (bool) and
    the list metrics of :data:`LIST_KEYS` (meaningful where ``has_pair``). ``ndcg_k=None`` makes NDCG@k the
    whole-list NDCG."""
    if scores.shape != labels.shape or scores.shape != mask.shape or scores.dim() != 2:
        raise ValueError(f"scores, labels and mask must be [n, K] of one shape; got {tuple(scores.shape)}, "
                         f"{tuple(labels.shape)}, {tuple(mask.shape)}")
    if ndcg_k is not None and ndcg_k < 1:
        raise ValueError(f"ndcg_k must be >= 1, got {ndcg_k}")
    mask = mask.bool()
    scores = torch.where(mask, scores.double(), 0.0)
    labels = torch.where(mask, labels.double(), 0.0)
    both = (mask[:, :, None] & mask[:, None, :]).triu(1)  # each unordered pair once
    ls, ss = _sign(labels), _sign(scores)
    labelled = (ls != 0) & both
    n_pairs = labelled.sum(dim=(1, 2))
    has_pair = n_pairs > 0
    right = labelled & (ls == ss)
    # torch.sign(nan) is 0, which would read as a score tie: a pair with a NaN score is never right
    nan_pair = torch.isnan(scores[:, :, None] - scores[:, None, :])
    correct = right.sum(dim=(1, 2))
    correct_ties = (right | (labelled & (ss == 0) & ~nan_pair)).sum(dim=(1, 2))
    exact = (correct == n_pairs).double()
    # Kendall tau-b = (C - D) / sqrt((n0 - ties_labels) (n0 - ties_scores))
    concord = torch.nan_to_num(ls * ss * both).sum(dim=(1, 2))
    denom = (n_pairs.double() * ((ss != 0) & both).sum(dim=(1, 2)).double()).sqrt()
    tau = torch.where(denom > 0, concord / denom.clamp(min=1e-12), torch.zeros_like(denom))
    # graded relevance psi and pessimistic tie-breaking: sort worst label first, then stably by score
    k_valid = mask.sum(-1, keepdim=True).double()
    psi = ((ls > 0).double() + 0.5 * (ls == 0).double()) * (mask[:, :, None] & mask[:, None, :])
    psi = torch.where(mask, psi.sum(-1) / k_valid.clamp(min=1), 0.0)
    gain = torch.where(mask, 2.0**psi - 1.0, 0.0)
    worst_first = torch.sort(torch.where(mask, labels, math.inf), dim=1, stable=True).indices
    keyed = torch.nan_to_num(torch.where(mask, scores, -math.inf), nan=-math.inf).gather(1, worst_first)
    by_score = worst_first.gather(1, torch.sort(keyed, dim=1, descending=True, stable=True).indices)
    ideal = torch.sort(gain, dim=1, descending=True).indices
    out = {"n_pairs": n_pairs, "correct": correct, "correct_ties": correct_ties, "has_pair": has_pair,
           "list_exact_match": exact, "kendall_tau": tau}
    for key, k in (("ndcg", None), ("ndcg_at_k", ndcg_k)):
        dcg, idcg = _dcg(gain, by_score, k), _dcg(gain, ideal, k)
        out[key] = torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.ones_like(idcg))
    best = torch.where(mask, labels, -math.inf).amax(-1)
    out["top1_accuracy"] = (labels.gather(1, by_score[:, :1]).squeeze(1) == best).double()
    return out


def aggregate(per_list: dict[str, torch.Tensor], weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Pairwise accuracies (pooled over pairs) and list metrics (mean over lists with a labelled pair) from
    :func:`per_list_metrics`. ``weights`` ``[n]`` or ``[R, n]`` (bootstrap counts) weight the lists; values
    are ``[]`` or ``[R]``, NaN where nothing is counted."""
    n = per_list["n_pairs"].shape[0]
    w = torch.ones(n, dtype=torch.float64) if weights is None else weights.double()

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        top, bottom = (w * num.double()).sum(-1), (w * den.double()).sum(-1)
        return torch.where(bottom > 0, top / bottom.clamp(min=1e-300), torch.full_like(top, math.nan))

    has = per_list["has_pair"].double()
    out = {"pairwise_accuracy": ratio(per_list["correct"], per_list["n_pairs"]),
           "pairwise_accuracy_ties_correct": ratio(per_list["correct_ties"], per_list["n_pairs"])}
    for key in LIST_KEYS:
        out[key] = ratio(torch.nan_to_num(per_list[key]) * has, has)
    return out


def pairwise_accuracy(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> dict[str, float | int]:
    """``pairwise_accuracy`` (strict), ``pairwise_accuracy_ties_correct`` and ``n_pairs``."""
    per = per_list_metrics(scores, labels, mask)
    agg = aggregate(per)
    return {"pairwise_accuracy": agg["pairwise_accuracy"].item(),
            "pairwise_accuracy_ties_correct": agg["pairwise_accuracy_ties_correct"].item(),
            "n_pairs": int(per["n_pairs"].sum())}


def list_metrics(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                 ndcg_k: int | None = None) -> dict[str, float]:
    """``list_exact_match``, ``top1_accuracy``, ``kendall_tau``, ``ndcg``, ``ndcg_at_k`` (means over lists with a
    labelled pair) and ``n_lists_ranked``."""
    per = per_list_metrics(scores, labels, mask, ndcg_k)
    agg = aggregate(per)
    return {**{k: agg[k].item() for k in LIST_KEYS}, "n_lists_ranked": int(per["has_pair"].sum())}
