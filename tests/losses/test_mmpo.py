"""Oracles for ``align.losses.mmpo`` (docs/algorithms.md §3), each derived by hand below.

Running example (docs/algorithms.md §1): s_θ = (-10, -12), s_ref = (-11, -11) → h = 1 - (-1) = 2; β = 0.1 → βh = 0.2.
    log σ(0.2) = -0.5981388694,  log σ(-0.2) = -0.7981388694.
Scores 3 vs 1, γ = 0.5: p = σ(0.5·(3 - 1)) = σ(1) = 0.7310585786, 1 - p = 0.2689414214.
    L = -[p log σ(0.2) + (1 - p) log σ(-0.2)] = 0.7310585786·0.5981388694 + 0.2689414214·0.7981388694
      = 0.4372745 + 0.2146526 = 0.6519271.
"""

from __future__ import annotations

import math

import pytest
import torch

from align.losses import DPOLossConfig, ListScores, LossOutput, MMPOLossConfig, dpo_loss
from align.losses.mmpo import mmpo_loss, rank_margins

F64 = torch.float64
POLICY, REF = [[-10.0, -12.0]], [[-11.0, -11.0]]


def t(x, dtype=F64, **kw) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype, **kw)


def ones(b: int, k: int) -> torch.Tensor:
    return torch.ones(b, k, dtype=torch.bool)


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def ce(p: float, x: float) -> float:
    """-[p log σ(x) + (1 - p) log σ(-x)]."""
    return -(p * math.log(sig(x)) + (1 - p) * math.log(sig(-x)))


def mmpo(policy, ref, scores, mask, *, p_override=None, **config) -> LossOutput:
    """``mmpo_loss`` on plain ``[B, K]`` tensors; ``config`` holds MMPOLossConfig's fields."""
    return mmpo_loss(ListScores(policy, scores, mask, ref_logps=ref), MMPOLossConfig(**config), p_override=p_override)


def dpo(policy, ref, labels, mask, **config) -> LossOutput:
    return dpo_loss(ListScores(policy, labels, mask, ref_logps=ref), DPOLossConfig(**config))


def one_pair(scores=((3.0, 1.0),), **kw) -> LossOutput:
    return mmpo(t(POLICY), t(REF), t(scores), ones(1, 2), **{"beta": 0.1, **kw})


def test_hand_oracle():
    """h = 2, β = 0.1, scores 3 vs 1, γ = 0.5 → 0.651927 (module docstring)."""
    out = one_pair(gamma=0.5)
    p = 1 / (1 + math.exp(-1.0))
    assert p == pytest.approx(0.731059, abs=1e-6)
    assert out.losses.item() == pytest.approx(0.651927, abs=1e-5)
    assert out.losses.item() == pytest.approx(-(p * -0.5981388694 + (1 - p) * -0.7981388694), abs=1e-9)


def test_margin_sets_the_target_not_the_pair_order():
    """Scores 1 vs 3 (slot 1 preferred): the pair is (1, 0), h = r_1 - r_0 = -1 - 1 = -2, βh = -0.2, p = σ(1):
    L = -[p log σ(-0.2) + (1 - p) log σ(0.2)] = 0.731059·0.798139 + 0.268941·0.598139 = 0.744351."""
    out = one_pair(scores=((1.0, 3.0),), gamma=0.5)
    assert (out.pairs.winner.item(), out.pairs.loser.item()) == (1, 0)
    assert out.losses.item() == pytest.approx(0.744351, abs=1e-5)


def test_gamma_inf_is_exactly_dpo():
    """γ = ∞: p = 1 for every strict pair, so L = -log σ(βh), with no ∞·0 = NaN anywhere, on a K = 3 list too."""
    policy, ref = t([[-10.0, -9.0, -12.0], [-5.0, -6.0, 0.0]]), t([[-11.0, -11.0, -11.0], [-5.5, -5.5, 0.0]])
    scores, mask = t([[-1.0, 0.0, -2.0], [2.0, 7.0, 0.0]]), t([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    for margins in ("scores", "ranks"):
        got = mmpo(policy, ref, scores, mask, beta=0.1, gamma=float("inf"), margins=margins)
        want = dpo(policy, ref, scores, mask, beta=0.1, loss_type="sigmoid")
        assert torch.equal(got.losses, want.losses)
        assert torch.equal(got.extras["chosen_rewards"], want.extras["chosen_rewards"])
    assert one_pair(gamma=float("inf")).losses.item() == pytest.approx(0.598139, abs=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_constant_target_is_cdpo(eps):
    """p = 1 - ε: -(1 - ε) log σ(βh) - ε log σ(-βh), TRL's cDPO (0.618139 at ε = 0.1)."""
    got = one_pair(p_override=1 - eps).losses
    want = dpo(t(POLICY), t(REF), t([[1.0, 0.0]]), ones(1, 2), beta=0.1, label_smoothing=eps).losses
    assert got.item() == pytest.approx(want.item(), abs=1e-12)


def test_half_target_is_minimised_at_h_zero():
    """p = 0.5 (what equal margins would give): ∂L/∂h = -β[0.5 σ(-βh) - 0.5 σ(βh)] = 0 at h = 0, L = log 2 there,
    and L(h) > log 2 on both sides."""
    policy = t([[-11.0, -11.0]], requires_grad=True)
    out = mmpo(policy, t(REF), t([[3.0, 1.0]]), ones(1, 2), beta=0.1, p_override=0.5)
    out.losses.sum().backward()
    assert out.losses.item() == pytest.approx(math.log(2), abs=1e-12)
    assert policy.grad.abs().max().item() < 1e-12
    for h_w in (-9.0, -13.0):
        moved = mmpo(t([[h_w, -11.0]]), t(REF), t([[3.0, 1.0]]), ones(1, 2), beta=0.1, p_override=0.5)
        assert moved.losses.item() > math.log(2)


def test_larger_margin_means_sharper_target():
    """γ = 2.2: scores 3 vs 1 give p = σ(4.4) = 0.987872, scores 1.5 vs 1 give p = σ(1.1) = 0.750260; at βh = 0.2 > 0
    the sharper target has the lower loss."""
    sharp = one_pair(scores=((3.0, 1.0),), gamma=2.2).losses.item()
    soft = one_pair(scores=((1.5, 1.0),), gamma=2.2).losses.item()
    p_sharp, p_soft = 1 / (1 + math.exp(-4.4)), 1 / (1 + math.exp(-1.1))
    assert sharp == pytest.approx(p_sharp * 0.5981388694 + (1 - p_sharp) * 0.7981388694, abs=1e-9)
    assert soft == pytest.approx(p_soft * 0.5981388694 + (1 - p_soft) * 0.7981388694, abs=1e-9)
    assert sharp < soft


def test_rank_margins():
    """Mid-rank on [0, 1]: ranks (1, 2, 3) as -rank → (1, 0.5, 0); ranks (1, 2, 2, 3) → below + 0.5·tied over K-1 = 3:
    (3, 1.5, 1.5, 0)/3 = (1, 0.5, 0.5, 0); a 2-list → (1, 0); padding → 0."""
    scores = t([[-1.0, -2.0, -3.0, 0.0], [-1.0, -2.0, -2.0, -3.0], [-2.0, -1.0, 5.0, 5.0]])
    mask = t([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    assert rank_margins(scores, mask).tolist() == [[1, 0.5, 0, 0], [1, 0.5, 0.5, 0], [0, 1, 0, 0]]


def test_rank_margins_in_the_loss():
    """OASST-style list, scores = -rank, ranks (2, 1, 3) → m = (0.5, 1, 0). γ = 2.2, β = 0.1, ref 0, policy (1, 3, -2)
    so βr = (0.1, 0.3, -0.2). Pairs and targets:
        (1, 0): p = σ(2.2·0.5) = 0.750260, βh = 0.2
        (1, 2): p = σ(2.2·1)   = 0.900250, βh = 0.5
        (0, 2): p = σ(2.2·0.5) = 0.750260, βh = 0.3
    """
    out = mmpo(t([[1.0, 3.0, -2.0]]), t([[0.0, 0.0, 0.0]]), t([[-2.0, -1.0, -3.0]]), ones(1, 3),
                    beta=0.1, gamma=2.2, margins="ranks")  # fmt: skip

    want = {(1, 0): ce(sig(1.1), 0.2), (1, 2): ce(sig(2.2), 0.5), (0, 2): ce(sig(1.1), 0.3)}
    got = dict(zip(zip(out.pairs.winner.tolist(), out.pairs.loser.tolist()), out.losses.tolist()))
    assert got == pytest.approx(want, abs=1e-12)


def test_raw_scores_are_not_normalised():
    """Scores (30, 10) with γ = 0.05 give the same p = σ(1) as (3, 1) with γ = 0.5: the raw gap is used."""
    assert one_pair(scores=((30.0, 10.0),), gamma=0.05).losses.item() == pytest.approx(0.651927, abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Shapes: the reward-model trap
# ---------------------------------------------------------------------------------------------------------------


def test_reward_model_shape_trap_is_refused():
    """Rewards as a (B, 1) column next to (B,) scores would broadcast to B×B (docs/algorithms.md §3). Every such call
    raises; the right call — rewards [B, 2], ref 0, β = 1 — gives one loss per pair."""
    rewards = t([[1.0], [0.5], [-0.2]])
    with pytest.raises(ValueError, match="K >= 2"):
        mmpo(rewards, torch.zeros_like(rewards), t([[3.0], [2.0], [1.0]]), ones(3, 1), beta=1.0)
    with pytest.raises(ValueError):
        mmpo(rewards, torch.zeros_like(rewards), t([3.0, 2.0, 1.0]), ones(3, 1), beta=1.0)
    with pytest.raises(ValueError):
        mmpo(t([1.0, 0.5, -0.2]), t([0.0, 0.0, 0.0]), t([3.0, 2.0, 1.0]), torch.ones(3, dtype=bool), beta=1.0)
    with pytest.raises(ValueError):
        mmpo(t([[1.0, 0.0]] * 3), t([[0.0, 0.0]] * 3), t([[3.0, 1.0]]), ones(3, 2), beta=1.0)

    # Reward-model use: r = (2, 1), (0, 1), (1, 1) against scores (3, 1), (1, 2), (2, 1), γ = 0.5 → p = σ(1), σ(0.5),
    # σ(0.5); margins r_w - r_l = 1, 1, 0.
    out = mmpo(t([[2.0, 1.0], [0.0, 1.0], [1.0, 1.0]]), torch.zeros(3, 2, dtype=F64),
                    t([[3.0, 1.0], [1.0, 2.0], [2.0, 1.0]]), ones(3, 2), beta=1.0, gamma=0.5)  # fmt: skip
    assert out.losses.shape == (3,)

    assert out.losses.tolist() == pytest.approx([ce(sig(1), 1), ce(sig(0.5), 1), ce(sig(0.5), 0)], abs=1e-12)


@pytest.mark.parametrize(
    "kwargs", [{"beta": 0.0}, {"gamma": 0.0}, {"gamma": -1.0}, {"margins": "rank"}, {"p_override": 1.5}]
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        one_pair(**kwargs)


def test_padding_and_ties_form_no_pair_and_leak_no_nan():
    """Slot 2 padded with NaN log-probs and the best score; slots 0 and 3 tie. Pairs: (0,1), (3,1) only."""
    nan = float("nan")
    policy = t([[-10.0, -12.0, nan, -10.0]], requires_grad=True)
    ref = t([[-11.0, -11.0, nan, -11.0]])
    out = mmpo(policy, ref, t([[3.0, 1.0, 9.0, 3.0]]), t([[1, 1, 0, 1]], dtype=torch.bool), beta=0.1, gamma=0.5)
    assert sorted(zip(out.pairs.winner.tolist(), out.pairs.loser.tolist())) == [(0, 1), (3, 1)]
    assert out.losses.tolist() == pytest.approx([0.651927, 0.651927], abs=1e-5)
    out.losses.sum().backward()
    assert torch.isfinite(policy.grad).all() and policy.grad[0, 2] == 0
    assert all(math.isfinite(v) for v in out.metrics.values())


@pytest.mark.parametrize("margins", ["scores", "ranks"])
def test_gradcheck(margins):
    """Finite differences vs autograd in float64 on two lists (one padded), w.r.t. policy and reference."""
    policy = t([[-5.4, -7.3, -9.5], [-8.7, -6.6, -3.0]], requires_grad=True)
    ref = t([[-6.0, -7.0, -7.0], [-7.0, -7.0, -1.0]], requires_grad=True)
    scores = t([[2.5, 1.0, 0.0], [0.0, 1.5, 9.0]])
    mask = t([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)

    def f(p, r):
        return mmpo(p, r, scores, mask, beta=0.5, gamma=1.1, margins=margins).losses

    assert torch.autograd.gradcheck(f, (policy, ref), eps=1e-6, atol=1e-8, rtol=1e-6)
