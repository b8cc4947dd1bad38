"""Judging a claim from per-seed results: each arm's mean with a 95% Student-t interval over seeds, the paired
difference (same seed, same SFT model, same data) with its interval, and a verdict.

A seed is the unit: it re-draws the preference data, the training order and the evaluation samples, so the spread
over seeds holds every source of noise. Arms are paired by seed, so the difference's interval is the t interval of
the per-seed differences. Verdict: ``reproduced`` when the interval of the difference excludes 0 on the side the
paper claims, ``reversed`` when it excludes 0 on the other side, else ``inconclusive`` (also with fewer than two
seeds, where no interval exists).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30; beyond 30 the normal 1.96 is within 2%
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
VERDICTS = ("reproduced", "reversed", "inconclusive")


def t_quantile(df: int) -> float:
    """t_{0.975, df}: the half-width multiplier of a two-sided 95% interval."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "ci", "n", "values"}``: the mean and its 95% t interval (None with fewer than 2 values).
    NaN values (a run that could not be scored) are an error: drop the seed everywhere instead."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("no values")
    if any(math.isnan(x) for x in v):
        raise ValueError(f"NaN among the values {v}")
    m = sum(v) / len(v)
    if len(v) < 2:
        return {"mean": m, "ci": None, "n": len(v), "values": v}
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    h = t_quantile(len(v) - 1) * sd / math.sqrt(len(v))
    return {"mean": m, "ci": [m - h, m + h], "n": len(v), "values": v}


def verdict(ci: Sequence[float] | None, direction: int) -> str:
    """``reproduced`` / ``reversed`` / ``inconclusive`` for the interval of (arm the paper favours − baseline);
    ``direction`` +1 when the paper says the difference is positive (higher is better), −1 when negative (e.g. a
    lower calibration error)."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    if ci is None:
        return "inconclusive"
    lo, hi = ci
    if lo > 0 or hi < 0:
        return "reproduced" if (lo > 0) == (direction > 0) else "reversed"
    return "inconclusive"


def compare(claim: str, paper: str, metric: str, arms: dict[str, Sequence[float]], direction: int = 1,
            **extra: Any) -> dict[str, Any]:
    """One claim's entry: two arms (the first is the one the paper favours), each a list of per-seed values in seed
    order; the paired difference first − second; the verdict. ``extra`` keys are copied in (notes, settings)."""
    if len(arms) != 2:
        raise ValueError(f"a claim compares two arms, got {list(arms)}")
    (a, va), (b, vb) = arms.items()
    if len(va) != len(vb):
        raise ValueError(f"arms {a} and {b} have {len(va)} and {len(vb)} seeds; they are paired by seed")
    diff = mean_ci([x - y for x, y in zip(va, vb)])
    return {"claim": claim, "paper": paper, "metric": metric, "arms": {a: mean_ci(va), b: mean_ci(vb)},
            "difference": {"of": f"{a} - {b}", **diff}, "direction": "higher" if direction > 0 else "lower",
            "verdict": verdict(diff["ci"], direction), **extra}
