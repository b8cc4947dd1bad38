"""Rank held-out responses by one or more scorers and report accuracy with bootstrap intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from align.data.tokenize import TokenizedList
from align.evaluation.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, bootstrap_weights, percentile_interval
from align.forward import sharded_scores
from align.ranking_metrics import LIST_KEYS, aggregate, per_list_metrics

METRIC_KEYS: tuple[str, ...] = ("pairwise_accuracy", "pairwise_accuracy_ties_correct", *LIST_KEYS)


def list_tensors(lists: Sequence[TokenizedList]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels, mask and response lengths ``[n, K_max]`` of tokenized lists."""
    k = max((len(t.response_ids) for t in lists), default=1)
    labels, mask, lengths = torch.zeros(len(lists), k), torch.zeros(len(lists), k, dtype=torch.bool), torch.ones(
        len(lists), k)
    for i, t in enumerate(lists):
        n = len(t.response_ids)
        labels[i, :n], mask[i, :n] = torch.tensor(t.labels), True
        lengths[i, :n] = torch.tensor([len(r) for r in t.response_ids], dtype=torch.float32)
    return labels, mask, lengths


def score_report(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, *,
                 weights: torch.Tensor | None = None, ndcg_k: int | None = None,
                 level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Every metric of :data:`METRIC_KEYS` for one scorer, ``n_pairs``, ``n_lists_ranked``, and with bootstrap
    ``weights`` (``[R, n]``, :func:`bootstrap_weights`) a ``ci`` object: metric → ``[lower, upper]``."""
    per = per_list_metrics(scores, labels, mask, ndcg_k)
    point = aggregate(per)
    out: dict[str, Any] = {k: point[k].item() for k in METRIC_KEYS}
    out.update(n_pairs=int(per["n_pairs"].sum()), n_lists_ranked=int(per["has_pair"].sum()))
    out["ci"] = {}  # no resamples: no intervals (not a default set of them)
    if weights is not None:
        boot = aggregate(per, weights)
        out["ci"] = {k: percentile_interval(boot[k], level) for k in METRIC_KEYS}
    return out


def report_scores(scorers: dict[str, torch.Tensor], headline: str, lists: Sequence[TokenizedList], *,
                  ndcg_k: int | None = None, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                  level: float = DEFAULT_LEVEL, weights: torch.Tensor | None = None) -> dict[str, Any]:
    """:func:`score_report` of each scorer (``[n, K]``, NaN-free on valid slots) under ``by_scorer``, the
    ``headline`` one's keys at the top. All scorers share one set of bootstrap resamples: ``weights`` if given,
    else drawn from ``resamples`` and ``seed`` (0 resamples: no CIs)."""
    labels, mask, _ = list_tensors(lists)
    if weights is None and resamples:
        weights = bootstrap_weights(len(lists), resamples, seed)
    by = {name: score_report(s, labels, mask, weights=weights, ndcg_k=ndcg_k, level=level)
          for name, s in scorers.items()}
    out = {"scorer": headline, **by[headline], "n_lists": len(lists), "ndcg_k": ndcg_k, "by_scorer": by}
    partner = LENGTH_NORMALIZED.get(headline)
    if partner in by:  # the headline's per-token form, beside it: a summed score favours long responses
        out["length_normalized"] = {"scorer": partner, **by[partner]}
    return out


# The per-token (length-normalised) form of each summed scorer of :func:`policy_scorers`.
LENGTH_NORMALIZED: dict[str, str] = {"logprob": "logprob_mean", "implicit": "implicit_mean"}


def policy_scorers(policy_logps: torch.Tensor, lengths: torch.Tensor,
                   ref_logps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Summed log-prob, per-token mean log-prob and, with a reference, the implicit reward log π − log π_ref
    (RewardBench's DPO convention: no β) and its length-normalised form (log π − log π_ref) / |y|, the s_i of
    ``sigmoid_norm`` DPO and of LiPO / MMPO with ``length_normalize`` (docs/algorithms.md §1)."""
    # Infinite values become NaN: a non-finite score is never a tie (the metrics count such pairs as wrong).
    logps = torch.where(torch.isinf(policy_logps), torch.full_like(policy_logps, math.nan), policy_logps)
    lengths = lengths.to(logps.dtype).clamp(min=1)
    out = {"logprob": logps, "logprob_mean": logps / lengths}
    if ref_logps is not None:
        out["implicit"] = logps - ref_logps
        out["implicit_mean"] = out["implicit"] / lengths
    return out


def ranking_report(policy_logps: torch.Tensor, lists: Sequence[TokenizedList],
                   ref_logps: torch.Tensor | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`report_scores` over :func:`policy_scorers`; the headline is the implicit reward when a reference
    is given, else the summed log-prob."""
    _, _, lengths = list_tensors(lists)
    scorers = policy_scorers(policy_logps, lengths, ref_logps)
    return report_scores(scorers, "implicit" if ref_logps is not None else "logprob", lists, **kwargs)


def evaluate_policy(model: torch.nn.Module, lists: Sequence[TokenizedList], *, ref_logps: torch.Tensor | None = None,
                    batch_size: int = 16, pad_token_id: int = 0, progress: bool = True, engine_managed: bool = False,
                    packing: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Score every response of ``lists`` with ``model`` and return :func:`ranking_report`. In a distributed run the
    lists are split across ranks (every rank must call it) and every rank gets the whole report. ``packing``: the
    shared-prompt packed layout where the model takes it."""
    logps = sharded_scores(model, lists, batch_size=batch_size, pad_token_id=pad_token_id, progress=progress,
                           engine_managed=engine_managed, desc="eval", packing=packing)
    return ranking_report(logps, lists, ref_logps, **kwargs)


def evaluate_reward_model(model: torch.nn.Module, lists: Sequence[TokenizedList], *, batch_size: int = 16,
                          pad_token_id: int = 0, progress: bool = True, engine_managed: bool = False,
                          **kwargs: Any) -> dict[str, Any]:
    """Score every response of ``lists`` with a reward model and report its ranking (scorer ``reward-model``);
    split across ranks as :func:`evaluate_policy`."""
    rewards = sharded_scores(model, lists, reward=True, batch_size=batch_size, pad_token_id=pad_token_id,
                             progress=progress, engine_managed=engine_managed, desc="rewards")
    rewards = torch.where(torch.isinf(rewards), torch.full_like(rewards, math.nan), rewards)
    return report_scores({"reward-model": rewards}, "reward-model", lists, **kwargs)
