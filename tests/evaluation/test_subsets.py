"""Per-subset and per-section (RewardBench, docs/algorithms.md §8) accuracy on hand data."""

from __future__ import annotations

import pytest
import torch

from align.evaluation.subsets import REWARDBENCH_SECTIONS, section_of, subset_report

# mt-bench-easy: 4 one-pair lists, all right (1.0); alpacaeval-easy: 2 lists, both wrong (0.0). Both are "chat":
# pooled 4/6 = 0.667, while the mean of the subset means would be 0.5. "my-own" is unknown -> "other": one 3-pair
# list with 2 right. Two lists without a subset (both wrong, 5 pairs) must not count anywhere.
SUBSETS = ["mt-bench-easy", "alpacaeval-easy", "mt-bench-easy", None, "my-own", "mt-bench-easy", "alpacaeval-easy",
           "mt-bench-easy", None]
CORRECT = torch.tensor([1, 0, 1, 0, 2, 1, 0, 1, 0])
N_PAIRS = torch.tensor([1, 1, 1, 2, 3, 1, 1, 1, 3])


def test_section_of():
    assert section_of("mt-bench-easy") == "chat" and section_of("alpacaeval-easy") == "chat"
    assert section_of("llmbar-natural") == "chat-hard" and section_of("donotanswer") == "safety"
    assert section_of("math-prm") == "reasoning" and section_of("my-own") == "other"
    assert set(REWARDBENCH_SECTIONS) == {"chat", "chat-hard", "safety", "reasoning"}


def test_subset_and_section_accuracy_by_hand():
    rep = subset_report(SUBSETS, CORRECT, N_PAIRS, resamples=300, seed=0)
    subs, secs = rep["by_subset"], rep["by_section"]
    assert list(subs) == ["alpacaeval-easy", "mt-bench-easy", "my-own"]  # None left out
    assert list(secs) == ["chat", "other"]
    mt, alp, own = subs["mt-bench-easy"], subs["alpacaeval-easy"], subs["my-own"]
    assert (mt["pairwise_accuracy"], mt["n_pairs"], mt["n_lists"], mt["section"]) == (1.0, 4, 4, "chat")
    assert (alp["pairwise_accuracy"], alp["n_pairs"], alp["n_lists"], alp["section"]) == (0.0, 2, 2, "chat")
    assert own["pairwise_accuracy"] == pytest.approx(2 / 3) and own["section"] == "other"
    assert (own["n_pairs"], own["n_lists"]) == (3, 1)
    chat = secs["chat"]
    assert chat["pairwise_accuracy"] == pytest.approx(4 / 6)  # pooled, not (1.0 + 0.0) / 2
    assert (chat["n_pairs"], chat["n_lists"]) == (6, 6)
    assert chat["subsets"] == ["alpacaeval-easy", "mt-bench-easy"]
    assert secs["other"]["pairwise_accuracy"] == pytest.approx(2 / 3) and secs["other"]["subsets"] == ["my-own"]


def test_intervals_contain_the_point_estimates():
    rep = subset_report(SUBSETS, CORRECT, N_PAIRS, resamples=300, seed=0)
    for group in ("by_subset", "by_section"):
        for name, entry in rep[group].items():
            lo, hi = entry["ci"]
            assert lo <= entry["pairwise_accuracy"] <= hi, (group, name)
    # homogeneous groups cannot vary
    assert rep["by_subset"]["mt-bench-easy"]["ci"] == (1.0, 1.0)
    assert rep["by_subset"]["alpacaeval-easy"]["ci"] == (0.0, 0.0)
    assert rep["by_subset"]["my-own"]["ci"] == pytest.approx((2 / 3, 2 / 3))
    # the mixed chat section does (6 lists, 4 right): the interval is not degenerate
    lo, hi = rep["by_section"]["chat"]["ci"]
    assert lo < 4 / 6 < hi and lo < 0.5


def test_no_resamples_no_intervals_and_seeded():
    rep = subset_report(SUBSETS, CORRECT, N_PAIRS, resamples=0)
    assert all("ci" not in e for g in rep.values() for e in g.values())
    a = subset_report(SUBSETS, CORRECT, N_PAIRS, resamples=100, seed=4)
    assert a == subset_report(SUBSETS, CORRECT, N_PAIRS, resamples=100, seed=4)


def test_subset_without_pairs_has_no_accuracy():
    rep = subset_report(["hep-go", "hep-go", "math-prm"], torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]),
                        resamples=50)
    assert rep["by_subset"]["hep-go"]["pairwise_accuracy"] is None and "ci" not in rep["by_subset"]["hep-go"]
    assert rep["by_section"]["reasoning"]["pairwise_accuracy"] == 1.0
    assert rep["by_section"]["reasoning"]["n_pairs"] == 1 and rep["by_section"]["reasoning"]["n_lists"] == 3
    assert subset_report([None, None], torch.tensor([1, 0]), torch.tensor([1, 1])) == {"by_subset": {},
                                                                                       "by_section": {}}
