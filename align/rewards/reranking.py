"""NDCG reward for training a listwise reranker: the completion is a ranking of candidate ids.

Format: the candidate ids (0-based, as numbered in the prompt), best first, each optionally in brackets and
separated by ``>``, commas or whitespace; the canonical form is RankGPT's ``"[2] > [0] > [1]"`` (Sun et al.
2023, "Is ChatGPT Good at Search?"), and ``"2 0 1"`` or ``"2, 0, 1"`` read the same. Text from an end-of-turn
marker on is ignored. The output must be a full permutation of ``0..n-1``.

Reward: NDCG@k of that order against the gold relevance, with the convention of :mod:`align.ranking_metrics`:
gain 2^rel − 1, discount 1 / log2(1 + rank) for 1-based rank ≤ k; IDCG from the relevance sorted descending;
a list whose ideal DCG is 0 (every relevance 0) scores 1. A malformed output scores ``format_penalty``
and its reason is counted.

:func:`ndcg_reward` is a reward function (TRL's signature; the prompt rows carry a ``relevance`` column);
:func:`ndcg_score` scores one completion.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from align.errors import RewardError
from align.ranking_metrics import _dcg
from align.rewards.text import completion_text

END_MARKERS = ("<|im_end|>", "<|endoftext|>")
_ID = re.compile(r"\[(\d+)\]|(\d+)")
MALFORMED = ("empty", "garbage", "unknown_id", "duplicate", "missing")  # the reasons parse_ranking returns


def parse_ranking(completion: str, n: int) -> tuple[list[int] | None, str | None]:
    """``(order, None)`` for a well-formed permutation of ``0..n-1``, else ``(None, reason)`` with a reason of
    :data:`MALFORMED` (checked in that order)."""
    for marker in END_MARKERS:
        completion = completion.split(marker, 1)[0]
    tokens = re.sub(r"[>,]", " ", completion).split()
    if not tokens:
        return None, "empty"
    matches = [_ID.fullmatch(t) for t in tokens]
    if not all(matches):
        return None, "garbage"
    order = [int(m.group(1) or m.group(2)) for m in matches]
    if any(i >= n for i in order):
        return None, "unknown_id"
    if len(set(order)) != len(order):
        return None, "duplicate"
    if len(order) != n:
        return None, "missing"
    return order, None


def ndcg_at_k(order: Sequence[int], relevance: Sequence[float], k: int | None = None) -> float:
    """NDCG@k of ``order`` (candidate ids, best first) under ``relevance`` (one value per candidate);
    ``k=None`` is the whole list."""
    gain = 2.0 ** torch.tensor([list(relevance)], dtype=torch.float64) - 1.0
    ranked = torch.tensor([list(order)])
    ideal = torch.sort(gain, dim=1, descending=True).indices
    dcg, idcg = _dcg(gain, ranked, k).item(), _dcg(gain, ideal, k).item()
    return dcg / idcg if idcg > 0 else 1.0


def ndcg_score(completion: str, relevance: Sequence[float], k: int | None = None, format_penalty: float = 0.0,
               counts: Counter[str] | None = None) -> float:
    """NDCG@k of the ranking in one ``completion`` (format in the module docstring), or ``format_penalty`` when it
    is malformed; then ``counts[reason]`` (if given) is incremented."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be >= 1, got {k}")
    order, reason = parse_ranking(completion, len(relevance))
    if order is None:
        if counts is not None:
            counts[reason] += 1
        return format_penalty
    return ndcg_at_k(order, relevance, k)


def ndcg_reward(prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                relevance: Sequence[Sequence[float]] | None = None, k: int | Sequence[int | None] | None = None,
                format_penalty: float = 0.0, **kwargs: Any) -> list[float]:
    """A reward function with TRL's signature: NDCG@k of each completion's ranking against the ``relevance``
    column of its prompt's row (one list of gold relevance values per completion, as TRL passes columns).

    ``k`` is None (the whole list), one int, or a per-completion column named ``k``; malformed outputs score
    ``format_penalty``. A recipe names it ``function: align.rewards:ndcg_reward``; for another k or penalty wrap it,
    e.g. ``functools.partial(ndcg_reward, k=5, format_penalty=-1.0)``. Plain text or chat completions.
    """
    if relevance is None:
        raise RewardError("ndcg_reward needs the dataset column 'relevance' (the gold relevance of each candidate, "
                         "in the order the prompt numbers them)")
    if len(relevance) != len(completions):
        raise RewardError(f"ndcg_reward: {len(relevance)} relevance lists for {len(completions)} completions")
    ks = list(k) if isinstance(k, (list, tuple)) else [k] * len(completions)
    if len(ks) != len(completions):
        raise RewardError(f"ndcg_reward: {len(ks)} values of k for {len(completions)} completions")
    return [ndcg_score(completion_text(c), [float(x) for x in rel], kk, format_penalty)
            for c, rel, kk in zip(completions, relevance, ks)]
