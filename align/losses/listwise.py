"""LiPO and the listwise family over ``[B, K]`` scores: the learning-to-rank losses, LiPO's config and registry entry.

Liu et al., "LiPO: Listwise Preference Optimization through Learning-to-Rank" (arXiv 2402.01878, NAACL 2025).
A list of K responses has labels ψ ∈ [0, 1]^K (higher is better) and scores s_i = β·(log π_θ(y_i) - log π_ref(y_i)),
from :meth:`ListScores.implicit_rewards` (:func:`lipo_loss`). With pairs (i, j) such that ψ_i > ψ_j, per list:
    pair_logistic  Σ log(1 + e^{-(s_i - s_j)})                      (K = 2 is DPO)
    pair_hinge     Σ max(0, 1 - (s_i - s_j))                        (K = 2 is SLiC-norm)
    lambda         Σ Δ_ij log(1 + e^{-(s_i - s_j)})                  (LiPO-λ, the LambdaLoss objective)
    list_mle       -Σ_k [s_τ(k) - log Σ_{j≥k} e^{s_τ(j)}]           (Plackett-Luce; DPO-PL / PRO), τ sorts ψ descending
    softmax        -Σ_k (ψ_k / Σ_j ψ_j) log softmax(s)_k             (ListNet)
with the DCG lambda weight Δ_ij = |G_i - G_j|·|1/D(τ(i)) - 1/D(τ(j))|, G = 2^ψ - 1, D(r) = log2(1 + r), τ(i) the
1-based rank of i under the model's *current* scores s (descending). Δ carries no gradient.

Normalisation. ``"sum"`` is the paper's formula: each list's sum over its pairs, averaged over lists (count = number
of lists). ``"rax"`` is the paper's reference code, google/rax ``pairwise_logistic_loss(lambdaweight_fn=
dcg_lambdaweight)``: Δ is multiplied by the list size and the loss is the mean over every valid pair of the batch
(count = number of pairs). rax multiplies by ``ranks.shape[-1]``, the *padded* size; we use each list's number of
valid slots, so padding never changes the loss (the two agree on unpadded batches).

Conventions (docs/algorithms.md §2). Ties in ψ form no pair; padded slots form no pair and rank last. A list with no
pair (all labels equal, or fewer than two valid slots) contributes exactly 0 under every loss type — for list_mle
and softmax too, whose formulas alone would not give 0. list_mle breaks ties in ψ by slot order (a stable sort); a tie
changes which Plackett-Luce order is scored, so lists with ties are better served by the pairwise types.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from align.losses.base import ListScores, LossOutput, LossSpec
from align.losses.reward_metrics import list_reward_metrics
from align.validation import POSITIVE, check_fields

ListwiseLossType = Literal["lambda", "pair_logistic", "pair_hinge", "list_mle", "softmax"]
LISTWISE_LOSS_TYPES: tuple[str, ...] = ("lambda", "pair_logistic", "pair_hinge", "list_mle", "softmax")
LISTWISE_NORMALIZATIONS: tuple[str, ...] = ("sum", "rax")
LambdaWeights = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LiPOLossConfig:
    """LiPO settings.

    Attributes:
        beta: β; 0.05 as in the paper.
        loss_type: ``lambda`` (LiPO-λ, default), ``pair_logistic``, ``pair_hinge``, ``list_mle``, ``softmax``.
        normalization: ``sum`` (the paper's formula: per-list sum over pairs, mean over lists) or ``rax`` (the
            reference code: λ-weights × list size, mean over all pairs of the batch).
        labels: ``ranks`` (order only) or ``scores`` (min-max of the labels per list).
        length_normalize: s_i = β·(log π_θ(y_i) − log π_ref(y_i)) / |y_i|, per-token implicit rewards, instead of
            summed ones (the length-normalised log-ratio of TRL's ``sigmoid_norm`` DPO; docs/algorithms.md §2).
    """

    beta: float = 0.05
    loss_type: ListwiseLossType = "lambda"
    normalization: Literal["sum", "rax"] = "sum"
    labels: Literal["ranks", "scores"] = "ranks"
    length_normalize: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "loss", beta=POSITIVE)
        if self.normalization == "rax" and self.loss_type in ("list_mle", "softmax"):
            raise ValueError(f"loss.normalization 'rax' applies to pairwise loss types, not {self.loss_type!r}")


def _positions(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """0-based positions ``[B, K]`` sorting ``values`` descending, ties by slot order; padded slots get K (last)."""
    K = values.shape[1]
    v = torch.where(mask, values, 0)
    idx = torch.arange(K, device=values.device)
    earlier = idx[None, :] < idx[:, None]  # [K(i), K(j)]: j comes before i
    vi, vj = v[:, :, None], v[:, None, :]
    ahead = mask[:, None, :] & ((vj > vi) | ((vj == vi) & earlier))  # valid j sorted before i
    return torch.where(mask, ahead.sum(-1), K)


def _pair_mask(psi: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, K, K]`` True where both slots are valid and ψ_i > ψ_j (i preferred to j)."""
    return (psi[:, :, None] > psi[:, None, :]) & mask[:, :, None] & mask[:, None, :]


def labels_from_ranks(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ψ_k = mean over valid j (k included) of 1 if score_k > score_j, 0.5 if equal, 0 if less.

    docs/algorithms.md §2's "mean over j of 1[y_k ranked above y_j] (0.5 against itself)", ties as 0.5. Scores are
    higher-is-better (our ranks are stored as -rank). Distinct scores of a K-list give ψ = (K - r + 0.5) / K for
    1-based rank r, so ψ ∈ (0, 1) and the pairs ψ implies are those of the scores.

    Args:
        scores: ``[B, K]`` higher is better.
        mask: ``[B, K]`` bool, False on padded slots.

    Returns:
        ``[B, K]`` ψ, 0 on padded slots.
    """
    mask = mask.bool()
    dtype = scores.dtype if scores.is_floating_point() else torch.get_default_dtype()
    s = scores.to(dtype)
    both = mask[:, :, None] & mask[:, None, :]
    wins = (s[:, :, None] > s[:, None, :]).to(dtype) + 0.5 * (s[:, :, None] == s[:, None, :]).to(dtype)
    psi = torch.where(both, wins, 0).sum(-1) / mask.sum(-1, keepdim=True).clamp(min=1)
    return torch.where(mask, psi, 0)


def labels_from_scores(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-list min-max map of scores to [0, 1]; a list whose valid scores are all equal gets 0.5.

    Args:
        scores: ``[B, K]`` higher is better (e.g. reward-model scores).
        mask: ``[B, K]`` bool, False on padded slots.

    Returns:
        ``[B, K]`` ψ, 0 on padded slots.
    """
    mask = mask.bool()
    dtype = scores.dtype if scores.is_floating_point() else torch.get_default_dtype()
    s = torch.where(mask, scores.to(dtype), 0)
    lo = torch.where(mask, s, math.inf).amin(-1, keepdim=True)
    hi = torch.where(mask, s, -math.inf).amax(-1, keepdim=True)
    span = hi - lo
    flat = ~(span > 0)  # also catches a list with no valid slot (span = -inf)
    psi = torch.where(flat, 0.5, (s - torch.where(flat, 0, lo)) / torch.where(flat, 1, span))
    return torch.where(mask, psi, 0)


@torch.no_grad()
def dcg_lambda_weights(
    s: torch.Tensor, psi: torch.Tensor, mask: torch.Tensor, *, scale_by_list_size: bool = False
) -> torch.Tensor:
    """LiPO-λ's DCG lambda weights Δ_ij = |G_i - G_j|·|1/D(τ(i)) - 1/D(τ(j))|, no gradient.

    G = 2^ψ - 1, D(r) = log2(1 + r), τ(i) the 1-based rank of slot i under the current scores s, descending; ties
    in s by slot order (as rax's ``sort_ranks``), padded slots ranked after every valid one.

    Args:
        s: ``[B, K]`` the model's current scores.
        psi: ``[B, K]`` labels.
        mask: ``[B, K]`` bool, False on padded slots.
        scale_by_list_size: multiply list b's weights by its number of valid slots, as rax's ``dcg_lambdaweight``
            does (with the padded size).

    Returns:
        ``[B, K, K]`` Δ, 0 wherever slot i or j is padded.
    """
    mask = mask.bool()
    tau = _positions(s.detach(), mask) + 1  # [B, K] 1-based
    inv_d = 1.0 / torch.log2(1.0 + tau.to(s.dtype))
    gain = torch.exp2(torch.where(mask, psi.to(s.dtype), 0)) - 1
    delta = (gain[:, :, None] - gain[:, None, :]).abs() * (inv_d[:, :, None] - inv_d[:, None, :]).abs()
    if scale_by_list_size:
        delta = delta * mask.sum(-1).to(s.dtype)[:, None, None]
    return torch.where(mask[:, :, None] & mask[:, None, :], delta, 0)


def listwise_count(
    labels: torch.Tensor, mask: torch.Tensor, loss_type: ListwiseLossType = "lambda", normalization: str = "sum"
) -> int:
    """The ``count`` of :func:`listwise_loss`, from labels and mask alone (before any forward pass).

    ``"sum"``: lists with at least one valid slot (every real list, tied or not, counts once). ``"rax"``: valid
    pairs, i.e. ``count_pairs(labels, mask)``. Labels or ψ may be passed: the maps to ψ keep every pair.

    Args:
        labels: ``[B, K]`` labels or ψ, higher is better.
        mask: ``[B, K]`` bool, False on padded slots.
        loss_type: as for :func:`listwise_loss`.
        normalization: ``sum`` | ``rax``.
    """
    _check_options(loss_type, normalization)
    mask = mask.bool()
    if normalization == "rax":
        return int(_pair_mask(labels, mask).sum())
    return int(mask.any(-1).sum())


def _check_options(loss_type: str, normalization: str) -> None:
    if loss_type not in LISTWISE_LOSS_TYPES:
        raise ValueError(f"unknown listwise loss_type {loss_type!r}; choose from {LISTWISE_LOSS_TYPES}")
    if normalization not in LISTWISE_NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose from {LISTWISE_NORMALIZATIONS}")
    if normalization == "rax" and loss_type in ("list_mle", "softmax"):
        raise ValueError(f"{loss_type} is a per-list loss; only normalization='sum' applies")


def listwise_loss(
    s: torch.Tensor,
    psi: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: ListwiseLossType = "lambda",
    normalization: Literal["sum", "rax"] = "sum",
    weights: LambdaWeights | torch.Tensor | None = None,
) -> LossOutput:
    """Listwise loss of a batch of scored lists; see the module docstring for each formula.

    Args:
        s: ``[B, K]`` scores, e.g. β·(log π_θ - log π_ref) or a reward model's rewards. Padded slots may hold
            anything (NaN too).
        psi: ``[B, K]`` labels in [0, 1], higher is better (:func:`labels_from_ranks`, :func:`labels_from_scores`).
        mask: ``[B, K]`` bool, False on padded slots.
        loss_type: ``lambda`` | ``pair_logistic`` | ``pair_hinge`` | ``list_mle`` | ``softmax``.
        normalization: ``sum`` (the paper) | ``rax`` (the reference code); ``rax`` only for pairwise types.
        weights: pair weights for the pairwise types, ``[B, K, K]`` or a callable ``(s, psi, mask) -> [B, K, K]``,
            applied without gradient. Default: :func:`dcg_lambda_weights` for ``lambda`` (scaled by the list size
            under ``rax``), 1 for ``pair_logistic`` and ``pair_hinge``.

    Returns:
        :class:`LossOutput` with one entry per list (its sum over pairs, or its list term; exactly 0 for a list
        without a pair) and ``count`` from :func:`listwise_count`: the loss is ``losses.sum() / count``.
    """
    _check_options(loss_type, normalization)
    if weights is not None and loss_type in ("list_mle", "softmax"):
        raise ValueError(f"pair weights apply to the pairwise loss types, not {loss_type}")
    mask = mask.bool()
    psi = psi.to(s.dtype)
    s = torch.where(mask, s, 0)  # before any exp/log, so NaN in padded slots never reaches a value or a gradient
    pairs = _pair_mask(psi, mask)  # [B, K, K]
    count = listwise_count(psi, mask, loss_type, normalization)

    if loss_type in ("lambda", "pair_logistic", "pair_hinge"):
        with torch.no_grad():
            if callable(weights):
                w = weights(s, psi, mask)
            elif weights is not None:
                w = weights.to(s.dtype)
            elif loss_type == "lambda":
                w = dcg_lambda_weights(s, psi, mask, scale_by_list_size=normalization == "rax")
            else:
                w = torch.ones_like(pairs, dtype=s.dtype)
        diff = s[:, :, None] - s[:, None, :]  # [B, K, K] s_i - s_j
        per_pair = torch.relu(1 - diff) if loss_type == "pair_hinge" else F.softplus(-diff)
        per_list = torch.where(pairs, w.detach() * per_pair, 0).sum((-1, -2))
    elif loss_type == "list_mle":
        pos = _positions(psi, mask)  # τ: ψ descending, ties by slot order
        # later[b, k, j]: valid j at or after k in τ. Every row also holds k itself (padded rows too), so no
        # logsumexp sees only -inf, whose backward would be NaN.
        eye = torch.eye(s.shape[1], dtype=torch.bool, device=s.device)
        later = (mask[:, None, :] & (pos[:, None, :] >= pos[:, :, None])) | eye
        tail = torch.logsumexp(torch.where(later, s[:, None, :], -math.inf), dim=-1)  # [B, K]
        per_list = -torch.where(mask, s - tail, 0).sum(-1)
    else:  # softmax (ListNet)
        has_valid = mask.any(-1, keepdim=True)
        logp = torch.log_softmax(torch.where(mask | ~has_valid, s, -math.inf), dim=-1)
        target = torch.where(mask, psi, 0)
        target = target / target.sum(-1, keepdim=True).clamp(min=torch.finfo(s.dtype).tiny)
        per_list = -(target * torch.where(mask, logp, 0)).sum(-1)
    per_list = torch.where(pairs.any((-1, -2)), per_list, 0)  # lists without a pair contribute exactly 0
    return LossOutput(per_list, count)


def lipo_labels(labels: torch.Tensor, mask: torch.Tensor, source: Literal["ranks", "scores"]) -> torch.Tensor:
    """``[B, K]`` ψ from raw labels: :func:`labels_from_ranks` (``ranks``) or :func:`labels_from_scores`."""
    if source not in ("ranks", "scores"):
        raise ValueError(f"unknown labels {source!r}; choose from ('ranks', 'scores')")
    return (labels_from_ranks if source == "ranks" else labels_from_scores)(labels, mask)


def lipo_loss(scores: ListScores, config: LiPOLossConfig) -> LossOutput:
    """LiPO on a batch of lists: :func:`listwise_loss` on s = β·(log π_θ - log π_ref) (divided by each response's
    token count with ``length_normalize``) and ψ from the labels.

    Args:
        scores: ``policy_logps``, ``ref_logps``, ``labels`` and ``mask``, all ``[B, K]``; ``lengths`` with
            ``length_normalize``.
        config: β, loss type, normalisation and the source of ψ.

    Returns:
        :class:`LossOutput`: per-list entries, ``count`` lists (``sum``) or pairs (``rax``), and the rewards of each
        list's best response and its mean reward as metrics.
    """
    c = config
    s = scores.implicit_rewards(c.beta, length_normalized=c.length_normalize)  # [B, K]
    out = listwise_loss(s, lipo_labels(scores.labels, scores.mask, c.labels), scores.mask, loss_type=c.loss_type,
                        normalization=c.normalization)
    out.metrics.update(list_reward_metrics(s, scores.labels, scores.mask))
    return out


def lipo_count(labels: torch.Tensor, mask: torch.Tensor, config: LiPOLossConfig) -> int:
    """``LossSpec.count`` of LiPO: lists (``sum``) or pairs (``rax``), from the raw labels (ψ keeps their pairs)."""
    return listwise_count(labels, mask, config.loss_type, config.normalization)


# The unit is the list (one entry per list); under ``rax`` the normaliser counts the lists' pairs.
LIPO = LossSpec(name="lipo", config=LiPOLossConfig, compute=lipo_loss, count=lipo_count, needs_reference=True,
                unit="list")
