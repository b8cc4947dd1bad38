"""Calibration of pairwise preference margins: does σ(scale·m) mean what it says?

A scorer (reward model, or β·log-ratio of a DPO policy) gives each labelled pair a margin
m = score(preferred) − score(dispreferred); σ(scale·m) is then read as the probability that the preferred
response wins. Calibration asks whether, among pairs given probability ≈ p, the preferred one really wins a
fraction ≈ p of the time. We bin predictions, compare mean predicted with observed frequency per bin, and
summarise with the expected calibration error ECE = Σ_b (n_b / N) · |mean_predicted_b − observed_b|.

Every pair is used in both orientations: (p, outcome 1) for "preferred beats dispreferred" and (1 − p,
outcome 0) for the reverse question. A pair has no natural order (which response is "first" is arbitrary), so
using one orientation only would make the diagram depend on that arbitrary choice; with both it is symmetric
about (0.5, 0.5) and deterministic, and a scorer is not rewarded for being confidently right in one direction
only. N is therefore 2 × the number of pairs.
"""

from __future__ import annotations

from typing import Any

import torch


def reliability(margins: torch.Tensor, scale: float = 1.0, n_bins: int = 10) -> dict[str, Any]:
    """Reliability diagram data and ECE for 1-D preference ``margins`` read as probabilities σ(scale·m).

    Returns ``{"ece", "scale", "n_pairs", "bins"}``; ``bins`` lists the non-empty equal-width bins on [0, 1]
    (p == 1 falls in the last) as ``{"lower", "upper", "count", "mean_predicted", "observed"}``. No pairs:
    ``ece`` is NaN and ``bins`` is empty. NaN margins (or a NaN σ argument) raise ``ValueError``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    m = torch.as_tensor(margins).detach().to("cpu", torch.float64)
    if m.dim() != 1:
        raise ValueError(f"margins must be 1-D (one per pair), got shape {tuple(m.shape)}")
    n_nan = int(torch.isnan(m).sum())
    if n_nan:
        raise ValueError(f"margins contain {n_nan} NaN value(s) out of {m.numel()}; cannot assess calibration")
    x = scale * m
    if torch.isnan(x).any():
        raise ValueError(f"scale * margins is NaN (scale={scale}); check scale for inf/NaN")
    n_pairs = m.numel()
    if n_pairs == 0:
        return {"ece": float("nan"), "scale": scale, "n_pairs": 0, "bins": []}

    pred = torch.cat([torch.sigmoid(x), torch.sigmoid(-x)])  # σ(−x) rather than 1 − σ(x): exact for small p
    outcome = torch.cat([torch.ones(n_pairs), torch.zeros(n_pairs)]).to(torch.float64)
    idx = torch.clamp((pred * n_bins).floor().long(), 0, n_bins - 1)

    bins, ece, total = [], 0.0, 2 * n_pairs
    for b in range(n_bins):
        sel = idx == b
        count = int(sel.sum())
        if count == 0:
            continue
        mean_pred = pred[sel].mean().item()
        observed = outcome[sel].mean().item()
        ece += count / total * abs(mean_pred - observed)
        bins.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "count": count,
                "mean_predicted": mean_pred,
                "observed": observed,
            }
        )
    return {"ece": ece, "scale": scale, "n_pairs": n_pairs, "bins": bins}


def ece_against(predicted: torch.Tensor, target: torch.Tensor, n_bins: int = 10) -> float:
    """ECE of predicted pair probabilities against known true probabilities (a task's Bradley–Terry
    P(a ≻ b), :mod:`align.tasks.preferences`), not 0/1 outcomes: Σ_b (n_b / N) · |mean predicted_b − mean target_b|
    over equal-width bins of the prediction, N pairs.

    Each pair is taken in the orientation the caller gives: orient it by the truth (the truly better response
    first, target ≥ 0.5). Unlike :func:`reliability` the reverse orientation is not added: with known targets the
    order is not arbitrary, and adding (1 − p, 1 − q) would let an uninformative p = 0.5 cancel its own error inside
    the bin that holds 0.5 (0.5 vs 0.96 and 0.5 vs 0.04 average to no error). No pairs: NaN."""
    p = torch.as_tensor(predicted, dtype=torch.float64).flatten()
    q = torch.as_tensor(target, dtype=torch.float64).flatten()
    if p.shape != q.shape:
        raise ValueError(f"predicted and target differ in size: {p.numel()} vs {q.numel()}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if not (torch.isfinite(p).all() and torch.isfinite(q).all()) or ((p < 0) | (p > 1) | (q < 0) | (q > 1)).any():
        raise ValueError("probabilities must be finite and in [0, 1]")
    if p.numel() == 0:
        return float("nan")
    idx = torch.clamp((p * n_bins).floor().long(), 0, n_bins - 1)
    ece = 0.0
    for b in idx.unique():
        sel = idx == b
        ece += float(sel.sum()) / p.numel() * abs(float(p[sel].mean() - q[sel].mean()))
    return ece
