"""The statistics behind the verdicts on synthetic data with known answers: the equivalence test's error rates,
the hierarchical bootstrap's coverage, the power calculation and the sequential rule's stopping."""

from __future__ import annotations

import numpy as np
import pytest

from align.study.stats import (
    hierarchical_bootstrap,
    run_until_decided,
    seeds_needed,
    spread_of_seed,
    stopping_step,
    verdict,
)


def arm(rng: np.random.Generator, mean: float, seeds: int, items: int, seed_sd: float, item_sd: float,
        noise_sd: float = 0.0):
    """``values[s][i]`` of a simulated arm (or paired difference) on items shared by every seed: a seed effect, an
    item effect (the same item in every seed) and seed × item noise."""
    item = rng.normal(0, item_sd, items)
    return [list(mean + rng.normal(0, seed_sd) + item + rng.normal(0, noise_sd, items)) for _ in range(seeds)]


def verdicts(true_effect: float, reps: int, direction: int = 1, delta: float = 0.02) -> dict[str, float]:
    rng = np.random.default_rng(7)
    out = {"reproduced": 0, "reversed": 0, "equivalent": 0, "undecided": 0}
    for r in range(reps):
        d = arm(rng, true_effect, seeds=5, items=30, seed_sd=0.005, item_sd=0.01, noise_sd=0.03)
        out[verdict(hierarchical_bootstrap(d, resamples=400, seed=r)["ci"], direction, delta)] += 1
    return {k: v / reps for k, v in out.items()}


def test_no_effect_is_called_equivalent_and_almost_never_reproduced():
    rates = verdicts(0.0, 300)
    assert rates["reproduced"] <= 0.05 and rates["reversed"] <= 0.05
    assert rates["equivalent"] >= 0.8


def test_an_effect_far_above_delta_is_reproduced_and_its_opposite_reversed():
    assert verdicts(0.1, 100)["reproduced"] >= 0.95
    assert verdicts(0.1, 100, direction=-1)["reversed"] >= 0.95  # the paper claimed a decrease


def test_an_effect_near_delta_is_never_called_equivalent():
    rates = verdicts(0.03, 200)  # larger than δ: equivalence would be a wrong call
    assert rates["equivalent"] <= 0.05


@pytest.mark.parametrize("seeds, items", [(3, 20), (6, 40)])
def test_hierarchical_bootstrap_covers_the_true_mean_about_95_percent(seeds, items):
    rng = np.random.default_rng(seeds)
    reps, hit = 300, 0
    for r in range(reps):
        v = arm(rng, 0.5, seeds, items, seed_sd=0.05, item_sd=0.1, noise_sd=0.1)
        lo, hi = hierarchical_bootstrap(v, resamples=400, seed=r)["ci"]
        hit += lo <= 0.5 <= hi
    assert 0.90 <= hit / reps <= 0.99


def test_hierarchical_bootstrap_counts_item_noise_when_seeds_agree():
    # every seed has the same items: a seeds-only interval has zero width, the item resampling does not
    v = [[0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]] * 3
    r = hierarchical_bootstrap(v, resamples=500)
    assert r["mean"] == pytest.approx(0.625) and r["ci"][1] - r["ci"][0] > 0.1
    assert hierarchical_bootstrap([[0.2, 0.4]])["ci"] is None  # one seed: no seed-to-seed spread, no interval
    with pytest.raises(ValueError, match="no values"):
        hierarchical_bootstrap([[]])


def test_verdict_checks_equivalence_first():
    assert verdict((-0.01, 0.015), 1, 0.02) == "equivalent"
    assert verdict((0.001, 0.015), 1, 0.02) == "equivalent"  # real but smaller than δ: no effect that matters
    assert verdict((0.001, 0.05), 1, 0.02) == "reproduced"
    assert verdict((-0.05, -0.001), 1, 0.02) == "reversed"
    assert verdict((-0.05, -0.001), -1, 0.02) == "reproduced"
    assert verdict((-0.01, 0.05), 1, 0.02) == "undecided"
    assert verdict(None, 1, 0.02) == "undecided"
    with pytest.raises(ValueError, match="smallest_effect"):
        verdict((0, 1), 1, 0.0)


def test_seeds_needed_is_the_paired_power_formula_with_floor_and_ceiling():
    # ((1.95996 + 0.84162) · 0.05 / 0.02)² = 49.05
    assert seeds_needed(0.05, 0.02, seeds=3) == 50
    assert seeds_needed(0.001, 0.02, seeds=3) == 4  # the formula asks for 1: at least one more than used
    assert seeds_needed(1.0, 0.01, seeds=3) == 100  # ceiling
    assert seeds_needed(None, 0.02, seeds=2) == 3
    # σ_d: the spread of the seed means, or a seed's own evaluation noise when that is larger
    assert spread_of_seed([[0.1, 0.1], [0.3, 0.3]]) == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert spread_of_seed([[0.0, 1.0]]) == pytest.approx(np.sqrt(0.5 / 2))
    assert spread_of_seed([[0.2]]) is None


def test_sequential_rule_stops_when_decided_within_the_budget_and_reuses_seeds():
    ran: list[tuple[int, str]] = []
    decided_at = {"early": 2, "later": 4, "never": None}  # a claim is decided once it has this many seeds

    def run(seed, keys):
        for k in keys:
            assert (seed, k) not in ran  # a finished (seed, claim) is never run again
            ran.append((seed, k))

    def decide(key, seeds):
        assert all((s, key) in ran for s in seeds)  # judged only on seeds that were run for it
        n = decided_at[key]
        return "reproduced" if n is not None and len(seeds) >= n else "undecided"

    used = run_until_decided(decided_at, (1, 2), 6, run, decide)
    assert used == {"early": [1, 2], "later": [1, 2, 3, 4], "never": [1, 2, 3, 4, 5, 6]}
    assert sorted(s for s, k in ran if k == "early") == [1, 2]
    assert max(s for s, _ in ran) == 6  # never beyond the budget
    # every claim decided at the start: no seed added
    assert run_until_decided(["early"], (1, 2), 10, lambda s, k: None, lambda k, s: "equivalent") == {"early": [1, 2]}
    with pytest.raises(ValueError, match="max-seeds"):
        run_until_decided(["a"], (1, 2, 3), 2, lambda s, k: None, lambda k, s: "undecided")


def history(values, key="loss"):
    return [{key: v, "step": i + 1} for i, v in enumerate(values)]


def test_stopping_rule_keeps_the_best_window_after_patience_runs_out():
    # windows of 2 steps: means 1.0, 0.5, 0.3, 0.31, 0.32, 0.1; patience 2 stops after window 5, best is window 3
    h = history([1.0, 1.0, 0.6, 0.4, 0.3, 0.3, 0.31, 0.31, 0.32, 0.32, 0.1, 0.1])
    r = stopping_step(h, "loss", False, budget=12, windows=6, patience=2, min_improvement=0.005)
    assert r["step"] == 6 and r["stopped"] == 10 and r["windows"][:3] == pytest.approx([1.0, 0.5, 0.3])
    # still improving to the end: the policy at the budget
    assert stopping_step(history([5, 4, 3, 2, 1, 0]), "loss", False, 6, 3, 1, 0.0)["step"] == 6
    # a reward is better when higher; an improvement smaller than min_improvement does not count
    up = history([0.1, 0.2, 0.3, 0.3, 0.301, 0.301], key="reward/mean")
    r = stopping_step(up, "reward/mean", True, 6, 3, 1, 0.005)
    assert r["step"] == 4 and r["stopped"] == 6
    with pytest.raises(ValueError, match="no finite"):
        stopping_step(history([float("nan")] * 4), "loss", False, 4, 2, 1, 0.0)
    with pytest.raises(ValueError, match="windows"):
        stopping_step(h, "loss", False, 2, 3, 1, 0.0)
