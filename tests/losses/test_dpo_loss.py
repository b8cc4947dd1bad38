"""Oracles for ``align.losses.dpo_loss`` (docs/algorithms.md §1), each derived by hand below.

The running example (docs/algorithms.md §1): s_θ(w) = -10, s_θ(l) = -12, s_ref(w) = s_ref(l) = -11, β = 0.1.
    r_θ(w) = -10 - (-11) = 1,  r_θ(l) = -12 - (-11) = -1,  h = r_θ(w) - r_θ(l) = 2,  βh = 0.2.
    -log σ(0.2)  = log(1 + e^-0.2) = 0.5981388694
    -log σ(-0.2) = log(1 + e^0.2)  = 0.7981388694   (= 0.5981388694 + 0.2)
"""

from __future__ import annotations

import math

import pytest
import torch

from align.losses import DPO_LOSS_TYPES, DPOLossConfig, ListScores, LossOutput, dpo_loss

BETA = 0.1
LOG_SIG_POS = -0.5981388693815918  # log σ(0.2)
LOG_SIG_NEG = -0.7981388693815918  # log σ(-0.2)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def dpo(policy, ref, labels, mask, *, lengths=None, **config) -> LossOutput:
    """``dpo_loss`` on plain ``[B, K]`` tensors; ``config`` holds DPOLossConfig's fields."""
    return dpo_loss(ListScores(policy, labels, mask, lengths=lengths, ref_logps=ref), DPOLossConfig(**config))


def one_pair(loss_type: str = "sigmoid", *, policy=(-10.0, -12.0), ref=(-11.0, -11.0), **kw) -> LossOutput:
    """A single chosen/rejected list: slot 0 preferred (label 1), slot 1 dispreferred (label 0)."""
    return dpo(
        torch.tensor([policy], dtype=torch.float64),
        torch.tensor([ref], dtype=torch.float64),
        torch.tensor([[1.0, 0.0]]),
        torch.ones(1, 2, dtype=torch.bool),
        loss_type=loss_type,
        **{"beta": BETA, **kw},
    )


# ---------------------------------------------------------------------------------------------------------------
# The docs/algorithms.md §1 oracles
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss_type", "kwargs", "expected"),
    [
        # sigmoid: -log σ(βh) = -log σ(0.2) = 0.598139
        ("sigmoid", {}, 0.598139),
        # hinge: max(0, 1 - βh) = 1 - 0.2 = 0.8
        ("hinge", {}, 0.8),
        # ipo with lengths 1 (the summed form): (h - 1/(2β))² = (2 - 5)² = 9
        ("ipo", {"lengths": torch.ones(1, 2)}, 9.0),
        # robust ε = 0.1: [-(0.9)(-0.598139) + 0.1(-0.798139)] / 0.8 = (0.538325 - 0.079814) / 0.8 = 0.573139
        ("robust", {"label_smoothing": 0.1}, 0.573139),
        # cDPO ε = 0.1: -(0.9)(-0.598139) - 0.1(-0.798139) = 0.538325 + 0.079814 = 0.618139
        ("sigmoid", {"label_smoothing": 0.1}, 0.618139),
    ],
    ids=["sigmoid", "hinge", "ipo-sums", "robust-0.1", "cdpo-0.1"],
)
def test_losses_md_oracles(loss_type, kwargs, expected):
    out = one_pair(loss_type, **kwargs)
    assert out.losses.shape == (1,)
    assert out.losses.item() == pytest.approx(expected, abs=1e-5)


def test_oracles_match_the_closed_forms_exactly():
    """The rounded oracles above, recomputed from log σ(±0.2) to 1e-12 (float64 in, float64 out)."""
    eps = 0.1
    assert one_pair("sigmoid").losses.item() == pytest.approx(-LOG_SIG_POS, abs=1e-12)
    assert one_pair("sigmoid", label_smoothing=eps).losses.item() == pytest.approx(
        -(1 - eps) * LOG_SIG_POS - eps * LOG_SIG_NEG, abs=1e-12
    )
    assert one_pair("robust", label_smoothing=eps).losses.item() == pytest.approx(
        (-(1 - eps) * LOG_SIG_POS + eps * LOG_SIG_NEG) / (1 - 2 * eps), abs=1e-12
    )


def test_robust_and_cdpo_with_zero_smoothing_are_plain_dpo():
    """ε = 0: both -(1-0) log σ(βh) - 0 and [-(1-0) log σ(βh) + 0] / 1 reduce to -log σ(βh) = 0.598139."""
    for loss_type in ("sigmoid", "robust"):
        assert one_pair(loss_type, label_smoothing=0.0).losses.item() == pytest.approx(0.598139, abs=1e-5)


def test_robust_differs_from_cdpo():
    """rDPO adds the ε term and renormalises; cDPO subtracts it. 0.573139 ≠ 0.618139 (guards a swapped sign)."""
    robust = one_pair("robust", label_smoothing=0.1).losses.item()
    cdpo = one_pair("sigmoid", label_smoothing=0.1).losses.item()
    assert abs(robust - cdpo) == pytest.approx(0.045, abs=1e-5)


def test_hinge_is_zero_past_the_margin():
    """s_θ(w) = 0, s_θ(l) = -20, refs -11: h = 11 - (-9) = 20, βh = 2 > 1 → max(0, 1 - 2) = 0."""
    assert one_pair("hinge", policy=(0.0, -20.0)).losses.item() == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Identical responses (h = 0)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_identical_responses(beta):
    """Both slots score -8 under the policy and -9 under the reference, so h = 1 - 1 = 0:
    sigmoid -log σ(0) = log 2; hinge max(0, 1 - 0) = 1; ipo (0 - 1/(2β))² = 1/(4β²) (25 at β=0.1, 1 at β=0.5).
    """
    kw = {"policy": (-8.0, -8.0), "ref": (-9.0, -9.0), "beta": beta}
    assert one_pair("sigmoid", **kw).losses.item() == pytest.approx(math.log(2), abs=1e-6)
    assert one_pair("hinge", **kw).losses.item() == pytest.approx(1.0, abs=1e-6)
    # identical responses have equal lengths too: h̄ = 1/3 - 1/3 = 0
    ipo = one_pair("ipo", lengths=torch.tensor([[3, 3]]), **kw).losses.item()
    assert ipo == pytest.approx(1 / (4 * beta**2), abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# IPO length normalisation
# ---------------------------------------------------------------------------------------------------------------


def test_ipo_is_length_normalised():
    """s_θ = (-10, -13), s_ref = (-11, -11) → r_w = 1, r_l = -2 (h = 3 in the summed form), β = 0.1.
    lengths (2, 4): h̄ = 1/2 - (-2/4) = 1.0      → (1.0 - 5)²  = 16.0
    lengths (4, 2): h̄ = 1/4 - (-2/2) = 1.25     → (1.25 - 5)² = 14.0625
    lengths (1, 1): h̄ = 3 (the summed form)      → (3 - 5)²    = 4.0
    """
    kw = {"policy": (-10.0, -13.0)}
    assert one_pair("ipo", lengths=torch.tensor([[2, 4]]), **kw).losses.item() == pytest.approx(16.0, abs=1e-5)
    assert one_pair("ipo", lengths=torch.tensor([[4, 2]]), **kw).losses.item() == pytest.approx(14.0625, abs=1e-5)
    assert one_pair("ipo", lengths=torch.tensor([[1, 1]]), **kw).losses.item() == pytest.approx(4.0, abs=1e-5)


def test_ipo_zero_length_counts_as_one():
    """As TRL does (``mask.sum().clamp(min=1)``), an empty response divides by 1 instead of producing inf/NaN."""
    kw = {"policy": (-10.0, -13.0)}
    zero = one_pair("ipo", lengths=torch.tensor([[0, 0]]), **kw).losses.item()
    assert zero == pytest.approx(4.0, abs=1e-5)


def test_ipo_without_lengths_raises():
    with pytest.raises(ValueError, match="lengths"):
        one_pair("ipo")


# ---------------------------------------------------------------------------------------------------------------
# Implicit rewards and metrics
# ---------------------------------------------------------------------------------------------------------------


def test_implicit_rewards_are_beta_times_logratio_and_detached():
    """chosen β·r_θ(w) = 0.1·1 = 0.1, rejected β·r_θ(l) = 0.1·(-1) = -0.1; margin 0.2; accuracy 1."""
    policy = torch.tensor([[-10.0, -12.0]], requires_grad=True)
    out = dpo(policy, torch.tensor([[-11.0, -11.0]]), torch.tensor([[1.0, 0.0]]), torch.ones(1, 2, dtype=bool))
    assert out.extras["chosen_rewards"].tolist() == pytest.approx([0.1], abs=1e-6)
    assert out.extras["rejected_rewards"].tolist() == pytest.approx([-0.1], abs=1e-6)
    assert not out.extras["chosen_rewards"].requires_grad and not out.extras["rejected_rewards"].requires_grad
    assert out.losses.requires_grad
    m = out.metrics
    assert m["rewards/chosen"] == pytest.approx(0.1, abs=1e-6)
    assert m["rewards/rejected"] == pytest.approx(-0.1, abs=1e-6)
    assert m["rewards/margins"] == pytest.approx(0.2, abs=1e-6)
    assert m["rewards/accuracies"] == 1.0


def test_rewards_scale_with_beta():
    """β = 0.5: chosen 0.5·1 = 0.5, rejected 0.5·(-1) = -0.5."""
    out = one_pair(beta=0.5)
    assert out.extras["chosen_rewards"].item() == pytest.approx(0.5)
    assert out.extras["rejected_rewards"].item() == pytest.approx(-0.5)


def test_reward_accuracy_is_strict():
    """Three lists, reference -11 everywhere:
    list 0: policy (-10, -12) → r = (1, -1), margin  0.2 → correct
    list 1: policy (-10, -10) → r = (1,  1), margin  0   → a tie is WRONG (strict >)
    list 2: policy (-12, -10) → r = (-1, 1), margin -0.2 → wrong
    accuracy 1/3; mean margin (0.2 + 0 - 0.2)/3 = 0; mean chosen (0.1 + 0.1 - 0.1)/3 = 1/30.
    """
    out = dpo(
        torch.tensor([[-10.0, -12.0], [-10.0, -10.0], [-12.0, -10.0]]),
        torch.full((3, 2), -11.0),
        torch.tensor([[1.0, 0.0]] * 3),
        torch.ones(3, 2, dtype=torch.bool),
    )
    m = out.metrics
    assert m["rewards/accuracies"] == pytest.approx(1 / 3)
    assert m["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert m["rewards/chosen"] == pytest.approx(1 / 30, abs=1e-6)
    # Per pair: -log σ(0.2), -log σ(0) = log 2, -log σ(-0.2)
    assert out.losses.tolist() == pytest.approx([0.598139, math.log(2), 0.798139], abs=1e-5)


def test_metrics_empty_without_pairs():
    out = dpo(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), torch.ones(1, 2, dtype=bool))
    assert len(out.pairs) == 0 and out.losses.numel() == 0
    assert out.metrics == {}


# ---------------------------------------------------------------------------------------------------------------
# Pairs: ties, padding, lists of K > 2
# ---------------------------------------------------------------------------------------------------------------


def test_tied_labels_form_no_pair():
    """Labels (2, 1, 1): slot 0 beats slots 1 and 2; the tie 1 = 1 is no pair. So 2 pairs, not 3."""
    out = dpo(
        torch.tensor([[-10.0, -12.0, -12.0]]),
        torch.full((1, 3), -11.0),
        torch.tensor([[2.0, 1.0, 1.0]]),
        torch.ones(1, 3, dtype=torch.bool),
    )
    assert sorted(zip(out.pairs.winner.tolist(), out.pairs.loser.tolist())) == [(0, 1), (0, 2)]
    assert out.losses.tolist() == pytest.approx([0.598139, 0.598139], abs=1e-5)


def test_padded_slot_forms_no_pair_and_leaks_no_nan():
    """Slot 2 is padding (mask False) with garbage: label 5 (would beat both real slots) and NaN log-probs.
    Only the real pair (0 > 1) counts, with the oracle loss 0.598139; the loss and every gradient stay finite and
    the padded slot gets exactly zero gradient.
    """
    nan = float("nan")
    for loss_type, kw, expected in [
        ("sigmoid", {}, 0.598139),
        ("hinge", {}, 0.8),
        ("robust", {"label_smoothing": 0.1}, 0.573139),
        ("ipo", {"lengths": torch.tensor([[1, 1, 0]])}, 9.0),
    ]:
        policy = torch.tensor([[-10.0, -12.0, nan]], requires_grad=True)
        ref = torch.tensor([[-11.0, -11.0, nan]], requires_grad=True)
        out = dpo(
            policy,
            ref,
            torch.tensor([[1.0, 0.0, 5.0]]),
            torch.tensor([[True, True, False]]),
            loss_type=loss_type,
            **kw,
        )
        assert len(out.pairs) == 1, loss_type
        assert (out.pairs.winner.item(), out.pairs.loser.item()) == (0, 1)
        loss = out.losses.mean()
        assert loss.item() == pytest.approx(expected, abs=1e-5), loss_type
        loss.backward()
        for g in (policy.grad, ref.grad):
            assert torch.isfinite(g).all(), (loss_type, g)
            assert g[0, 2].item() == 0.0
        m = out.metrics
        assert all(math.isfinite(v) for v in m.values())


def test_nan_label_in_padded_slot_forms_no_pair():
    """A NaN label on a padded slot: NaN compares False anyway, and the mask removes the slot regardless."""
    out = dpo(
        torch.tensor([[-10.0, -12.0, 0.0]]),
        torch.tensor([[-11.0, -11.0, 0.0]]),
        torch.tensor([[1.0, 0.0, float("nan")]]),
        torch.tensor([[True, True, False]]),
    )
    assert len(out.pairs) == 1
    assert out.losses.item() == pytest.approx(0.598139, abs=1e-5)


def test_ranked_list_of_three_gives_three_pairs():
    """Ranks stored as -rank, out of order: labels (-1, 0, -2) → slot 1 best, then slot 0, then slot 2.
    policy (-10, -9, -12), ref -11 → r = (1, 2, -1). β = 0.1. Pairs (winner, loser) and h = r_w - r_l:
        (1, 0): h = 2 - 1    = 1 → -log σ(0.1) = 0.644397
        (0, 2): h = 1 - (-1) = 2 → -log σ(0.2) = 0.598139
        (1, 2): h = 2 - (-1) = 3 → -log σ(0.3) = 0.554355
    chosen rewards β·r_w: 0.2, 0.1, 0.2; rejected β·r_l: 0.1, -0.1, -0.1.
    """
    out = dpo(
        torch.tensor([[-10.0, -9.0, -12.0]]),
        torch.full((1, 3), -11.0),
        torch.tensor([[-1.0, 0.0, -2.0]]),
        torch.ones(1, 3, dtype=torch.bool),
    )
    got = {
        (win, lose): (loss, cr, rr)
        for win, lose, loss, cr, rr in zip(
            out.pairs.winner.tolist(),
            out.pairs.loser.tolist(),
            out.losses.tolist(),
            out.extras["chosen_rewards"].tolist(),
            out.extras["rejected_rewards"].tolist(),
        )
    }
    assert set(got) == {(1, 0), (0, 2), (1, 2)}
    assert got[(1, 0)] == pytest.approx((0.644397, 0.2, 0.1), abs=1e-5)
    assert got[(0, 2)] == pytest.approx((0.598139, 0.1, -0.1), abs=1e-5)
    assert got[(1, 2)] == pytest.approx((0.554355, 0.2, -0.1), abs=1e-5)
    assert out.pairs.batch.tolist() == [0, 0, 0]


def test_batch_of_lists_keeps_each_pair_in_its_own_list():
    """Two K=2 lists; in list 1 the preferred response is in slot 1 (labels (0, 1)).
    list 0: policy (-10, -12) → h = 2 → 0.598139
    list 1: policy (-13, -10), ref (-11, -11), preferred slot 1: h = r_1 - r_0 = 1 - (-2) = 3 → 0.554355
    """
    out = dpo(
        torch.tensor([[-10.0, -12.0], [-13.0, -10.0]]),
        torch.full((2, 2), -11.0),
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        torch.ones(2, 2, dtype=torch.bool),
    )
    assert out.pairs.batch.tolist() == [0, 1]
    assert out.pairs.winner.tolist() == [0, 1]
    assert out.pairs.loser.tolist() == [1, 0]
    assert out.losses.tolist() == pytest.approx([0.598139, 0.554355], abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"beta": 0.0},
        {"beta": -0.1},
        {"label_smoothing": 0.5},
        {"label_smoothing": 0.7},
        {"label_smoothing": -0.1},
        {"loss_type": "kto"},
        {"loss_type": "SIGMOID"},
        {"loss_type": "ipo"},  # no lengths
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        dpo(
            torch.tensor([[-10.0, -12.0]]),
            torch.tensor([[-11.0, -11.0]]),
            torch.tensor([[1.0, 0.0]]),
            torch.ones(1, 2, dtype=torch.bool),
            **kwargs,
        )


def test_loss_type_list_is_what_dpo_loss_accepts():
    lengths = torch.ones(1, 2)
    for loss_type in DPO_LOSS_TYPES:
        assert torch.isfinite(one_pair(loss_type, lengths=lengths).losses).all()


# ---------------------------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------------------------


def test_hand_derived_gradients():
    """Running example (h = 2, β = 0.1), d/ds_θ(w) = -d/ds_θ(l) = -d/ds_ref(w) = d/ds_ref(l) = ∂L/∂h:
    sigmoid: ∂/∂h -log σ(βh) = -β σ(-βh) = -0.1 · σ(-0.2) = -0.0450166
    hinge:   ∂/∂h (1 - βh)   = -β = -0.1 (active region)
    ipo:     ∂/∂h (h - 5)²   = 2 (h - 5) = -6 (lengths 1)
    """
    for loss_type, kw, d_dh in [
        ("sigmoid", {}, -BETA * _sigmoid(-0.2)),
        ("hinge", {}, -BETA),
        ("ipo", {"lengths": torch.ones(1, 2)}, -6.0),
    ]:
        policy = torch.tensor([[-10.0, -12.0]], dtype=torch.float64, requires_grad=True)
        ref = torch.tensor([[-11.0, -11.0]], dtype=torch.float64, requires_grad=True)
        out = dpo(policy, ref, torch.tensor([[1.0, 0.0]]), torch.ones(1, 2, dtype=bool), loss_type=loss_type, **kw)
        out.losses.sum().backward()
        assert policy.grad[0].tolist() == pytest.approx([d_dh, -d_dh], abs=1e-7), loss_type
        assert ref.grad[0].tolist() == pytest.approx([-d_dh, d_dh], abs=1e-7), loss_type


@pytest.mark.parametrize(
    ("loss_type", "kwargs"),
    [
        ("sigmoid", {}),
        ("sigmoid", {"label_smoothing": 0.2}),
        ("robust", {"label_smoothing": 0.2}),
        ("hinge", {}),
        ("ipo", {"lengths": torch.tensor([[3, 5, 2], [1, 4, 7]])}),
    ],
    ids=["sigmoid", "cdpo", "robust", "hinge", "ipo"],
)
def test_gradcheck(loss_type, kwargs):
    """Finite differences vs autograd in float64 on two K=3 lists (one with a padded slot), w.r.t. both inputs.

    β = 0.5. List 0 labels (2, 1, 0) → pairs (0,1), (0,2), (1,2); list 1 labels (0, 1, ·) with slot 2 padded →
    pair (1, 0). Log-ratios r = policy - ref: list 0 (0.6, -0.3, -2.5), list 1 (-1.7, 0.4, ·). So βh over the
    pairs is 0.45, 1.55, 1.1 and 1.05 — none at the hinge kink βh = 1 (and the finite-difference step 1e-6 is far
    smaller than the 0.05 distance); two pairs are active, two are past the margin.
    """
    policy = torch.tensor([[-5.4, -7.3, -9.5], [-8.7, -6.6, -3.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-6.0, -7.0, -7.0], [-7.0, -7.0, -1.0]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])

    def f(p, r):
        return dpo(p, r, labels, mask, beta=0.5, loss_type=loss_type, **kwargs).losses

    out = f(policy, ref)
    assert out.shape == (4,)
    beta_h = 0.5 * torch.tensor([0.9, 3.1, 2.2, 2.1], dtype=torch.float64)
    with torch.no_grad():
        got = dpo(policy, ref, labels, mask, beta=0.5, loss_type=loss_type, **kwargs)
        r_w, r_l = got.pairs.take(policy - ref)
    assert sorted((0.5 * (r_w - r_l)).tolist()) == pytest.approx(sorted(beta_h.tolist()), abs=1e-12)
    assert torch.autograd.gradcheck(f, (policy, ref), eps=1e-6, atol=1e-8, rtol=1e-6)
