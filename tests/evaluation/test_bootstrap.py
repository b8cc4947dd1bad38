"""Bootstrap resample counts, percentile intervals, and CIs of whole score reports on synthetic data."""

from __future__ import annotations

import math

import pytest
import torch

from align.evaluation.bootstrap import bootstrap_weights, percentile_interval
from align.evaluation.ranking import METRIC_KEYS, score_report


def test_bootstrap_weights_are_counts_summing_to_n():
    w = bootstrap_weights(7, 50, seed=3)
    assert w.shape == (50, 7) and w.dtype == torch.float64
    assert torch.equal(w.sum(-1), torch.full((50,), 7.0, dtype=torch.float64))
    assert torch.equal(w, w.round()) and (w >= 0).all()
    # draws with replacement: some list is drawn twice in some resample (P(all rows a permutation) ~ 1e-67)
    assert (w > 1).any()


def test_bootstrap_weights_are_seeded():
    assert torch.equal(bootstrap_weights(20, 30, seed=1), bootstrap_weights(20, 30, seed=1))
    assert not torch.equal(bootstrap_weights(20, 30, seed=1), bootstrap_weights(20, 30, seed=2))


def test_bootstrap_weights_draw_every_list_equally_often():
    w = bootstrap_weights(10, 4000, seed=0)
    # each count ~ Binomial(10, 1/10): mean 1, variance 0.9; the mean over 4000 rows has sd 0.015
    assert w.mean(0).tolist() == pytest.approx([1.0] * 10, abs=0.08)
    assert w.var(0).mean().item() == pytest.approx(0.9, abs=0.08)


def test_bootstrap_weights_edge_cases():
    assert bootstrap_weights(0, 5).shape == (5, 0)
    assert torch.equal(bootstrap_weights(1, 4), torch.ones(4, 1, dtype=torch.float64))
    for bad in (0, -1):
        with pytest.raises(ValueError, match="resamples"):
            bootstrap_weights(5, bad)


def test_percentile_interval_on_known_values():
    v = torch.arange(101.0)
    assert percentile_interval(v, 0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval(v, 0.5) == pytest.approx((25.0, 75.0))
    assert percentile_interval(v) == pytest.approx((2.5, 97.5))  # default 95 %, linear interpolation
    assert percentile_interval(v[torch.randperm(101, generator=torch.Generator().manual_seed(0))], 0.9) == \
        pytest.approx((5.0, 95.0))  # order does not matter
    assert percentile_interval(torch.full((10,), 0.25)) == (0.25, 0.25)


def test_percentile_interval_drops_nan():
    v = torch.cat([torch.full((50,), math.nan), torch.arange(101.0)])
    assert percentile_interval(v, 0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval(torch.full((4,), math.nan)) is None
    assert percentile_interval(torch.tensor([])) is None


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5, 95, math.nan])
def test_percentile_interval_rejects_bad_levels(level):
    with pytest.raises(ValueError, match="level"):
        percentile_interval(torch.arange(10.0), level)


# --- CIs of score reports ------------------------------------------------------------------------------------------

N = 200


def _balanced_pairs(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n two-response lists; the preferred response is in slot 0 for a random half, slot 1 for the rest."""
    first = torch.zeros(n, dtype=torch.bool)
    first[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: n // 2]] = True
    labels = torch.stack([first.double(), (~first).double()], dim=1)
    return labels, torch.ones(n, 2, dtype=torch.bool)


def test_position_scorer_ci_covers_chance_on_balanced_data():
    labels, mask = _balanced_pairs()
    scores = torch.tensor([[1.0, 0.0]]).expand(N, 2)  # always prefers slot 0
    rep = score_report(scores, labels, mask, weights=bootstrap_weights(N, 1000, seed=0))
    assert rep["n_pairs"] == N and rep["n_lists_ranked"] == N
    # exactly half the lists have the preferred response in slot 0
    assert rep["pairwise_accuracy"] == pytest.approx(0.5)
    assert rep["pairwise_accuracy_ties_correct"] == pytest.approx(0.5)
    assert rep["top1_accuracy"] == pytest.approx(0.5) and rep["list_exact_match"] == pytest.approx(0.5)
    assert rep["kendall_tau"] == pytest.approx(0.0)
    assert set(rep["ci"]) == set(METRIC_KEYS)
    lo, hi = rep["ci"]["pairwise_accuracy"]
    assert lo < 0.5 < hi
    # the binomial sd is sqrt(0.25 / 200) = 0.035: a 95 % interval is about ±0.07 wide
    assert 0.40 < lo < 0.47 and 0.53 < hi < 0.60
    tlo, thi = rep["ci"]["kendall_tau"]
    assert tlo < 0 < thi  # tau = ±1 per list: 2 · accuracy − 1
    assert (tlo, thi) == pytest.approx((2 * lo - 1, 2 * hi - 1))


def test_all_equal_scores_give_degenerate_intervals():
    labels, mask = _balanced_pairs()
    rep = score_report(torch.zeros(N, 2), labels, mask, weights=bootstrap_weights(N, 200, seed=0))
    assert rep["pairwise_accuracy"] == 0.0 and rep["pairwise_accuracy_ties_correct"] == 1.0
    assert rep["ci"]["pairwise_accuracy"] == (0.0, 0.0)
    assert rep["ci"]["pairwise_accuracy_ties_correct"] == (1.0, 1.0)
    assert rep["kendall_tau"] == 0.0 and rep["ci"]["kendall_tau"] == (0.0, 0.0)
    assert rep["top1_accuracy"] == 0.0 and rep["ci"]["top1_accuracy"] == (0.0, 0.0)  # ties at the top are worst


def test_perfect_scorer_interval_is_one():
    labels, mask = _balanced_pairs()
    rep = score_report(labels * 3.0, labels, mask, weights=bootstrap_weights(N, 200, seed=0))
    for key in METRIC_KEYS:
        assert rep[key] == 1.0 and rep["ci"][key] == pytest.approx((1.0, 1.0)), key


def test_informative_scorer_interval_excludes_chance():
    labels, mask = _balanced_pairs()
    scores = labels.clone()
    scores[:40] = 1 - scores[:40]  # 40 of 200 pairs reversed: accuracy 0.8, sd 0.028
    rep = score_report(scores, labels, mask, weights=bootstrap_weights(N, 1000, seed=0))
    assert rep["pairwise_accuracy"] == pytest.approx(0.8)
    lo, hi = rep["ci"]["pairwise_accuracy"]
    assert 0.5 < lo < 0.8 < hi
    assert 0.72 < lo < 0.77 and 0.83 < hi < 0.88
    assert rep["ci"]["kendall_tau"][0] > 0


def test_score_report_without_weights_has_no_ci_and_level_narrows():
    labels, mask = _balanced_pairs()
    scores = torch.tensor([[1.0, 0.0]]).expand(N, 2)
    assert score_report(scores, labels, mask)["ci"] == {}  # no resamples: no intervals
    w = bootstrap_weights(N, 500, seed=0)
    wide = score_report(scores, labels, mask, weights=w)["ci"]["pairwise_accuracy"]
    narrow = score_report(scores, labels, mask, weights=w, level=0.5)["ci"]["pairwise_accuracy"]
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]
