"""Oracles for ``align.losses.listwise`` (docs/algorithms.md §2), each derived by hand below.

The running example (docs/algorithms.md §2): s = [0.3, 0.1, 0.2], ψ = [1, 0.5, 0].
    τ by s descending: slot 0 (0.3) → 1, slot 2 (0.2) → 2, slot 1 (0.1) → 3, so τ = [1, 3, 2].
    G = 2^ψ - 1 = [1, √2 - 1 = 0.414214, 0];  1/D(τ) = 1/log2(1 + τ) = [1, 1/log2 4 = 0.5, 1/log2 3 = 0.630930].
    pairs (ψ_i > ψ_j)  s_i - s_j   log(1 + e^{-(s_i - s_j)})   Δ_ij
    (0, 1)             0.2         0.598139                    0.585786 · |1 - 0.5|      = 0.292893
    (0, 2)             0.1         0.644397                    1        · |1 - 0.630930| = 0.369070
    (1, 2)            -0.1         0.744397                    0.414214 · |0.5 - 0.630930| = 0.054233
    LiPO-λ (sum) = 0.292893·0.598139 + 0.369070·0.644397 + 0.054233·0.744397 = 0.175191 + 0.237827 + 0.040371
                 = 0.453389;  rax: ×K = 3 and the mean over 3 pairs → the same 0.453389.
    pair-logistic = 0.598139 + 0.644397 + 0.744397 = 1.986932;  pair-hinge = 0.8 + 0.9 + 1.1 = 2.8.
    list-MLE, τ by ψ = (0, 1, 2): logsumexp(0.3, 0.1, 0.2) = 1.301946, logsumexp(0.1, 0.2) = 0.844397:
        -[(0.3 - 1.301946) + (0.1 - 0.844397) + (0.2 - 0.2)] = 1.001946 + 0.744397 = 1.746343.
    softmax: targets ψ/Σψ = [2/3, 1/3, 0], log softmax(s) = s - 1.301946 = [-1.001946, -1.201946, ·]:
        2/3 · 1.001946 + 1/3 · 1.201946 = 1.068610.
"""

from __future__ import annotations

import math

import pytest
import torch

from align.losses import DPOLossConfig, LiPOLossConfig, ListScores, dpo_loss
from align.losses.listwise import (
    LISTWISE_LOSS_TYPES,
    dcg_lambda_weights,
    labels_from_ranks,
    labels_from_scores,
    lipo_loss,
    listwise_count,
    listwise_loss,
)

F64 = torch.float64
S = [[0.3, 0.1, 0.2]]
PSI = [[1.0, 0.5, 0.0]]
INV_LOG2_3 = 1 / math.log2(3)  # 1/D(2) = 0.630930


def t(x, dtype=F64, **kw) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype, **kw)


def ones(b: int, k: int) -> torch.Tensor:
    return torch.ones(b, k, dtype=torch.bool)


# ---------------------------------------------------------------------------------------------------------------
# The docs/algorithms.md §2 oracles
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss_type", "normalization", "expected", "count"),
    [
        ("lambda", "sum", 0.453389, 1),
        ("lambda", "rax", 0.453389, 3),  # ×K = 3 then / 3 pairs: equal only because K = number of pairs
        ("pair_logistic", "sum", 1.986932, 1),
        ("pair_logistic", "rax", 1.986932 / 3, 3),
        ("pair_hinge", "sum", 2.8, 1),
        ("list_mle", "sum", 1.746340, 1),
        ("softmax", "sum", 1.068610, 1),
    ],
)
def test_losses_md_oracles(loss_type, normalization, expected, count):
    out = listwise_loss(t(S), t(PSI), ones(1, 3), loss_type=loss_type, normalization=normalization)
    assert out.count == count
    assert (out.losses.sum() / out.count).item() == pytest.approx(expected, abs=1e-5)
    assert out.mean().item() == pytest.approx(expected, abs=1e-5)
    assert out.losses.shape == (1,)  # one entry per list, whichever the normalisation


def test_dcg_weights_of_the_running_example():
    """τ = [1, 3, 2] gives the Δ table of the module docstring; Δ is symmetric, 0 on the diagonal."""
    d = dcg_lambda_weights(t(S), t(PSI), ones(1, 3))[0]
    g1 = math.sqrt(2) - 1
    expected = [
        [0.0, (1 - g1) * 0.5, 1 - INV_LOG2_3],
        [(1 - g1) * 0.5, 0.0, g1 * (INV_LOG2_3 - 0.5)],
        [1 - INV_LOG2_3, g1 * (INV_LOG2_3 - 0.5), 0.0],
    ]
    assert d.tolist() == [pytest.approx(row, abs=1e-12) for row in expected]


def test_dcg_weights_follow_the_model_order_not_the_labels():
    """Same ψ = [1, 0.5, 0], scores now s = [0.1, 0.3, 0.2] → τ = [3, 1, 2], 1/D(τ) = [0.5, 1, 0.630930]:
    Δ01 = 0.585786·|0.5 - 1| = 0.292893 (unchanged by coincidence), Δ02 = 1·|0.5 - 0.630930| = 0.130930 (was
    0.369070), Δ12 = 0.414214·|1 - 0.630930| = 0.152874 (was 0.054233).
    """
    s = t([[0.1, 0.3, 0.2]], requires_grad=True)
    d = dcg_lambda_weights(s, t(PSI), ones(1, 3))[0]
    assert not d.requires_grad
    assert d[0, 1].item() == pytest.approx(0.292893, abs=1e-6)
    assert d[0, 2].item() == pytest.approx(0.130930, abs=1e-6)
    assert d[1, 2].item() == pytest.approx(0.152874, abs=1e-6)


def test_dcg_weights_rank_padded_slots_last():
    """A padded slot with the largest (or NaN) score must not take rank 1: s = [0.3, pad, 0.1, 0.2] must give the
    running example's Δ on slots (0, 2, 3) and 0 on every pair touching slot 1.
    """
    mask = t([[True, False, True, True]], dtype=torch.bool)
    ref = dcg_lambda_weights(t(S), t(PSI), ones(1, 3))[0]
    for pad in (9.0, float("nan")):
        d = dcg_lambda_weights(t([[0.3, pad, 0.1, 0.2]]), t([[1.0, 7.0, 0.5, 0.0]]), mask)[0]
        keep = [0, 2, 3]
        assert torch.equal(d[keep][:, keep], ref)
        assert d[1].abs().sum() == 0 and d[:, 1].abs().sum() == 0


def test_rax_differs_from_sum_on_a_list_with_fewer_pairs_than_slots():
    """K = 4, s = [0.2, 0.0, -0.2, 0.4], ψ = [1, 0, 0, 0.5] (slots 1 and 2 tie: 5 pairs, not 6).
    τ by s: slot 3 → 1, slot 0 → 2, slot 1 → 3, slot 2 → 4; 1/D(τ) = [0.630930, 0.5, 0.430677, 1].
    G = [1, 0, 0, 0.414214].
        pair    Δ                                  s_i - s_j   log(1+e^{-(s_i-s_j)})   Δ·ℓ
        (0,1)   1·(0.630930 - 0.5)      = 0.130930    0.2        0.598139                0.078314
        (0,2)   1·(0.630930 - 0.430677) = 0.200253    0.4        0.513015                0.102733
        (0,3)   0.585786·(1 - 0.630930) = 0.216196   -0.2        0.798139                0.172555
        (3,1)   0.414214·(1 - 0.5)      = 0.207107    0.4        0.513015                0.106249
        (3,2)   0.414214·(1 - 0.430677) = 0.235821    0.6        0.437488                0.103169
    sum (one list) = 0.563020;  rax = 4 × 0.563020 / 5 pairs = 0.450416.
    """
    s, psi, mask = t([[0.2, 0.0, -0.2, 0.4]]), t([[1.0, 0.0, 0.0, 0.5]]), ones(1, 4)
    summed = listwise_loss(s, psi, mask, normalization="sum")
    rax = listwise_loss(s, psi, mask, normalization="rax")
    assert (summed.count, rax.count) == (1, 5)
    assert summed.mean().item() == pytest.approx(0.563020, abs=1e-5)
    assert rax.mean().item() == pytest.approx(0.450416, abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# K = 2: the pairwise objectives
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("winner_slot", [0, 1])
def test_k2_pair_logistic_and_list_mle_are_dpo(winner_slot):
    """docs/algorithms.md §1 example: policy (-10, -12), ref (-11, -11), β = 0.1 → s = β·r = (0.1, -0.1),
    s_w - s_l = 0.2:
    pair-logistic = log(1 + e^{-0.2}); list-MLE = -[s_w - logsumexp(s_w, s_l)] - 0 = the same; DPO = 0.598139.
    Also pair-hinge = max(0, 1 - 0.2) = 0.8 = DPO's hinge, and LiPO-λ = Δ·DPO with Δ = |G_1 - G_2|·|1/D(1) - 1/D(2)|
    = 1·(1 - 1/log2 3) = 0.369070 whichever slot the model ranks first.
    """
    policy, ref = [-10.0, -12.0], [-11.0, -11.0]
    labels = [1.0, 0.0]
    if winner_slot == 1:
        policy, ref, labels = policy[::-1], ref[::-1], labels[::-1]
    policy, ref, labels, mask = t([policy]), t([ref]), t([labels]), ones(1, 2)
    scores = ListScores(policy, labels, mask, ref_logps=ref)
    dpo = dpo_loss(scores, DPOLossConfig(beta=0.1)).losses.sum()
    hinge = dpo_loss(scores, DPOLossConfig(beta=0.1, loss_type="hinge")).losses.sum()
    s = 0.1 * (policy - ref)
    assert dpo.item() == pytest.approx(0.598139, abs=1e-6)
    for loss_type in ("pair_logistic", "list_mle"):
        assert listwise_loss(s, labels, mask, loss_type=loss_type).mean().item() == pytest.approx(dpo.item(), abs=1e-12)
        # LiPO takes s = β·(log π_θ - log π_ref) from the scores itself
        lipo = lipo_loss(scores, LiPOLossConfig(beta=0.1, loss_type=loss_type))
        assert (lipo.count, lipo.mean().item()) == (1, pytest.approx(dpo.item(), abs=1e-12))
    assert listwise_loss(s, labels, mask, loss_type="pair_hinge").mean().item() == pytest.approx(hinge.item())
    lam = listwise_loss(s, labels, mask, loss_type="lambda").mean().item()
    assert lam == pytest.approx((1 - INV_LOG2_3) * dpo.item(), abs=1e-12)
    # rax: Δ ×2 (list size) / 1 pair
    rax = listwise_loss(s, labels, mask, loss_type="lambda", normalization="rax").mean().item()
    assert rax == pytest.approx(2 * (1 - INV_LOG2_3) * dpo.item(), abs=1e-12)


def test_k2_lambda_weight_is_constant_when_the_model_order_flips():
    """s = (-0.1, 0.1) with ψ = (1, 0): the model ranks the loser first, τ = (2, 1), Δ still 1·|1/D(2) - 1/D(1)|.
    ℓ = log(1 + e^{0.2}) = 0.798139, so LiPO-λ = 0.369070 · 0.798139 = 0.294570."""
    out = listwise_loss(t([[-0.1, 0.1]]), t([[1.0, 0.0]]), ones(1, 2))
    assert out.mean().item() == pytest.approx((1 - INV_LOG2_3) * math.log1p(math.exp(0.2)), abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------------------------


def test_labels_from_ranks_with_a_tie_and_padding():
    """Ranks stored as -rank: (-1, -2, -2, -3, pad). K = 4 valid; ψ_k = (wins + 0.5·ties incl. itself) / 4:
    best 3 + 0.5 = 3.5 → 0.875; tied pair 1 + 0.5 + 0.5 = 2 → 0.5 each; worst 0 + 0.5 → 0.125; padding → 0.
    """
    psi = labels_from_ranks(torch.tensor([[-1, -2, -2, -3, 0]]), t([[1, 1, 1, 1, 0]], dtype=torch.bool))
    assert psi.tolist() == [[0.875, 0.5, 0.5, 0.125, 0.0]]


def test_labels_from_ranks_keep_the_pairs_of_the_ranks():
    """Distinct ranks of a K-list give ψ = (K - r + 0.5)/K: ranks (2, 1, 3) → (1.5, 2.5, 0.5)/3."""
    psi = labels_from_ranks(t([[-2.0, -1.0, -3.0]]), ones(1, 3))
    assert psi[0].tolist() == pytest.approx([0.5, 2.5 / 3, 0.5 / 3])


def test_labels_from_scores_min_max_and_all_equal():
    """(3, 1, 2, pad 9) → (1, 0, 0.5, 0); a list of equal scores (2, 2) → 0.5 each; padding → 0."""
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    psi = labels_from_scores(t([[3.0, 1.0, 2.0, 9.0], [2.0, 2.0, 0.0, -5.0]]), mask)
    assert psi.tolist() == [[1.0, 0.0, 0.5, 0.0], [0.5, 0.5, 0.0, 0.0]]


# ---------------------------------------------------------------------------------------------------------------
# Padding, ties, NaN
# ---------------------------------------------------------------------------------------------------------------

LISTS = [  # (s, ψ) of lists of lengths 4, 2, 3
    ([0.5, -0.2, 0.9, 0.1], [0.875, 0.125, 0.625, 0.375]),
    ([0.3, 0.4], [0.25, 0.75]),
    ([-0.1, 0.2, 0.0], [1.0, 0.0, 0.5]),
]
CASES = [(lt, "sum") for lt in LISTWISE_LOSS_TYPES] + [(lt, "rax") for lt in ("lambda", "pair_logistic", "pair_hinge")]


@pytest.mark.parametrize(("loss_type", "normalization"), CASES)
def test_padded_batch_equals_lists_one_at_a_time(loss_type, normalization):
    """A [3, 4] batch of lists of lengths 4, 2, 3 (padding: NaN scores, out-of-range labels) gives, per list and in
    total, the same loss_sum and count as each list alone without padding."""
    s = torch.full((3, 4), float("nan"), dtype=F64)
    psi = torch.full((3, 4), 5.0, dtype=F64)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    alone, counts = [], 0
    for b, (sb, pb) in enumerate(LISTS):
        s[b, : len(sb)], psi[b, : len(pb)], mask[b, : len(sb)] = t(sb), t(pb), True
        one = listwise_loss(t([sb]), t([pb]), ones(1, len(sb)), loss_type=loss_type, normalization=normalization)
        alone.append(one.losses.sum().item())
        counts += one.count
    out = listwise_loss(s, psi, mask, loss_type=loss_type, normalization=normalization)
    assert out.losses.tolist() == pytest.approx(alone, abs=1e-12)
    assert out.losses.sum().item() == pytest.approx(sum(alone), abs=1e-12)
    assert out.count == counts == listwise_count(psi, mask, loss_type, normalization)


@pytest.mark.parametrize("loss_type", LISTWISE_LOSS_TYPES)
def test_all_tied_list_contributes_zero_with_finite_gradients(loss_type):
    """List 0 has equal labels (no pair), list 1 one valid slot, list 2 a real list (ψ = (1, 0, ·)). Lists 0 and 1
    contribute exactly 0 (list_mle's and ListNet's formulas would not) yet count as lists; the NaN in the padded
    slots reaches neither the loss nor a gradient, and padded slots get exactly zero gradient.
    """
    nan = float("nan")
    s = t([[0.3, -0.4, 0.2], [0.7, nan, nan], [0.1, -0.1, nan]], requires_grad=True)
    psi = t([[0.5, 0.5, 0.5], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    mask = t([[1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    out = listwise_loss(s, psi, mask, loss_type=loss_type)
    assert out.losses[:2].tolist() == [0.0, 0.0]
    assert out.losses[2].item() > 0
    assert out.count == 3
    out.mean().backward()
    assert torch.isfinite(s.grad).all()
    assert s.grad[:2].abs().sum() == 0 and s.grad[2, 2] == 0


def test_a_row_without_valid_slots_is_not_a_list():
    """Row 1 is all padding: it contributes 0, and neither normalisation counts it (1 list; 1 pair)."""
    s = t([[0.1, -0.1], [float("nan"), float("nan")]], requires_grad=True)
    psi, mask = t([[1.0, 0.0], [0.0, 0.0]]), t([[1, 1], [0, 0]], dtype=torch.bool)
    for loss_type in LISTWISE_LOSS_TYPES:
        out = listwise_loss(s, psi, mask, loss_type=loss_type)
        assert out.count == 1 and out.losses[1].item() == 0.0
        out.mean().backward()
        assert torch.isfinite(s.grad).all() and s.grad[1].abs().sum() == 0
        s.grad = None
    assert listwise_loss(s, psi, mask, normalization="rax").count == 1


def test_nothing_to_learn_is_zero_not_nan():
    """A batch whose every list is tied: loss_sum 0, count = lists (sum) or 0 pairs (rax) and mean() 0."""
    s, psi = t([[0.1, 0.2]], requires_grad=True), t([[1.0, 1.0]])
    for normalization in ("sum", "rax"):
        out = listwise_loss(s, psi, ones(1, 2), normalization=normalization)
        assert out.losses.sum().item() == 0.0 and out.mean().item() == 0.0
    assert listwise_count(psi, ones(1, 2), "lambda", "rax") == 0


@pytest.mark.parametrize("loss_type", LISTWISE_LOSS_TYPES)
def test_large_scores_stay_finite(loss_type):
    s = t([[80.0, -90.0, 5.0]], requires_grad=True)
    out = listwise_loss(s, t([[0.0, 1.0, 0.5]]), ones(1, 3), loss_type=loss_type)
    out.mean().backward()
    assert torch.isfinite(out.losses.sum()) and torch.isfinite(s.grad).all()


def test_list_mle_breaks_label_ties_by_slot_order():
    """ψ = (1, 0.5, 0.5): slots 1 and 2 tie; stable sort keeps slot order, so τ = (0, 1, 2) and the loss equals the
    running example's 1.746340 (whose strict labels give the same order)."""
    out = listwise_loss(t(S), t([[1.0, 0.5, 0.5]]), ones(1, 3), loss_type="list_mle")
    assert out.mean().item() == pytest.approx(1.746340, abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Pluggable weights, argument checks, counts
# ---------------------------------------------------------------------------------------------------------------


def test_weights_plug_in():
    """pair_logistic with the DCG weights is LiPO-λ; a constant weight 2 doubles pair_logistic; a [B, K, K] tensor
    works as well as a callable."""
    s, psi, mask = t(S), t(PSI), ones(1, 3)
    lam = listwise_loss(s, psi, mask).losses.sum().item()
    assert listwise_loss(s, psi, mask, loss_type="pair_logistic", weights=dcg_lambda_weights).losses.sum().item() == lam
    two = torch.full((1, 3, 3), 2.0, dtype=F64)
    doubled = listwise_loss(s, psi, mask, loss_type="pair_logistic", weights=two).losses.sum().item()
    assert doubled == pytest.approx(2 * 1.986932, abs=1e-5)
    assert listwise_loss(s, psi, mask, weights=lambda s_, p_, m_: two).losses.sum().item() == doubled
    with pytest.raises(ValueError, match="pairwise"):
        listwise_loss(s, psi, mask, loss_type="list_mle", weights=two)


@pytest.mark.parametrize(
    ("loss_type", "normalization"),
    [("list_mle", "rax"), ("softmax", "rax"), ("lambdaloss", "sum"), ("lambda", "mean")],
)
def test_bad_options_raise(loss_type, normalization):
    with pytest.raises(ValueError):
        listwise_loss(t(S), t(PSI), ones(1, 3), loss_type=loss_type, normalization=normalization)
    with pytest.raises(ValueError):
        listwise_count(t(PSI), ones(1, 3), loss_type, normalization)


def test_count_from_raw_labels_matches_count_from_psi():
    """The trainer counts before the forward from raw labels (-rank); ψ from those ranks keeps every pair."""
    ranks = torch.tensor([[-1.0, -3.0, -2.0, -2.0], [-2.0, -1.0, 0.0, 0.0]])
    mask = t([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    psi = labels_from_ranks(ranks, mask)
    for norm in ("sum", "rax"):
        assert listwise_count(ranks, mask, "lambda", norm) == listwise_count(psi, mask, "lambda", norm)
    assert listwise_count(ranks, mask, "lambda", "rax") == 5 + 1  # (0>1,0>2,0>3,2>1,3>1) and (1>0)


# ---------------------------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", LISTWISE_LOSS_TYPES)
def test_gradcheck(loss_type):
    """Finite differences vs autograd in float64 on two lists, one padded. Scores are ≥ 0.1 apart, so the DCG ranks
    (and so Δ, which carries no gradient) do not change within the 1e-6 step; for the hinge every s_i - s_j is ≥ 0.05
    away from the kink at 1: list 0 gives 0.35, 1.3, 0.95, 0.95, 0.6, 0.35; list 1 gives 1.6, 1.3, 0.3."""
    s = t([[0.5, 0.15, -0.8, -0.45], [0.3, 1.9, 0.6, 0.0]], requires_grad=True)
    psi = t([[1.0, 0.75, 0.0, 0.25], [0.0, 1.0, 0.5, 0.0]])
    mask = t([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)

    def f(x):
        return listwise_loss(x, psi, mask, loss_type=loss_type).losses

    assert torch.autograd.gradcheck(f, (s,), eps=1e-6, atol=1e-8, rtol=1e-6)
