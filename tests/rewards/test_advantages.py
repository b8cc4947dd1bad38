"""Group advantages, rank normalisation and the unlikeliness reward on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from align.rewards import group_advantages, rank_normalize, unlikeliness

R = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 2.0, 2.0]])


def test_group_scale_divides_by_the_bessel_corrected_group_std():
    a = group_advantages(R, scale="group", eps=0.0).advantages
    # group 1: mean 2.5, deviations ±0.5, ±1.5, variance (2.25+0.25+0.25+2.25)/3 = 5/3
    s1 = math.sqrt(5 / 3)
    # group 2: mean 1, deviations ±1, variance 4/3
    s2 = math.sqrt(4 / 3)
    expected = torch.tensor([[-1.5 / s1, -0.5 / s1, 0.5 / s1, 1.5 / s1], [-1 / s2, -1 / s2, 1 / s2, 1 / s2]])
    torch.testing.assert_close(a, expected)


def test_batch_scale_divides_by_the_bessel_corrected_std_of_all_rewards():
    a = group_advantages(R, scale="batch", eps=0.0).advantages
    # all 8 rewards: mean 1.75, squared deviations sum to 13.5, Bessel: / 7
    s = math.sqrt(13.5 / 7)
    expected = torch.tensor([[-1.5, -0.5, 0.5, 1.5], [-1.0, -1.0, 1.0, 1.0]]) / s
    torch.testing.assert_close(a, expected)


def test_none_scale_only_centres():
    a = group_advantages(R, scale="none").advantages
    torch.testing.assert_close(a, torch.tensor([[-1.5, -0.5, 0.5, 1.5], [-1.0, -1.0, 1.0, 1.0]]))


def test_eps_is_added_to_the_std():
    a = group_advantages(torch.tensor([[0.0, 2.0]]), eps=0.5).advantages
    # std of [0, 2] with Bessel = sqrt(2); deviations ±1
    torch.testing.assert_close(a, torch.tensor([[-1.0, 1.0]]) / (math.sqrt(2) + 0.5))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_equal_reward_groups_get_zero_advantage_and_no_nan(scale):
    r = torch.tensor([[0.7, 0.7, 0.7], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5]])
    out = group_advantages(r, scale=scale)
    assert torch.isfinite(out.advantages).all()
    assert out.advantages[:2].abs().sum() == 0
    assert out.advantages[2].abs().sum() > 0
    assert out.zero_std.tolist() == [True, True, False]
    assert out.n_zero_std == 2 and out.frac_zero_std == pytest.approx(2 / 3)


def test_every_group_equal_in_batch_scale_is_zero_not_nan():
    out = group_advantages(torch.ones(2, 3), scale="batch")
    assert torch.equal(out.advantages, torch.zeros(2, 3))


def test_mask_leaves_padded_slots_out_and_a_single_valid_response_gets_zero():
    r = torch.tensor([[1.0, 3.0, 100.0], [5.0, 9.0, 9.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = group_advantages(r, mask, scale="none")
    torch.testing.assert_close(out.advantages, torch.tensor([[-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    assert out.zero_std.tolist() == [False, True]


def test_integer_rewards_give_float32_and_bad_inputs_are_refused():
    assert group_advantages(torch.tensor([[0, 1]])).advantages.dtype == torch.float32
    with pytest.raises(ValueError, match="scale"):
        group_advantages(R, scale="std")
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        group_advantages(torch.ones(4))
    with pytest.raises(ValueError, match="NaN or inf"):
        group_advantages(torch.tensor([[0.0, math.nan]]))


def test_rank_normalize_with_ties_shares_the_mean_rank():
    out = rank_normalize(torch.tensor([[1.0, 2.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0], [3.0, 1.0, 2.0, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.5, 0.5, 1.0], [0.5, 0.5, 0.5, 0.5],
                                                  [1.0, 1 / 3, 2 / 3, 0.0]]))


def test_rank_normalize_scale_free_and_masked():
    r = torch.tensor([[10.0, -3.0, 7.0]])
    torch.testing.assert_close(rank_normalize(r), rank_normalize(r * 0.01 + 5))
    out = rank_normalize(torch.tensor([[2.0, 1.0, 9.0], [4.0, 0.0, 0.0]]),
                         torch.tensor([[True, True, False], [True, False, False]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.0]]))


def test_unlikeliness_oracle_all_correct_group():
    """He et al.'s recipe, β_rank 0.25: the least likely correct answer keeps its full reward."""
    out = unlikeliness(torch.ones(1, 4), torch.tensor([[-1.0, -2.0, -3.0, -4.0]]), beta_rank=0.25)
    torch.testing.assert_close(out, torch.tensor([[0.8125, 0.875, 0.9375, 1.0]]))


def test_unlikeliness_zero_reward_stays_zero_and_ties_share_rank():
    out = unlikeliness(torch.tensor([[0.0, 1.0, 1.0, 1.0]]), torch.tensor([[-9.0, -1.0, -1.0, -5.0]]),
                       beta_rank=0.5)
    # log-prob ranks: -9 → 0, -5 → 1, the two -1 → 2.5 each; G = 4
    torch.testing.assert_close(out, torch.tensor([[0.0, 1 - 0.5 * 2.5 / 4, 1 - 0.5 * 2.5 / 4, 1 - 0.5 * 1 / 4]]))


def test_unlikeliness_masked_group_uses_its_valid_count():
    out = unlikeliness(torch.ones(1, 3), torch.tensor([[-1.0, -2.0, 0.0]]), torch.tensor([[True, True, False]]),
                       beta_rank=0.25)
    torch.testing.assert_close(out, torch.tensor([[1 - 0.25 * 1 / 2, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="mean_logps"):
        unlikeliness(torch.ones(1, 3), torch.ones(1, 2))
