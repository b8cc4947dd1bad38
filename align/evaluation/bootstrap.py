"""Percentile bootstrap over lists (Efron & Tibshirani 1993, ch. 13).

The unit resampled is the list, not the pair: the pairs of one list share a prompt and responses, so treating
them as independent would make intervals too narrow. One ``[R, n]`` matrix of resample counts is drawn once and
reused for every metric, so all intervals of one report come from the same resamples.
"""

from __future__ import annotations

import math

import torch

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95


def bootstrap_weights(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> torch.Tensor:
    """``[resamples, n]`` counts: how often each of ``n`` lists is drawn in each resample (rows sum to ``n``)."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if n == 0:
        return torch.zeros(resamples, 0, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (resamples, n), generator=g)
    counts = torch.zeros(resamples, n, dtype=torch.float64)
    return counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))


def percentile_interval(values: torch.Tensor, level: float = DEFAULT_LEVEL) -> tuple[float, float] | None:
    """The central ``level`` interval of bootstrap ``values`` (NaN resamples, which counted nothing, dropped);
    None when none is left."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    v = values[~torch.isnan(values)].double()
    if v.numel() == 0:
        return None
    q = torch.quantile(v, torch.tensor([(1 - level) / 2, 1 - (1 - level) / 2], dtype=torch.float64))
    lo, hi = float(q[0]), float(q[1])
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None
