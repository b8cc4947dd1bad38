"""Combining reward functions (None/NaN, weights) and the NDCG reranking reward on hand permutations."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from align.rewards import combine, ndcg_at_k, ndcg_score, parse_ranking, reward_tensor
from align.rewards.reranking import MALFORMED


def test_reward_tensor_maps_none_to_nan_group_major():
    t = reward_tensor([1, None, 0.5, 2], group_size=2)
    assert t.shape == (2, 2) and t.dtype == torch.float32
    assert t[0, 0] == 1 and math.isnan(t[0, 1]) and t[1].tolist() == [0.5, 2.0]
    with pytest.raises(ValueError, match="groups of 3"):
        reward_tensor([1, 2], group_size=3)


def test_combine_weights_and_skips_missing():
    a = torch.tensor([[1.0, math.nan, 2.0, math.nan]])
    b = torch.tensor([[2.0, 4.0, math.nan, math.nan]])
    out = combine({"a": a, "b": b}, {"a": 1.0, "b": 0.5})
    torch.testing.assert_close(out.total, torch.tensor([[2.0, 2.0, 2.0, 0.0]]))
    assert out.all_missing.tolist() == [[False, False, False, True]]


def test_combine_default_weights_are_one_and_zero_weight_drops_a_function():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[10.0, 20.0]])
    torch.testing.assert_close(combine({"a": a, "b": b}).total, torch.tensor([[11.0, 22.0]]))
    torch.testing.assert_close(combine({"a": a, "b": b}, {"a": 1.0, "b": 0.0}).total, a)


def test_combine_refuses_inf_mismatched_weights_and_shapes():
    with pytest.raises(ValueError, match="inf"):
        combine({"a": torch.tensor([[math.inf, 0.0]])})
    with pytest.raises(ValueError, match="weight"):
        combine({"a": torch.ones(1, 2)}, {"b": 1.0})
    with pytest.raises(ValueError, match="one shape"):
        combine({"a": torch.ones(1, 2), "b": torch.ones(1, 3)})
    with pytest.raises(ValueError, match="at least one"):
        combine({})


REL = [0.0, 1.0, 2.0]  # candidate 2 is best, then 1, then 0; gains 2^rel − 1 = [0, 1, 3]


def test_ndcg_of_hand_permutations():
    assert ndcg_at_k([2, 1, 0], REL) == pytest.approx(1.0)
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k([0, 1, 2], REL) == pytest.approx((1 / math.log2(3) + 3 / math.log2(4)) / idcg)
    assert ndcg_at_k([1, 2, 0], REL) == pytest.approx((1 + 3 / math.log2(3)) / idcg)
    assert ndcg_at_k([0, 1, 2], REL, k=1) == pytest.approx(0.0)
    assert ndcg_at_k([1, 0, 2], REL, k=1) == pytest.approx(1 / 3)
    assert ndcg_at_k([1, 0, 2], [0.0, 0.0, 0.0]) == 1.0  # no relevant candidate: every order is ideal


@pytest.mark.parametrize("text", ["[2] > [1] > [0]", "2 1 0", "2, 1, 0", "[2] > [1] > [0]<|im_end|>junk"])
def test_ndcg_reward_reads_every_format(text):
    assert ndcg_score(text, REL) == pytest.approx(1.0)


@pytest.mark.parametrize("text, reason", [("", "empty"), ("   <|im_end|>", "empty"), ("[2] > [b] > [0]", "garbage"),
                                          ("best is 2", "garbage"), ("2 1 5", "unknown_id"),
                                          ("2 2 0", "duplicate"), ("2 1", "missing")])
def test_malformed_outputs_score_the_penalty_and_count_their_reason(text, reason):
    assert parse_ranking(text, 3) == (None, reason)
    counts: Counter[str] = Counter()
    assert ndcg_score(text, REL, format_penalty=-1.0, counts=counts) == -1.0
    assert counts == Counter({reason: 1})


def test_every_malformed_reason_is_reachable_and_k_is_checked():
    assert set(MALFORMED) == {"empty", "garbage", "unknown_id", "duplicate", "missing"}
    with pytest.raises(ValueError, match="k must be"):
        ndcg_score("0 1 2", REL, k=0)
