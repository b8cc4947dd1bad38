"""report_scores / ranking_report on TokenizedLists built by hand."""

from __future__ import annotations

import math

import pytest
import torch

from align.data.tokenize import TokenizedList
from align.evaluation.bootstrap import bootstrap_weights
from align.evaluation.ranking import METRIC_KEYS, list_tensors, ranking_report, report_scores, score_report


def _tl(lengths: tuple[int, ...], scores: tuple[float, ...], row: int = -1) -> TokenizedList:
    return TokenizedList(prompt_ids=(1, 2), response_ids=tuple(tuple(range(3, 3 + n)) for n in lengths),
                         labels=scores, row=row)


def _mixed_lists(n: int = 40) -> list[TokenizedList]:
    """n lists: every fifth has 3 responses, the rest 2; labels distinct within a list."""
    out = []
    for i in range(n):
        if i % 5 == 0:
            out.append(_tl((2, 3, 4), (2.0, 0.0, 1.0), row=i))
        else:
            out.append(_tl((1, 2), (0.0, 1.0) if i % 2 else (1.0, 0.0), row=i))
    return out


def test_list_tensors_pads_to_the_longest_list():
    labels, mask, lengths = list_tensors([_tl((2, 5, 1), (2.0, 0.0, 1.0)), _tl((4, 3), (0.0, 1.0))])
    assert labels.tolist() == [[2.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    assert lengths.tolist() == [[2.0, 5.0, 1.0], [4.0, 3.0, 1.0]]


def test_report_scores_shares_resamples_across_scorers():
    lists = _mixed_lists()
    _, mask, _ = list_tensors(lists)
    a = torch.randn(len(lists), 3, generator=torch.Generator().manual_seed(0)).masked_fill(~mask, 0.0)
    rep = report_scores({"a": a, "b": -a}, "a", lists, resamples=300, seed=5)
    assert rep["scorer"] == "a" and rep["n_lists"] == len(lists) and rep["ndcg_k"] is None
    assert set(rep["by_scorer"]) == {"a", "b"}
    n_pairs = 8 * 3 + 32
    assert rep["n_pairs"] == n_pairs and rep["by_scorer"]["b"]["n_pairs"] == n_pairs
    for name in ("a", "b"):
        assert set(rep["by_scorer"][name]["ci"]) == set(METRIC_KEYS)
        assert all(rep["by_scorer"][name]["ci"][k] is not None for k in METRIC_KEYS)
    assert set(rep["ci"]) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert rep[key] == rep["by_scorer"]["a"][key]
    # b reverses every pair of a, in every resample: on the same resamples its accuracy is 1 − a's, so its
    # interval is a's mirrored (independent resamples would not give this)
    pa, pb = rep["by_scorer"]["a"], rep["by_scorer"]["b"]
    assert pb["pairwise_accuracy"] == pytest.approx(1 - pa["pairwise_accuracy"])
    lo_a, hi_a = pa["ci"]["pairwise_accuracy"]
    assert pb["ci"]["pairwise_accuracy"] == pytest.approx((1 - hi_a, 1 - lo_a), abs=1e-12)
    assert lo_a < hi_a
    lo_t, hi_t = pa["ci"]["kendall_tau"]
    assert pb["ci"]["kendall_tau"] == pytest.approx((-hi_t, -lo_t), abs=1e-12)


def test_report_scores_is_reproducible_for_a_seed():
    lists = _mixed_lists()
    _, mask, _ = list_tensors(lists)
    s = torch.randn(len(lists), 3, generator=torch.Generator().manual_seed(1)).masked_fill(~mask, 0.0)
    one = report_scores({"s": s}, "s", lists, resamples=200, seed=7, ndcg_k=1)
    assert one == report_scores({"s": s}, "s", lists, resamples=200, seed=7, ndcg_k=1)
    assert one["ci"] != report_scores({"s": s}, "s", lists, resamples=200, seed=8, ndcg_k=1)["ci"]
    # the resamples are bootstrap_weights(n, resamples, seed)
    labels, mask, _ = list_tensors(lists)
    direct = score_report(s, labels, mask, weights=bootstrap_weights(len(lists), 200, 7), ndcg_k=1)
    assert one["ci"] == direct["ci"] and one["ndcg_k"] == 1


def test_no_resamples_no_intervals():
    lists = _mixed_lists(10)
    labels, _, _ = list_tensors(lists)
    rep = report_scores({"x": labels, "y": -labels}, "y", lists, resamples=0)
    assert rep["ci"] == {} and all(r["ci"] == {} for r in rep["by_scorer"].values())  # none, not a default set
    assert rep["scorer"] == "y" and rep["pairwise_accuracy"] == 0.0
    assert rep["by_scorer"]["x"]["pairwise_accuracy"] == 1.0


# Four pairs (label 1 preferred), by hand:
#   list  policy (w, l)   ref (w, l)   lengths (w, l)  logprob  implicit (w, l)   logprob_mean (w, l)
#   0     -5, -8          -4, -9       1, 4            right    -1, +1  wrong      -5, -2   wrong
#   1     -10, -6         -12, -5      5, 2            wrong    +2, -1  right      -2, -3   right
#   2     -3, -4          -3, -3       1, 1            right     0, -1  right      -3, -4   right
#   3     -7, -2          -9, -1       7, 2            wrong    +2, -1  right      -1, -1   tie
POLICY = torch.tensor([[-5.0, -8], [-6, -10], [-3, -4], [-7, -2]])
REF = torch.tensor([[-4.0, -9], [-5, -12], [-3, -3], [-9, -1]])
HAND_LISTS = [_tl((1, 4), (1.0, 0.0)), _tl((2, 5), (0.0, 1.0)), _tl((1, 1), (1.0, 0.0)), _tl((7, 2), (1.0, 0.0))]


def test_ranking_report_headline_is_implicit_with_a_reference():
    rep = ranking_report(POLICY, HAND_LISTS, REF, resamples=0)
    assert rep["scorer"] == "implicit"
    assert set(rep["by_scorer"]) == {"logprob", "logprob_mean", "implicit", "implicit_mean"}
    assert rep["pairwise_accuracy"] == pytest.approx(3 / 4)
    # per token: list 0 (-1/1, +1/4) wrong; list 1 (2/5, -1/2), 2 (0, -1), 3 (2/7, -1/2) right
    assert rep["length_normalized"]["scorer"] == "implicit_mean"
    assert rep["length_normalized"]["pairwise_accuracy"] == pytest.approx(3 / 4)
    assert rep["by_scorer"]["implicit_mean"]["pairwise_accuracy"] == pytest.approx(3 / 4)
    by = rep["by_scorer"]
    assert by["logprob"]["pairwise_accuracy"] == pytest.approx(2 / 4)
    assert by["logprob_mean"]["pairwise_accuracy"] == pytest.approx(2 / 4)
    assert by["logprob_mean"]["pairwise_accuracy_ties_correct"] == pytest.approx(3 / 4)


def test_ranking_report_headline_is_logprob_without_a_reference():
    rep = ranking_report(POLICY, HAND_LISTS, resamples=50, seed=0)
    assert rep["scorer"] == "logprob" and set(rep["by_scorer"]) == {"logprob", "logprob_mean"}
    assert rep["length_normalized"]["scorer"] == "logprob_mean"
    assert rep["length_normalized"]["pairwise_accuracy"] == rep["by_scorer"]["logprob_mean"]["pairwise_accuracy"]
    assert rep["pairwise_accuracy"] == pytest.approx(2 / 4)
    assert set(rep["ci"]) == set(METRIC_KEYS)


def test_ranking_report_ignores_nan_on_padding():
    lists = [_tl((1, 2, 3), (2.0, 1.0, 0.0)), _tl((1, 1), (1.0, 0.0))]
    policy = torch.tensor([[-1.0, -2, -3], [-1, -2, math.nan]])
    ref = torch.tensor([[-1.0, -1, -1], [0, 0, math.nan]])
    rep = ranking_report(policy, lists, ref, resamples=0)
    assert rep["n_pairs"] == 4 and rep["pairwise_accuracy"] == 1.0 and rep["list_exact_match"] == 1.0
