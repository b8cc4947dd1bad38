"""Picking a few of a full run's batches for ``--quick``, so that the short run's ratios are the full run's.

A batch's cost is ``(real tokens, padded tokens)``: what one side feeds without padding and what a
one-row-per-sequence layout pads it to. What a step costs depends on its batch (a padded layout pays for the
longest sequence, a packed one for the real tokens), and peak memory on the costliest batch; a plain prefix of the
data would time other batches than the full run does, and its ratios would differ for that reason.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from itertools import combinations

Cost = tuple[int, int]  # (real tokens, padded tokens) of one batch


def batch_profile(costs: Sequence[Cost], warmup: int, prefix: str = "") -> dict[str, float]:
    """Mean real and padded tokens per timed step (after ``warmup`` batches) and the costliest padded batch."""
    timed = list(costs[warmup:]) or list(costs)
    return {f"{prefix}tokens_per_timed_step": round(statistics.mean(c[0] for c in timed), 1),
            f"{prefix}padded_tokens_per_timed_step": round(statistics.mean(c[1] for c in timed), 1),
            f"{prefix}max_padded_tokens_per_step": max(c[1] for c in costs)}


def representative_batches(costs: Sequence[Cost], steps: int, warmup: int) -> list[int]:
    """Indices of ``steps`` of the full run's batches (``costs``, in the full run's order) for a short run.

    The untimed warm-up steps are the full run's first batch(es) and then its costliest one (after the first
    optimizer step, as in the full run, where the optimizer's state is already allocated when the longest batch
    comes), and the timed steps are the set of the full run's timed batches whose mean real and mean padded tokens
    per step are both closest (relative error, the larger of the two) to the full run's timed means, in their
    original order. No batch is used twice."""
    n = len(costs)
    if steps > n:
        raise SystemExit(f"--quick picks {steps} of the full run's {n} batches; ask for fewer steps")
    w = max(0, min(warmup, steps - 1))
    costliest = max(range(n), key=lambda k: (costs[k][1], costs[k][0]))
    head = [k for k in range(n) if k != costliest][: max(w - 1, 0)] + [costliest] if w else []
    full_timed = list(range(min(warmup, n - 1), n))
    target = [statistics.mean(costs[k][j] for k in full_timed) for j in (0, 1)]
    pool = [k for k in full_timed if k not in head]
    m = steps - w
    if len(pool) < m:
        pool = [k for k in range(n) if k not in head]

    def error(ks) -> float:
        return max(abs(statistics.mean(costs[k][j] for k in ks) - target[j]) / target[j] for j in (0, 1))

    if math.comb(len(pool), m) <= 200_000:
        timed = min(combinations(pool, m), key=error)
    else:  # too many subsets to try: evenly spaced quantiles of the padded size
        by_size = sorted(pool, key=lambda k: (costs[k][1], k))
        timed = sorted({by_size[int((i + 0.5) * len(by_size) / m)] for i in range(m)})
    return head + list(timed)


def pick(costs: Sequence[Cost], steps: int, warmup: int) -> tuple[list[int], dict[str, float]]:
    """:func:`representative_batches` and the profile of the full run (``full_*``) and of the picks
    (``picked_*``), for the benchmark's JSON."""
    chosen = representative_batches(costs, steps, warmup)
    info = {"batches": len(costs), "picked": chosen, **batch_profile(costs, warmup, prefix="full_"),
            **batch_profile([costs[k] for k in chosen], max(0, min(warmup, steps - 1)), prefix="picked_")}
    return chosen, info


def tokens_over(costs: Sequence[Cost], steps: int, first: int = 0) -> tuple[int, int]:
    """(real, padded) tokens of steps ``first..steps-1`` of a run cycling through ``costs``."""
    timed = [costs[s % len(costs)] for s in range(first, steps)]
    return sum(c[0] for c in timed), sum(c[1] for c in timed)
