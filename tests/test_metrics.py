"""Ranking metrics on hand-made lists with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from align.metrics import list_metrics, pairwise_accuracy

LABELS = torch.tensor([[0.0, -1, -2], [1, 0, 0], [0, -1, 0]])  # ranks as -rank; list 2 has a tie
MASK = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])


def test_perfect_ranking():
    m = list_metrics(LABELS, LABELS, MASK)
    assert m == {"list_exact_match": 1.0, "kendall_tau": 1.0, "ndcg": 1.0, "n_lists_ranked": 3}
    assert pairwise_accuracy(LABELS, LABELS, MASK)["pairwise_accuracy"] == 1.0


def test_hand_example():
    scores = torch.tensor([[3.0, 2, 1], [1, 2, 3], [0, 0, 99]])  # slot 2 of list 2 is padding: ignored
    m = list_metrics(scores, LABELS, MASK)
    # list 0 perfect; list 1 both labelled pairs reversed; list 2 tied scores (strictly wrong)
    assert m["list_exact_match"] == pytest.approx(1 / 3)
    # tau-b: list 0: 1; list 1: C-D = -2, 2 label-untied pairs, 3 score-untied pairs -> -2/sqrt(6); list 2: 0
    assert m["kendall_tau"] == pytest.approx((1 - 2 / math.sqrt(6) + 0) / 3)
    # NDCG list 1: psi = [5/6, 1/3, 1/3]; gains g = 2^psi - 1; ranked order by score: slots 2, 1, 0
    g = [2 ** (5 / 6) - 1, 2 ** (1 / 3) - 1, 2 ** (1 / 3) - 1]
    d = [1 / math.log2(r + 2) for r in range(3)]
    ndcg1 = (g[2] * d[0] + g[1] * d[1] + g[0] * d[2]) / (g[0] * d[0] + g[1] * d[1] + g[2] * d[2])
    # list 2: psi = [0.75, 0.25]; a score tie is broken pessimistically: worse label (slot 1) first
    g0, g1 = 2**0.75 - 1, 2**0.25 - 1
    ndcg2 = (g1 + g0 / math.log2(3)) / (g0 + g1 / math.log2(3))
    assert m["ndcg"] == pytest.approx((1 + ndcg1 + ndcg2) / 3)
    pa = pairwise_accuracy(scores, LABELS, MASK)
    assert pa["n_pairs"] == 3 + 2 + 1 and pa["pairwise_accuracy"] == pytest.approx(3 / 6)
    assert pa["pairwise_accuracy_ties_correct"] == pytest.approx(4 / 6)


def test_reversed_ranking():
    m = list_metrics(-LABELS[:1], LABELS[:1], MASK[:1])
    assert m["list_exact_match"] == 0.0 and m["kendall_tau"] == pytest.approx(-1.0) and m["ndcg"] < 1


def test_constant_scorer_gets_no_credit_from_the_stored_order():
    labels = torch.tensor([[0.0, -1, -2, -3]])  # stored best-first, as OASST is
    m = list_metrics(torch.zeros(1, 4), labels, torch.ones(1, 4, dtype=torch.bool))
    worst = list_metrics(-labels, labels, torch.ones(1, 4, dtype=torch.bool))
    assert m["ndcg"] == pytest.approx(worst["ndcg"]) and m["kendall_tau"] == 0 and m["list_exact_match"] == 0


def test_all_tied_labels_are_left_out():
    m = list_metrics(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool))
    assert m["n_lists_ranked"] == 0 and math.isnan(m["kendall_tau"])
    assert pairwise_accuracy(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]),
                             torch.ones(1, 2, dtype=torch.bool))["n_pairs"] == 0
