"""Idealized ranking accuracy (Chen et al. 2024, "Preference Learning Algorithms Do Not Learn Preference
Rankings", arXiv 2405.19534; docs/algorithms.md §7).

A policy that minimises the DPO objective perfectly, for raters of whom a fraction α prefer y_w, satisfies
π*(y_w)/π*(y_l) = (π_ref(y_w)/π_ref(y_l)) · (α/(1 − α))^{1/β}, so it ranks the pair right iff

    R*:  log π_ref(y_w) − log π_ref(y_l) + (1/β) · log(α/(1 − α)) > 0      (strict >)

R̃* is the same with length-normalised (per-token mean) reference log-probs. Without rater fractions a pair is
unanimous, and α = 1 is adjusted by 0.001 to α = 0.999 as in the paper. The gap R* − R says how much ranking
accuracy a DPO-trained policy leaves on the table; R (observed) counts ties as correct, R* does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

DEFAULT_BETAS: tuple[float, ...] = (0.01, 0.1, 1.0, 5.0, 10.0)
UNANIMOUS_ALPHA = 1 - 0.001


def idealized_correct(ref_logps: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, *, beta: float,
                      alpha: float = UNANIMOUS_ALPHA, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Per list ``[n]``: how many labelled pairs the idealized DPO policy ranks right (strictly).

    Args:
        ref_logps: ``[n, K]`` summed reference log-probs of each response.
        labels / mask: ``[n, K]`` labels (higher is better; tied labels form no pair) and valid slots.
        beta: the DPO β (> 0).
        alpha: the fraction of raters preferring y_w, in (0.5, 1); 0.999 for unanimous pairs.
        lengths: ``[n, K]`` response lengths in tokens: given, the reference log-probs are per-token means (R̃*).
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.5 < alpha < 1:
        raise ValueError(f"alpha must be in (0.5, 1) (1 is adjusted to {UNANIMOUS_ALPHA}), got {alpha}")
    mask = mask.bool()
    ref = ref_logps.double() if lengths is None else ref_logps.double() / lengths.double().clamp(min=1)
    ref = torch.where(mask, ref, 0.0)
    labels = torch.where(mask, labels.double(), 0.0)
    both = mask[:, :, None] & mask[:, None, :]
    better = both & (labels[:, :, None] > labels[:, None, :])  # [n, i, j]: i preferred to j
    shift = math.log(alpha / (1 - alpha)) / beta
    right = (ref[:, :, None] - ref[:, None, :] + shift) > 0  # NaN reference log-probs are never right
    return (better & right).sum(dim=(1, 2))


def idealized_by_beta(ref_logps: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor,
                      betas: Sequence[float] = DEFAULT_BETAS,
                      alpha: float = UNANIMOUS_ALPHA) -> dict[float, dict[str, torch.Tensor]]:
    """``{β: {"summed": [n], "length_normalized": [n]}}`` per-list correct-pair counts for R* and R̃*."""
    return {b: {"summed": idealized_correct(ref_logps, labels, mask, beta=b, alpha=alpha),
                "length_normalized": idealized_correct(ref_logps, labels, mask, beta=b, alpha=alpha, lengths=lengths)}
            for b in betas}
