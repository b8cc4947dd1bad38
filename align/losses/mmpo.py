"""MMPO, margin-matching preference optimisation, over a batch of lists: the loss, its config and registry entry.

Kim et al., "Margin Matching Preference Optimization" (arXiv 2410.03145, Findings of EMNLP 2024). Each pair
(y_w preferred to y_l) gets a soft target from its quality margin instead of DPO's hard 1:
    p = σ(γ·(m_w - m_l)),   L = -[p log σ(βh) + (1 - p) log σ(-βh)],
    h = [log π_θ(y_w) - log π_ref(y_w)] - [log π_θ(y_l) - log π_ref(y_l)]            (docs/algorithms.md §3)
γ = ∞ gives p = 1, i.e. DPO; a constant p = 1 - ε is cDPO; equal margins would give p = 0.5 and a loss minimised
at h = 0. Their recipes: γ = 2.2 (UltraFeedback; Gemma-2B, Llama-3-8B), 0.3 (Gemma-7B), 1.1 (SHP); β = 0.01.
βh is the difference of the implicit rewards of :meth:`ListScores.implicit_rewards`. Lists of K > 2: every pair
(ties excluded) is one term with its own margin, as in :func:`~align.losses.dpo.dpo_loss`; the loss is the mean
over pairs. The same cross-entropy trains a reward model on r(y_w) - r(y_l): rewards as ``policy_logps``, no
reference, β = 1 (``align.losses.reward``).

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
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from align.losses.base import ListScores, LossOutput, LossSpec
from align.losses.dpo import pairwise_output
from align.losses.pairs import pair_count, preference_pairs
from align.validation import POSITIVE, Range, check_fields

MMPO_MARGINS: tuple[str, ...] = ("scores", "ranks")


@dataclass
class MMPOLossConfig:
    """MMPO settings.

    Attributes:
        beta: β (the paper's recipes use 0.01).
        gamma: γ, how sharply a margin becomes a target (2.2 on UltraFeedback; ``.inf`` is DPO).
        margins: ``scores`` (raw quality scores, as the reference code) or ``ranks`` (from rank positions, for
            data with ranks only).
        length_normalize: compare per-token implicit rewards β·(log π_θ(y) − log π_ref(y)) / |y| instead of summed
            ones (the length-normalised log-ratio of TRL's ``sigmoid_norm`` DPO; docs/algorithms.md §1).
    """

    beta: float = 0.01
    gamma: float = 2.2
    margins: Literal["scores", "ranks"] = "scores"
    length_normalize: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "loss", beta=POSITIVE, gamma=Range(0, low_open=True, inf=True))


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


def mmpo_loss(scores: ListScores, config: MMPOLossConfig, *, p_override: float | None = None) -> LossOutput:
    """MMPO loss for every preferred/dispreferred pair of a batch of lists.

    Args:
        scores: ``policy_logps``, ``ref_logps``, ``mask`` and ``labels`` (quality scores, higher is better: they
            define the pairs, ties forming none, and the margins), all ``[B, K]`` with K >= 2; ``lengths`` with
            ``length_normalize``.
        config: β, γ (``inf`` gives p = 1, i.e. DPO) and the margins (``scores`` raw | ``ranks`` mid-rank on [0, 1]).
        p_override: a constant target p in [0, 1] for every pair instead of σ(γ·margin) (1 - ε is cDPO).

    Returns:
        :class:`LossOutput` with ``[P]`` per-pair losses, ``count`` = P, the pairs and their implicit rewards.
    """
    c = config
    if scores.policy_logps.shape[1] < 2:
        # A (B, 1) column of rewards next to a (B,) target would broadcast to B×B (docs/algorithms.md §3): refuse it.
        raise ValueError(f"mmpo_loss needs [B, K] tensors with K >= 2; got {tuple(scores.policy_logps.shape)}")
    if not c.gamma > 0:  # also rejects NaN
        raise ValueError(f"gamma must be > 0, got {c.gamma}")
    if c.margins not in MMPO_MARGINS:
        raise ValueError(f"unknown margins {c.margins!r}; choose from {MMPO_MARGINS}")
    if p_override is not None and not 0.0 <= p_override <= 1.0:
        raise ValueError(f"p_override must be in [0, 1], got {p_override}")

    pairs = preference_pairs(scores.labels, scores.mask)
    s_w, s_l = pairs.take(scores.implicit_rewards(c.beta, length_normalized=c.length_normalize))  # [P]
    z = s_w - s_l  # βh (βh̄ with length_normalize)
    if p_override is not None:
        p = torch.full_like(z, p_override)
    elif math.isinf(c.gamma):
        p = torch.ones_like(z)  # strict pairs have margin > 0, so σ(∞·margin) = 1; never form ∞·0
    else:
        labels = scores.labels
        m = labels.to(z.dtype) if c.margins == "scores" else rank_margins(labels, scores.mask).to(z.dtype)
        m_w, m_l = pairs.take(m)
        p = torch.sigmoid(c.gamma * (m_w - m_l))
    assert p.shape == z.shape  # one target per pair, never a broadcast
    losses = -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z))
    return pairwise_output(losses, pairs, s_w, s_l)


MMPO = LossSpec(name="mmpo", config=MMPOLossConfig, compute=mmpo_loss, count=pair_count, needs_reference=True,
                unit="pair")
