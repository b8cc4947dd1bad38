"""Judging a claim: a paired comparison of two arms over seeds and evaluation prompts, an interval from a
hierarchical bootstrap, and a verdict against the smallest effect that matters, declared before the run.

Data layout. Every arm is scored on the same evaluation prompts (or held-out pairs, or lists) in every seed, so one
arm's results are ``values[s][i]``: seed ``s``, evaluation item ``i``. Two arms are paired twice: by seed (same
training data, same sampling stream) and by item within a seed; the comparison works on the per-item differences
``d[s][i] = favoured[s][i] − baseline[s][i]``. A measure that is not a mean over items (an ECE) has one item per
seed; its interval is then over seeds only.

Verdicts, for the interval [lo, hi] of the mean difference and the declared smallest effect δ > 0:

- ``equivalent`` when −δ < lo and hi < δ: no effect as large as δ at this scale (checked first, so a difference
  that is real but smaller than δ counts as no difference that matters);
- ``reproduced`` when the interval excludes 0 on the side the paper claims, ``reversed`` on the other side;
- ``undecided`` otherwise, with :func:`seeds_needed`, the seeds a paired power calculation asks for; also when
  every seed and item gave the same difference (a zero-width interval from, e.g., both arms at 0: no information).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

# two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30; beyond 30 the normal 1.96 is within 2%
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
VERDICTS = ("reproduced", "reversed", "equivalent", "undecided")
RESAMPLES = 2000  # bootstrap resamples of every interval
SEEDS_CEILING = 100  # seeds_needed never reported above this (a claim needing more is out of reach at this scale)


def t_quantile(df: int) -> float:
    """t_{0.975, df}: the half-width multiplier of a two-sided 95% interval."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def _check(values: Sequence[Sequence[float]]) -> list[list[float]]:
    v = [[float(x) for x in seed] for seed in values]
    if not v or any(not seed for seed in v):
        raise ValueError("no values (every seed needs at least one evaluation item)")
    if any(math.isnan(x) for seed in v for x in seed):
        raise ValueError("NaN among the values: drop the seed everywhere instead")
    return v


def _mean(x: Sequence[float]) -> float:
    return sum(x) / len(x)


def _sd(x: Sequence[float]) -> float:
    m = _mean(x)
    return math.sqrt(sum((a - m) ** 2 for a in x) / (len(x) - 1)) if len(x) > 1 else 0.0


def seed_means(values: Sequence[Sequence[float]]) -> list[float]:
    """Each seed's mean over its evaluation items."""
    return [_mean(s) for s in _check(values)]


def hierarchical_bootstrap(values: Sequence[Sequence[float]], resamples: int = RESAMPLES,
                           seed: int = 0) -> dict[str, Any]:
    """The grand mean (mean over seeds of each seed's mean over items) of ``values[s][i]``, with a 95% interval.

    Procedure (resample seeds, then items): each of ``resamples`` resamples draws S seeds with replacement from
    the S seeds and n items with replacement from the n items, and takes the grand mean of the drawn seeds' values
    on the drawn items. The evaluation items are the same in every seed (fixed prompts, lists or pairs), so seeds
    and items are crossed and one item resample serves every drawn seed: the pigeonhole bootstrap of Owen 2007
    ("The pigeonhole bootstrap", Ann. Appl. Stat.), which counts the items' shared sampling error that the spread
    over seeds alone misses, and counts the seed × item noise about twice, so it leans wide. (Seeds with different
    numbers of items, a nested design, get independent item resamples per drawn seed.) The standard error ŝe is the
    standard deviation of the resampled grand means, multiplied by √(S/(S−1)) to undo the plug-in shrinkage of
    resampling S seeds; the interval is mean ± t_{0.975, df}·ŝe, a t multiplier because S is small (2 to 10
    seeds), where a percentile interval would be far too narrow; df by :func:`_satterthwaite`, from S − 1 when
    the seeds' spread dominates up to many when the items' does. With one seed ``ci`` is None (no seed-to-seed
    spread can be estimated) and ``se`` is the items-only standard error, for information.

    Returns ``{"mean", "ci", "se", "n", "values"}``: ``n`` seeds, ``values`` the seed means."""
    v = _check(values)
    means = [_mean(s) for s in v]
    grand = _mean(means)
    rng = np.random.default_rng(seed)
    S = len(v)
    pick = rng.integers(0, S, size=(resamples, S))  # stage 1: which seed fills each slot
    n = len(v[0])
    if all(len(x) == n for x in v):  # crossed: one item resample per replicate, shared by its seeds
        x = np.asarray(v)
        items = rng.integers(0, n, size=(resamples, n))
        boot = x[pick[:, :, None], items[:, None, :]].mean(axis=(1, 2))
    else:  # nested: every slot resamples its own seed's items
        within = np.stack([np.asarray(x)[rng.integers(0, len(x), size=(resamples, S, len(x)))].mean(-1) for x in v])
        boot = within[pick, np.arange(resamples)[:, None], np.arange(S)[None, :]].mean(-1)
    se = float(boot.std(ddof=1))
    if S < 2:
        return {"mean": grand, "ci": None, "se": se, "n": 1, "values": means}
    se *= math.sqrt(S / (S - 1))
    h = t_quantile(_satterthwaite(v)) * se
    return {"mean": grand, "ci": [grand - h, grand + h], "se": se, "n": S, "values": means}


def _satterthwaite(v: list[list[float]]) -> int:
    """Degrees of freedom of the t multiplier (Satterthwaite 1946): the variance of the grand mean is taken as
    V_seeds + V_items, V_seeds = s²(seed means)/S on S − 1 degrees of freedom and (crossed items)
    V_items = s²(item means over seeds)/n on n − 1; df = (V_s + V_i)² / (V_s²/(S−1) + V_i²/(n−1)), rounded down.
    Seed spread dominating gives S − 1 (the plain t over seeds); item noise dominating gives many."""
    S, n = len(v), len(v[0])
    vs = _sd([_mean(x) for x in v]) ** 2 / S
    if n < 2 or any(len(x) != n for x in v):
        return S - 1
    vi = _sd([_mean(col) for col in zip(*v)]) ** 2 / n
    den = vs ** 2 / (S - 1) + vi ** 2 / (n - 1)
    return S - 1 if den == 0 else max(S - 1, int((vs + vi) ** 2 / den))


def paired_differences(favoured: Sequence[Sequence[float]], baseline: Sequence[Sequence[float]]) -> list[list[float]]:
    """``favoured[s][i] − baseline[s][i]``: the two arms paired by seed and by evaluation item."""
    a, b = _check(favoured), _check(baseline)
    if len(a) != len(b):
        raise ValueError(f"the arms have {len(a)} and {len(b)} seeds; they are paired by seed")
    if any(len(x) != len(y) for x, y in zip(a, b)):
        raise ValueError("the arms have different numbers of evaluation items in a seed; they are paired by item")
    return [[x - y for x, y in zip(sa, sb)] for sa, sb in zip(a, b)]


def verdict(ci: Sequence[float] | None, direction: int, smallest_effect: float) -> str:
    """``equivalent`` / ``reproduced`` / ``reversed`` / ``undecided`` for the interval of (arm the paper favours −
    baseline) and the smallest effect δ (see the module docstring); ``direction`` +1 when the paper says the
    difference is positive, −1 when negative (e.g. a lower calibration error). No interval: ``undecided``."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    if not smallest_effect > 0:
        raise ValueError(f"smallest_effect must be > 0, got {smallest_effect}")
    if ci is None:
        return "undecided"
    lo, hi = ci
    if -smallest_effect < lo and hi < smallest_effect:
        return "equivalent"
    if lo > 0 or hi < 0:
        return "reproduced" if (lo > 0) == (direction > 0) else "reversed"
    return "undecided"


def spread_of_seed(differences: Sequence[Sequence[float]]) -> float | None:
    """σ_d, the standard deviation of one seed's mean difference: the sample standard deviation of the seed means
    (S ≥ 2), but never below the items-only standard error of a seed's mean (a seed's mean cannot vary less than
    its own evaluation noise; this also gives σ_d with one seed). None when neither is available (one seed, one
    item) or both are 0."""
    d = _check(differences)
    within = math.sqrt(_mean([_sd(s) ** 2 / len(s) for s in d]))
    between = _sd([_mean(s) for s in d]) if len(d) > 1 else 0.0
    sigma = max(within, between)
    return sigma if sigma > 0 else None


def seeds_needed(sigma_d: float | None, smallest_effect: float, seeds: int, alpha: float = 0.05,
                 power: float = 0.8, ceiling: int = SEEDS_CEILING) -> int:
    """Seeds for a paired comparison to decide: n = ⌈((z_{1−α/2} + z_{power}) · σ_d / δ)²⌉, the seeds at which a
    true difference of δ excludes 0 with probability ``power`` (and at which the interval's half-width,
    ≈ z_{1−α/2}·σ_d/√n = 0.7·δ, is narrow enough to fit inside ±δ when the true difference is near 0). σ_d is
    :func:`spread_of_seed` of the observed seed-level differences. Floor: ``seeds + 1`` (the claim is undecided
    with ``seeds``, so at least one more); ceiling ``ceiling``. σ_d unknown (None): the floor."""
    if not smallest_effect > 0:
        raise ValueError(f"smallest_effect must be > 0, got {smallest_effect}")
    if sigma_d is None:
        return min(seeds + 1, ceiling)
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    n = math.ceil((z * sigma_d / smallest_effect) ** 2)
    return max(seeds + 1, min(n, ceiling))


def compare(claim: str, paper: str, metric: str, arms: dict[str, Sequence[Sequence[float]]], direction: int = 1,
            smallest_effect: float = 0.02, resamples: int = RESAMPLES, **extra: Any) -> dict[str, Any]:
    """One claim's entry: two arms (the first is the one the paper favours), each ``values[s][i]`` (seed, item);
    each arm's grand mean and the paired difference, each with its :func:`hierarchical_bootstrap` interval; the
    ``verdict`` against ``smallest_effect``; ``seeds`` (how many the verdict used); ``seeds_needed`` when undecided.
    ``extra`` keys are copied in (notes, settings)."""
    if len(arms) != 2:
        raise ValueError(f"a claim compares two arms, got {list(arms)}")
    (a, va), (b, vb) = arms.items()
    d = paired_differences(va, vb)
    diff = hierarchical_bootstrap(d, resamples)
    flat = {x for seed in d for x in seed}
    out = {"claim": claim, "paper": paper, "metric": metric,
           "arms": {a: hierarchical_bootstrap(va, resamples), b: hierarchical_bootstrap(vb, resamples)},
           "difference": {"of": f"{a} - {b}", **diff, "items_per_seed": [len(s) for s in d]},
           "direction": "higher" if direction > 0 else "lower", "smallest_effect": smallest_effect,
           "seeds": len(d), "verdict": verdict(diff["ci"], direction, smallest_effect)}
    if len(flat) == 1 and len(d) > 1:
        # every seed and item gave the same difference (e.g. both arms at 0 everywhere: a floor): a zero-width
        # interval measures no uncertainty, so it decides nothing
        out["verdict"] = "undecided"
        out["note"] = f"no spread: every seed and evaluation item gave the difference {flat.pop():g}"
    sigma = spread_of_seed(d)
    out["sigma_d"] = sigma
    if out["verdict"] == "undecided":
        out["seeds_needed"] = seeds_needed(sigma, smallest_effect, len(d))
    return {**out, **extra}


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "ci", "n", "values"}``: the mean and its 95% t interval (None with fewer than 2 values), for one
    number per seed (the SFT model's context line)."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("no values")
    if any(math.isnan(x) for x in v):
        raise ValueError(f"NaN among the values {v}")
    m = _mean(v)
    if len(v) < 2:
        return {"mean": m, "ci": None, "n": len(v), "values": v}
    h = t_quantile(len(v) - 1) * _sd(v) / math.sqrt(len(v))
    return {"mean": m, "ci": [m - h, m + h], "n": len(v), "values": v}


def stopping_step(history: Sequence[dict[str, Any]], signal: str, higher: bool, budget: int, windows: int,
                  patience: int, min_improvement: float) -> dict[str, Any]:
    """The stopping rule every trained arm obeys, declared before the run: the step budget is cut into ``windows``
    equal windows; a window's score is the mean of the logged training ``signal`` (an arm's own training loss,
    ``higher`` False, or training reward, ``higher`` True) over its steps; a window improves when it beats the best
    earlier window by more than ``min_improvement``. Training stops after ``patience`` windows in a row without
    improvement, and the arm is the policy at the end of its best window (early stopping that keeps the best
    weights); an arm the rule never stops is the policy at the end of its best window (the budget when it
    still improves in the last window). The learning-rate
    schedule is fixed by the budget, so the policy at a window's end is exactly the one a run stopped there gives.

    ``history`` is the trainer's log (one entry per step with ``step`` and ``signal``). Returns ``{"step"``: the
    chosen policy's step, ``"stopped"``: the step where the rule stopped (``budget`` when it never did),
    ``"windows"``: each window's score, ``"signal"``, ``"budget"}``."""
    if windows < 1 or budget < windows:
        raise ValueError(f"the budget of {budget} steps cannot hold {windows} windows")
    width = budget // windows
    scores: list[float | None] = []
    for w in range(windows):
        vals = [float(h[signal]) for h in history if signal in h and w * width < h.get("step", 0) <= (w + 1) * width]
        vals = [x for x in vals if math.isfinite(x)]
        scores.append(_mean(vals) if vals else None)
    sign = 1.0 if higher else -1.0
    best, best_w, bad, stopped = None, windows - 1, 0, budget
    for w, sc in enumerate(scores):
        if sc is None:
            continue
        if best is None or sign * (sc - best) > min_improvement:
            best, best_w, bad = sc, w, 0
        else:
            bad += 1
            if bad >= patience:
                stopped = (w + 1) * width
                break
    if best is None:
        raise ValueError(f"no finite {signal!r} in the training log: the stopping rule cannot be applied")
    step = budget if stopped == budget and best_w == windows - 1 else (best_w + 1) * width
    return {"step": step, "stopped": stopped, "windows": scores, "signal": signal, "budget": budget}


def run_until_decided(keys: Iterable[str], seeds: Sequence[int], max_seeds: int,
                      run: Callable[[int, set[str]], None], decide: Callable[[str, list[int]], str]
                      ) -> dict[str, list[int]]:
    """The sequential rule: every claim starts with ``seeds``; while some claim is ``undecided`` and fewer than
    ``max_seeds`` seeds were used, the next seed (one past the largest used) is run for the undecided claims only
    (``run(seed, keys)``; the caller reuses finished runs), and each is judged again (``decide(key, seeds)``).
    A decided claim keeps the seeds it was decided with. Returns the seeds each claim's verdict used."""
    if max_seeds < len(seeds):
        raise ValueError(f"--max-seeds {max_seeds} is below the {len(seeds)} starting seeds")
    used = {k: list(seeds) for k in keys}
    for s in seeds:
        run(s, set(used))
    undecided = {k for k in used if decide(k, used[k]) == "undecided"}
    nxt = max(seeds) + 1
    while undecided and len(used[next(iter(undecided))]) < max_seeds:
        run(nxt, set(undecided))
        for k in list(undecided):
            used[k].append(nxt)
            if decide(k, used[k]) != "undecided":
                undecided.discard(k)
        nxt += 1
    return used
