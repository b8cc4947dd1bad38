"""Rank held-out responses by a policy's log-probs or implicit reward and report accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from align.data.tokenize import TokenizedList
from align.forward import score_lists
from align.metrics import list_metrics, pairwise_accuracy


def list_tensors(lists: Sequence[TokenizedList]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels, mask and response lengths ``[n, K_max]`` of tokenized lists."""
    k = max((len(t.response_ids) for t in lists), default=1)
    labels, mask, lengths = torch.zeros(len(lists), k), torch.zeros(len(lists), k, dtype=torch.bool), torch.ones(
        len(lists), k)
    for i, t in enumerate(lists):
        n = len(t.response_ids)
        labels[i, :n], mask[i, :n] = torch.tensor(t.scores), True
        lengths[i, :n] = torch.tensor([len(r) for r in t.response_ids], dtype=torch.float32)
    return labels, mask, lengths


def ranking_report(policy_logps: torch.Tensor, lists: Sequence[TokenizedList],
                   ref_logps: torch.Tensor | None = None) -> dict[str, Any]:
    """Pairwise accuracy and list metrics (exact match, Kendall τ, NDCG) of every scorer we can form. The
    headline keys are the implicit reward log π − log π_ref when a reference is given, else the summed
    log-prob (RewardBench's conventions)."""
    labels, mask, lengths = list_tensors(lists)
    policy_logps = torch.nan_to_num(policy_logps)
    scorers = {"logprob": policy_logps, "logprob_mean": policy_logps / lengths}
    if ref_logps is not None:
        scorers["implicit"] = policy_logps - torch.nan_to_num(ref_logps)
    by = {name: {**pairwise_accuracy(s, labels, mask), **list_metrics(s, labels, mask)} for name, s in scorers.items()}
    scorer = "implicit" if ref_logps is not None else "logprob"
    return {"scorer": scorer, **by[scorer], "n_lists": len(lists), "by_scorer": by}


def evaluate_policy(model: torch.nn.Module, lists: Sequence[TokenizedList], *, ref_logps: torch.Tensor | None = None,
                    batch_size: int = 16, pad_token_id: int = 0, progress: bool = True) -> dict[str, Any]:
    """Score every response of ``lists`` with ``model`` and return :func:`ranking_report`."""
    logps, _ = score_lists(model, lists, batch_size=batch_size, pad_token_id=pad_token_id, progress=progress,
                           desc="eval")
    return ranking_report(logps, lists, ref_logps)
