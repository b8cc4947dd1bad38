"""Ranking metrics on hand-made lists with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from align.ranking_metrics import aggregate, list_metrics, pairwise_accuracy, per_list_metrics

LABELS = torch.tensor([[0.0, -1, -2], [1, 0, 0], [0, -1, 0]])  # ranks as -rank; list 2 has a tie
MASK = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])


def test_perfect_ranking():
    m = list_metrics(LABELS, LABELS, MASK)
    assert m == {"list_exact_match": 1.0, "top1_accuracy": 1.0, "kendall_tau": 1.0, "ndcg": 1.0, "ndcg_at_k": 1.0,
                 "n_lists_ranked": 3}
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


# --- top-1 accuracy, NDCG@k, weighted aggregation (hand-computed) ------------------------------------------------

ONES3 = torch.ones(1, 3, dtype=torch.bool)
ONES4 = torch.ones(1, 4, dtype=torch.bool)


def _gain(psi: float) -> float:
    return 2**psi - 1


def _disc(rank: int) -> float:  # 1-based rank
    return 1 / math.log2(rank + 1)


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([[3.0, 2, 1]], [[2.0, 1, 0]], 1.0),  # perfect
        ([[1.0, 2, 3]], [[2.0, 1, 0]], 0.0),  # reversed
        ([[5.0, 5, 1]], [[2.0, 1, 0]], 0.0),  # score tie at the top between best and middle: the worse one counts
        ([[5.0, 1, 5]], [[2.0, 1, 0]], 0.0),  # ... between best and worst
        ([[1.0, 5, 5]], [[2.0, 1, 0]], 0.0),  # tie at the top without the best one
        ([[2.0, 0, 1]], [[1.0, 1, 0]], 1.0),  # tied best labels: the first best one on top
        ([[0.0, 2, 1]], [[1.0, 1, 0]], 1.0),  # ... the other best one on top
        ([[2.0, 2, 1]], [[1.0, 1, 0]], 1.0),  # score tie between the two best: the worst of them is still best
        ([[0.0, 1, 2]], [[1.0, 1, 0]], 0.0),  # the unique worst on top
    ],
)
def test_top1_accuracy_by_hand(scores, labels, expected):
    assert list_metrics(torch.tensor(scores), torch.tensor(labels), ONES3)["top1_accuracy"] == expected


def test_top1_accuracy_is_a_mean_over_lists_ignoring_padding():
    scores = torch.tensor([[3.0, 2, 1], [1.0, 2, 99], [0.0, 1, -5]])  # slot 2 of lists 1-2 is padding
    labels = torch.tensor([[0.0, 1, 2], [1.0, 0, 5], [0.0, 1, 9]])
    mask = torch.tensor([[True, True, True], [False, True, True], [True, True, False]])
    # list 0: top slot 0 has the worst label -> 0; list 1: valid slots 1, 2 -> top slot 2 (99), label 5 best -> 1;
    # list 2: valid slots 0, 1 -> top slot 1 (score 1), label 1 best -> 1 (padding label 9 ignored)
    assert list_metrics(scores, labels, mask)["top1_accuracy"] == pytest.approx(2 / 3)


def test_ndcg_at_k_by_hand_on_a_four_list():
    labels = torch.tensor([[3.0, 2, 1, 0]])
    scores = torch.tensor([[3.0, 4, 1, 2]])  # ranked order: slots 1, 0, 3, 2
    # psi = (labels below + 0.5 for itself) / 4
    g = [_gain(3.5 / 4), _gain(2.5 / 4), _gain(1.5 / 4), _gain(0.5 / 4)]
    ranked = [g[1], g[0], g[3], g[2]]
    ideal = g

    def ndcg(k):
        return sum(x * _disc(r + 1) for r, x in enumerate(ranked[:k])) / sum(
            x * _disc(r + 1) for r, x in enumerate(ideal[:k]))

    assert ndcg(1) == pytest.approx(g[1] / g[0])
    assert ndcg(2) == pytest.approx((g[1] + g[0] / math.log2(3)) / (g[0] + g[1] / math.log2(3)))
    for k in (1, 2, 3):
        m = list_metrics(scores, labels, ONES4, ndcg_k=k)
        assert m["ndcg_at_k"] == pytest.approx(ndcg(k), rel=1e-12)
        assert m["ndcg"] == pytest.approx(ndcg(4), rel=1e-12)
    # the full NDCG counts slots 3-4 too, so it differs from the truncated values
    assert ndcg(2) != pytest.approx(ndcg(4))
    assert list_metrics(scores, labels, ONES4)["top1_accuracy"] == 0.0
    # Kendall tau: pairs (0,1) and (2,3) discordant, 4 concordant -> (4 - 2) / 6
    assert list_metrics(scores, labels, ONES4)["kendall_tau"] == pytest.approx(1 / 3)


def test_ndcg_at_k_by_hand_on_a_three_list_with_a_score_tie():
    labels = torch.tensor([[2.0, 1, 0]])
    scores = torch.tensor([[1.0, 1, 0]])  # slots 0 and 1 tied at the top: pessimistic order 1, 0, 2
    g0, g1, g2 = _gain(5 / 6), _gain(3 / 6), _gain(1 / 6)
    at1 = g1 / g0
    at2 = (g1 + g0 * _disc(2)) / (g0 + g1 * _disc(2))
    full = (g1 + g0 * _disc(2) + g2 * _disc(3)) / (g0 + g1 * _disc(2) + g2 * _disc(3))
    assert list_metrics(scores, labels, ONES3, ndcg_k=1)["ndcg_at_k"] == pytest.approx(at1, rel=1e-12)
    assert list_metrics(scores, labels, ONES3, ndcg_k=2)["ndcg_at_k"] == pytest.approx(at2, rel=1e-12)
    assert list_metrics(scores, labels, ONES3)["ndcg"] == pytest.approx(full, rel=1e-12)
    # a perfect scorer gets 1 at every k
    for k in (1, 2, 3):
        assert list_metrics(labels, labels, ONES3, ndcg_k=k)["ndcg_at_k"] == pytest.approx(1.0)


def test_ndcg_k_none_or_beyond_the_list_is_the_full_ndcg():
    labels = torch.tensor([[3.0, 2, 1, 0], [0.0, 1, 2, 0]])
    scores = torch.tensor([[0.5, 0.1, 0.9, 0.3], [2.0, 1, 0, 3]])
    full = list_metrics(scores, labels, torch.ones(2, 4, dtype=torch.bool))
    assert full["ndcg_at_k"] == full["ndcg"] and full["ndcg"] < 1
    for k in (4, 10):
        assert list_metrics(scores, labels, torch.ones(2, 4, dtype=torch.bool), ndcg_k=k)["ndcg_at_k"] == \
            pytest.approx(full["ndcg"])
    assert list_metrics(scores, labels, torch.ones(2, 4, dtype=torch.bool), ndcg_k=1)["ndcg_at_k"] != \
        pytest.approx(full["ndcg"])


@pytest.mark.parametrize("k", [0, -1])
def test_ndcg_k_below_one_raises(k):
    with pytest.raises(ValueError, match="ndcg_k"):
        list_metrics(torch.zeros(1, 3), torch.tensor([[2.0, 1, 0]]), ONES3, ndcg_k=k)


def test_lists_with_all_labels_equal_are_excluded_from_list_metrics():
    scores = torch.tensor([[0.0, 1, 2], [5.0, 4, 3]])
    labels = torch.tensor([[2.0, 1, 0], [7.0, 7, 7]])  # list 0 fully reversed; list 1 has no labelled pair
    m = list_metrics(scores, labels, torch.ones(2, 3, dtype=torch.bool), ndcg_k=1)
    assert m["n_lists_ranked"] == 1
    # only list 0 counts: all zero at the top, tau -1; had list 1 counted (as 1), these would be 0.5 / 0
    assert m["top1_accuracy"] == 0.0 and m["list_exact_match"] == 0.0
    assert m["kendall_tau"] == pytest.approx(-1.0)
    assert m["ndcg_at_k"] == pytest.approx(_gain(1 / 6) / _gain(5 / 6))
    assert pairwise_accuracy(scores, labels, torch.ones(2, 3, dtype=torch.bool))["n_pairs"] == 3


@pytest.mark.parametrize(
    ("scores", "labels", "mask"),
    [
        (torch.zeros(1, 3), torch.zeros(1, 2), torch.ones(1, 3, dtype=torch.bool)),
        (torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1, 2, dtype=torch.bool)),
        (torch.zeros(2, 3), torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool)),
        (torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.bool)),
    ],
)
def test_mismatched_shapes_raise(scores, labels, mask):
    with pytest.raises(ValueError, match="one shape"):
        per_list_metrics(scores, labels, mask)
    with pytest.raises(ValueError):
        list_metrics(scores, labels, mask)


def test_nan_scores_never_count_as_correct():
    labels = torch.tensor([[1.0, 0], [1.0, 0], [0.0, 1]])
    scores = torch.tensor([[math.nan, 0.0], [math.nan, math.nan], [0.0, math.nan]])
    mask = torch.ones(3, 2, dtype=torch.bool)
    pa = pairwise_accuracy(scores, labels, mask)
    assert pa["n_pairs"] == 3
    assert pa["pairwise_accuracy"] == 0.0 and pa["pairwise_accuracy_ties_correct"] == 0.0  # NaN is not a tie
    m = list_metrics(scores, labels, mask)
    assert m["top1_accuracy"] == 0.0 and m["list_exact_match"] == 0.0
    # on a 3-list, a NaN on one response spoils its two pairs only
    three = pairwise_accuracy(torch.tensor([[2.0, math.nan, 0.0]]), torch.tensor([[2.0, 1, 0]]), ONES3)
    assert three["pairwise_accuracy"] == pytest.approx(1 / 3)
    assert three["pairwise_accuracy_ties_correct"] == pytest.approx(1 / 3)


def _two_lists():
    # list 0 (3 responses): pairs (0,1) right, (0,2) right, (1,2) wrong; list 1 (2 responses + padding): reversed
    scores = torch.tensor([[3.0, 1, 2], [0.0, 1, 0]])
    labels = torch.tensor([[2.0, 1, 0], [1.0, 0, 0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return scores, labels, mask


def test_integer_weights_equal_duplicated_lists():
    scores, labels, mask = _two_lists()
    weighted = aggregate(per_list_metrics(scores, labels, mask, ndcg_k=1), torch.tensor([2.0, 1.0]))
    dup = [0, 0, 1]
    repeated = aggregate(per_list_metrics(scores[dup], labels[dup], mask[dup], ndcg_k=1))
    assert set(weighted) == set(repeated)
    for key in weighted:
        assert weighted[key].item() == pytest.approx(repeated[key].item()), key
    # and by hand: pairs 2+2+0 right of 3+3+1; top-1 right in lists 0, 0 only; tau 1/3, 1/3, -1
    assert weighted["pairwise_accuracy"].item() == pytest.approx(4 / 7)
    assert weighted["top1_accuracy"].item() == pytest.approx(2 / 3)
    assert weighted["kendall_tau"].item() == pytest.approx((1 / 3 + 1 / 3 - 1) / 3)
    unweighted = aggregate(per_list_metrics(scores, labels, mask))
    assert unweighted["pairwise_accuracy"].item() == pytest.approx(2 / 4)
    assert unweighted["top1_accuracy"].item() == pytest.approx(1 / 2)


def test_weight_matrix_gives_one_value_per_row():
    scores, labels, mask = _two_lists()
    per = per_list_metrics(scores, labels, mask)
    out = aggregate(per, torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 0.0]]))
    acc = out["pairwise_accuracy"]
    assert acc.shape == (4,)
    assert acc[0].item() == pytest.approx(4 / 7) and acc[1].item() == 0.0 and acc[2].item() == pytest.approx(2 / 3)
    assert math.isnan(acc[3].item())  # nothing counted
    assert out["top1_accuracy"].tolist()[:3] == pytest.approx([2 / 3, 0.0, 1.0])


def test_pairwise_accuracy_is_pooled_over_pairs():
    # a 3-list with all 3 pairs right and a 2-list with its 1 pair wrong: 3/4, not the mean of 1 and 0
    scores = torch.tensor([[3.0, 2, 1], [0.0, 1, 0]])
    labels = torch.tensor([[2.0, 1, 0], [1.0, 0, 0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    assert pairwise_accuracy(scores, labels, mask)["pairwise_accuracy"] == pytest.approx(3 / 4)
    assert list_metrics(scores, labels, mask)["list_exact_match"] == pytest.approx(1 / 2)
    agg = aggregate(per_list_metrics(scores, labels, mask), torch.tensor([1.0, 3.0]))
    assert agg["pairwise_accuracy"].item() == pytest.approx(3 / 6)  # 3 right of 3 + 3 pairs
