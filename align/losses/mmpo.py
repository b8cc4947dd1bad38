"""MMPO, margin-matching preference optimisation, as one pure function over ``[B, K]`` log-probs.

Kim et al., "Margin Matching Preference Optimization" (arXiv 2410.03145, Findings of EMNLP 2024). Each pair
(y_w preferred to y_l) gets a soft target from its quality margin instead of DPO's hard 1:
    p = σ(γ·(m_w - m_l)),   L = -[p log σ(βh) + (1 - p) log σ(-βh)],
    h = [log π_θ(y_w) - log π_ref(y_w)] - [log π_θ(y_l) - log π_ref(y_l)]            (LOSSES.md §3)
γ = ∞ gives p = 1, i.e. DPO; a constant p = 1 - ε is cDPO; equal margins would give p = 0.5 and a loss minimised
at h = 0. Their recipes: γ = 2.2 (UltraFeedback; Gemma-2B, Llama-3-8B), 0.3 (Gemma-7B), 1.1 (SHP); β = 0.01.
Lists of K > 2: every pair (ties excluded) is one term with its own margin, as in :func:`~align.losses.dpo_loss`.
The same cross-entropy trains a reward model on r(y_w) - r(y_l): pass the rewards as ``policy_logps``, zeros as
``ref_logps`` and ``beta=1``.

Margins m:
    ``"scores"``  the raw scores, as the reference code does (no normalisation), so γ is on the scores' scale.
    ``"ranks"``   only ranks are known (OASST: scores = -rank). We place a list's responses evenly on [0, 1] by
                  mid-rank: m_k = (#valid responses ranked below k + 0.5·#others tied with k) / (K - 1), K the
                  list's number of valid responses. Best is 1 and worst 0 whatever K, so γ reads as the confidence
                  of best-over-worst (p = σ(γ)), and adjacent ranks get σ(γ/(K - 1)): without quality scores the
                  only assumption is that rank steps are equal, and a longer list splits the same best-to-worst
                  range more finely. Equivalently m = (K·ψ - 0.5)/(K - 1), ψ from ``listwise.labels_from_ranks``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from align.losses.dpo import PairwiseLoss
from align.losses.pairs import preference_pairs

MMPO_MARGINS: tuple[str, ...] = ("scores", "ranks")


def rank_margins(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` mid-rank margins in [0, 1] (see the module docstring); 0 on padded slots.

    Args:
        scores: ``[B, K]`` higher is better (e.g. -rank).
        mask: ``[B, K]`` bool, False on padded slots.
    """
    mask = mask.bool()
    dtype = scores.dtype if scores.is_floating_point() else torch.get_default_dtype()
    s = scores.to(dtype)
    both = mask[:, :, None] & mask[:, None, :] & ~torch.eye(s.shape[1], dtype=torch.bool, device=s.device)
    below = (s[:, :, None] > s[:, None, :]).to(dtype) + 0.5 * (s[:, :, None] == s[:, None, :]).to(dtype)
    m = torch.where(both, below, 0).sum(-1) / (mask.sum(-1, keepdim=True) - 1).clamp(min=1).to(dtype)
    return torch.where(mask, m, 0)


def mmpo_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float = 0.01,
    gamma: float = 2.2,
    margins: Literal["scores", "ranks"] = "scores",
    p_override: float | None = None,
) -> PairwiseLoss:
    """MMPO loss for every preferred/dispreferred pair of a batch of lists.

    Args:
        policy_logps: ``[B, K]`` summed response log-probs under the policy.
        ref_logps: ``[B, K]`` the same under the reference.
        scores: ``[B, K]`` quality scores, higher is better; they define the pairs (ties form none) and the margins.
        mask: ``[B, K]`` bool, False on padded slots.
        beta: β, the strength of the KL regularisation.
        gamma: γ > 0, how sharply the margin sets the target; ``float("inf")`` gives p = 1 (DPO).
        margins: ``scores`` (raw) | ``ranks`` (mid-rank on [0, 1]).
        p_override: a constant target p in [0, 1] for every pair instead of σ(γ·margin) (1 - ε is cDPO).

    Returns:
        :class:`~align.losses.dpo.PairwiseLoss` with ``[P]`` per-pair losses.
    """
    shapes = {tuple(x.shape) for x in (policy_logps, ref_logps, scores, mask)}
    if len(shapes) != 1 or policy_logps.dim() != 2 or policy_logps.shape[1] < 2:
        # A (B, 1) column of rewards next to a (B,) target would broadcast to B×B (LOSSES.md §3): refuse it.
        raise ValueError(
            "mmpo_loss needs [B, K] tensors of one shape with K >= 2; got "
            + ", ".join(str(tuple(x.shape)) for x in (policy_logps, ref_logps, scores, mask))
        )
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not gamma > 0:  # also rejects NaN
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if margins not in MMPO_MARGINS:
        raise ValueError(f"unknown margins {margins!r}; choose from {MMPO_MARGINS}")
    if p_override is not None and not 0.0 <= p_override <= 1.0:
        raise ValueError(f"p_override must be in [0, 1], got {p_override}")

    pairs = preference_pairs(scores, mask)
    r_w, r_l = pairs.take(policy_logps - ref_logps)  # [P]
    h = r_w - r_l
    if p_override is not None:
        p = torch.full_like(h, p_override)
    elif math.isinf(gamma):
        p = torch.ones_like(h)  # strict pairs have margin > 0, so σ(∞·margin) = 1; never form ∞·0
    else:
        m = scores.to(h.dtype) if margins == "scores" else rank_margins(scores, mask).to(h.dtype)
        m_w, m_l = pairs.take(m)
        p = torch.sigmoid(gamma * (m_w - m_l))
    assert p.shape == h.shape  # one target per pair, never a broadcast
    losses = -(p * F.logsigmoid(beta * h) + (1 - p) * F.logsigmoid(-beta * h))
    return PairwiseLoss(losses, (beta * r_w).detach(), (beta * r_l).detach(), pairs)
