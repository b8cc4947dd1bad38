"""Reliability / ECE on hand-computed margins."""

from __future__ import annotations

import math

import pytest
import torch

from align.evaluation.calibration import reliability


def test_zero_margins_are_calibrated_coin_flips():
    r = reliability(torch.tensor([0.0, 0.0]))
    assert r["n_pairs"] == 2 and r["scale"] == 1.0
    assert r["ece"] == pytest.approx(0.0)
    assert r["bins"] == [{"lower": 0.5, "upper": 0.6, "count": 4, "mean_predicted": 0.5, "observed": 0.5}]


def test_large_margins_are_confident_and_calibrated():
    r = reliability(torch.tensor([10.0, 10.0, 10.0]))
    lo, hi = r["bins"]
    assert (lo["lower"], lo["count"], lo["observed"]) == (0.0, 3, 0.0)
    assert (hi["upper"], hi["count"], hi["observed"]) == (1.0, 3, 1.0)
    assert lo["mean_predicted"] == pytest.approx(0.0, abs=1e-4)
    assert hi["mean_predicted"] == pytest.approx(1.0, abs=1e-4)
    assert r["ece"] == pytest.approx(0.0, abs=1e-4)


def test_underconfident_margins_by_hand():
    # p = σ(log 3) = 0.75 and the preferred response always wins: bins 0.75 -> 1 and 0.25 -> 0, ECE 0.25
    r = reliability(torch.full((4,), math.log(3)))
    assert [(b["lower"], b["count"]) for b in r["bins"]] == [(pytest.approx(0.2), 4), (pytest.approx(0.7), 4)]
    assert [b["mean_predicted"] for b in r["bins"]] == [pytest.approx(0.25), pytest.approx(0.75)]
    assert [b["observed"] for b in r["bins"]] == [0.0, 1.0]
    assert r["ece"] == pytest.approx(0.25)


def test_mixed_outcomes_by_hand():
    # one pair ranked right, one wrong, both with |m| = log 3: predictions {0.75, 0.25, 0.25, 0.75};
    # each bin holds one winner and one loser (observed 0.5) -> ECE = 0.25
    r = reliability(torch.tensor([math.log(3), -math.log(3)]))
    assert [b["observed"] for b in r["bins"]] == [0.5, 0.5]
    assert r["ece"] == pytest.approx(0.25)


def test_scale_multiplies_margin():
    m = torch.tensor([0.5 * math.log(3)] * 2)
    assert reliability(m)["ece"] != pytest.approx(0.25)
    r = reliability(m, scale=2.0)
    assert r["scale"] == 2.0 and r["ece"] == pytest.approx(0.25)
    assert reliability(torch.full((3,), 5.0), scale=0.0)["bins"][0]["mean_predicted"] == 0.5


def test_probability_one_goes_in_last_bin():
    r = reliability(torch.tensor([float("inf"), 1000.0]), n_bins=4)
    assert [(b["lower"], b["upper"], b["count"]) for b in r["bins"]] == [(0.0, 0.25, 2), (0.75, 1.0, 2)]
    assert r["ece"] == 0.0


def test_bins_are_symmetric_and_counts_sum_to_2p():
    m = torch.randn(101, generator=torch.Generator().manual_seed(0)) * 2
    r = reliability(m, n_bins=7)
    assert sum(b["count"] for b in r["bins"]) == 2 * 101
    assert 0.0 <= r["ece"] <= 1.0
    for a, b in zip(r["bins"], reversed(r["bins"])):
        assert a["count"] == b["count"]
        assert a["mean_predicted"] == pytest.approx(1 - b["mean_predicted"])
        assert a["observed"] == pytest.approx(1 - b["observed"])


def test_empty_gives_nan():
    r = reliability(torch.tensor([]))
    assert math.isnan(r["ece"]) and r["bins"] == [] and r["n_pairs"] == 0


def test_nan_raises():
    with pytest.raises(ValueError, match="NaN"):
        reliability(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="NaN"):
        reliability(torch.tensor([0.0]), scale=float("inf"))
    with pytest.raises(ValueError, match="1-D"):
        reliability(torch.zeros(2, 2))
