"""Oracles for ``align.losses.cringe`` (docs/algorithms.md §4), each derived by hand below.

Token example, V = 5 logits x = (2.0, 1.0, 0.5, 3.0, -1.0); top-2 = tokens (3, 0).
    target 3 (the top):          drop it → c = 0,  loss softplus(3 - 2)    = log(1 + e)      = 1.313262
    target 0 (second):           drop it → c = 3,  loss softplus(2 - 3)    = log(1 + e^-1)   = 0.313262
    target 4 (not in the top-2): drop token 0 (the (k+1)-th) → c = 3, loss softplus(-1 - 3) = 0.018150
Pair example: winner log p = -6 over 3 tokens, loser log p = -10 over 5 tokens, loser's summed Cringe 2.5; α = 1,
b = 2, τ = 1. CE = 6/3 = 2, CT = 2.5/5 = 0.5.
    margin "sum":  M = -6 - (-10) = 4,     g = σ((2 - 4)/1) = σ(-2) = 0.119203, L = 2 + 0.5·0.119203 = 2.059601
    margin "mean": M = -2 - (-2) = 0,      g = σ(2)  = 0.880797,               L = 2 + 0.5·0.880797 = 2.440399
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from align.losses.cringe import cringe_positive_tokens, cringe_token_losses, pairwise_cringe_loss

F64 = torch.float64
X5 = [2.0, 1.0, 0.5, 3.0, -1.0]


def t(x, dtype=F64, **kw) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype, **kw)


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def one_token(target: int, **kw):
    logits = t([[X5]], requires_grad=True)  # [1, 1, 5]
    return logits, cringe_token_losses(logits, torch.tensor([[target]]), torch.ones(1, 1, dtype=torch.bool), **kw)


# ---------------------------------------------------------------------------------------------------------------
# Token-level Cringe
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "c", "expected"),
    [(3, 0, math.log1p(math.e)), (0, 3, math.log1p(math.exp(-1))), (4, 3, math.log1p(math.exp(-4)))],
    ids=["target-is-top", "target-is-second", "target-not-in-top-2"],
)
def test_k1_contrasts_with_the_top_non_target_token(target, c, expected):
    logits, loss = one_token(target)
    mask = torch.ones(1, 1, dtype=torch.bool)
    assert cringe_positive_tokens(logits, torch.tensor([[target]]), mask).item() == c
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_gradient_pushes_the_negative_token_below_the_contrast_token():
    """d softplus(x_y - x_c)/dx_y = σ(x_y - x_c) > 0 and d/dx_c = -σ(x_y - x_c): descent lowers x[y], raises x[c].
    Target 3, c = 0: σ(1) = 0.731059 on token 3, -0.731059 on token 0, nothing elsewhere."""
    logits, loss = one_token(3)
    loss.sum().backward()
    assert logits.grad[0, 0].tolist() == pytest.approx([-sig(1), 0, 0, sig(1), 0], abs=1e-12)


def test_topk_sampling_stays_in_the_top_k_non_target_tokens():
    """k = 3, V = 8, 6000 positions with the same logits. Target token 1 sits in the top-4 (tokens 6, 1, 3, 0), so
    the candidates are 6, 3, 0 with probabilities softmax(4, 2.5, 2) = (0.736, 0.164, 0.100): no other token is ever
    drawn, each candidate is, the frequencies match, and a seeded generator repeats the draw exactly."""
    row = [2.0, 3.0, -1.0, 2.5, 0.0, -3.0, 4.0, 1.0]
    n = 6000
    logits = t([row] * n).reshape(1, n, 8)
    targets = torch.full((1, n), 1)
    mask = torch.ones(1, n, dtype=torch.bool)
    draw = cringe_positive_tokens(logits, targets, mask, k=3, generator=torch.Generator().manual_seed(0))
    assert set(draw.unique().tolist()) == {6, 3, 0}
    probs = torch.softmax(t([4.0, 2.5, 2.0]), 0)
    for tok, p in zip((6, 3, 0), probs.tolist()):
        assert (draw == tok).double().mean().item() == pytest.approx(p, abs=0.03)
    again = cringe_positive_tokens(logits, targets, mask, k=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draw, again)
    # Target 2 (not in the top-4): the 4th (token 0) is dropped instead, candidates 6, 1, 3
    other = cringe_positive_tokens(logits, torch.full((1, n), 2), mask, k=3, generator=torch.Generator().manual_seed(1))
    assert set(other.unique().tolist()) == {6, 1, 3}


def test_masked_positions_are_zero_without_gradient_or_nan():
    """Position 1 is masked, with NaN logits and an ignore-index target: its loss is 0 and its logits get exactly zero
    gradient; position 0 is the target-is-top example."""
    nan = float("nan")
    logits = t([[X5, [nan] * 5]], requires_grad=True)
    loss = cringe_token_losses(logits, torch.tensor([[3, -100]]), torch.tensor([[True, False]]))
    assert loss.tolist() == [[pytest.approx(math.log1p(math.e)), 0.0]]
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 1].abs().sum() == 0
    for k in (1, 3):  # the sampling path too
        out = cringe_token_losses(logits.detach(), torch.tensor([[3, -100]]), torch.tensor([[True, False]]), k=k)
        assert out[0, 1] == 0 and torch.isfinite(out).all()


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"k": 5}])
def test_bad_k_raises(kwargs):
    with pytest.raises(ValueError):
        one_token(3, **kwargs)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        cringe_token_losses(t([X5]), torch.tensor([3]), torch.ones(1, dtype=torch.bool))


def test_token_gradcheck_k1():
    """Logits with gaps ≥ 0.1 between the top tokens, so the top non-target token does not change within the step."""
    logits = t([[[0.3, 1.2, -0.5, 0.9], [2.0, -1.0, 0.4, 0.1], [0.0, 0.5, 1.5, -2.0]]], requires_grad=True)
    targets, mask = torch.tensor([[1, 3, 0]]), torch.tensor([[True, True, False]])

    def f(x):
        return cringe_token_losses(x, targets, mask)

    assert torch.autograd.gradcheck(f, (logits,), eps=1e-6, atol=1e-8, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Pairwise Cringe
# ---------------------------------------------------------------------------------------------------------------


def pair(margin="sum", **kw):
    args = [t([x], requires_grad=True) for x in (-6.0, 3.0, -10.0, 5.0, 2.5)]
    return args, pairwise_cringe_loss(*args, **{"alpha": 1.0, "b": 2.0, "tau": 1.0, "margin": margin, **kw})


@pytest.mark.parametrize(
    ("margin", "m", "g", "expected"), [("sum", 4.0, sig(-2), 2.059601), ("mean", 0.0, sig(2), 2.440399)]
)
def test_pair_oracle(margin, m, g, expected):
    _, out = pair(margin)
    assert out.losses.item() == pytest.approx(expected, abs=1e-6)
    x = out.extras
    assert (x["ce"].item(), x["cringe"].item(), x["margin"].item()) == pytest.approx((2.0, 0.5, m))
    assert x["gate"].item() == pytest.approx(g, abs=1e-12)
    assert out.count == 1
    assert out.metrics == pytest.approx(
        {"cringe/ce": 2.0, "cringe/token_cringe": 0.5, "cringe/gate": g, "cringe/margin": m}
    )


def test_gate_values():
    """g = σ((b - M)/τ): M = b → 0.5; M = b + 20τ → σ(-20) ≈ 2e-9 (off); M = b - 20τ → σ(20) ≈ 1 (fully on).
    Here b = 1, τ = 0.5; the winner's log p is 0 and the loser's -M, so the summed margin is M."""
    for m, g in [(1.0, 0.5), (11.0, sig(-20)), (-9.0, sig(20))]:
        out = pairwise_cringe_loss(t([0.0]), t([4.0]), t([-m]), t([4.0]), t([1.0]), b=1.0, tau=0.5)
        assert out.extras["gate"].item() == pytest.approx(g, abs=1e-12)
    assert sig(-20) < 1e-8 and sig(20) > 1 - 1e-8


def test_alpha_zero_is_sft_cross_entropy():
    """α = 0: the loss is the winner's mean token NLL, i.e. F.cross_entropy over its response tokens only."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 7, generator=g, dtype=F64)
    targets = torch.randint(0, 7, (2, 6), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    token_logps = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    logps = torch.where(mask, token_logps, 0).sum(-1)
    ntok = mask.sum(-1)
    cringe = cringe_token_losses(logits, targets, mask).sum(-1)
    out = pairwise_cringe_loss(logps, ntok, logps - 3, ntok, cringe, alpha=0.0, b=0.0, tau=1.0)
    for i in range(2):
        ce = F.cross_entropy(logits[i][mask[i]], targets[i][mask[i]])
        assert out.losses[i].item() == pytest.approx(ce.item(), abs=1e-12)


def test_gate_is_detached_by_default():
    """detach_gate=True: the loser's log p enters only through g, so it gets no gradient, and the winner's gradient is
    CE's alone, -1/n_w = -1/3. detach_gate=False: ∂L/∂M = -α·CT·g(1-g)/τ = -0.5·0.119203·0.880797 = -0.052497, so
    ∂L/∂log p_l = +0.052497 and ∂L/∂log p_w = -1/3 - 0.052497."""
    (w, _, l_, _, cr), out = pair()
    out.losses.sum().backward()
    assert l_.grad is None  # not even in the graph
    assert w.grad.item() == pytest.approx(-1 / 3, abs=1e-12)
    assert cr.grad.item() == pytest.approx(sig(-2) / 5, abs=1e-12)  # α·g/n_l
    (w, _, l_, _, _), out = pair(detach_gate=False)
    out.losses.sum().backward()
    dm = -0.5 * sig(-2) * sig(2)
    assert l_.grad.item() == pytest.approx(-dm, abs=1e-12)
    assert w.grad.item() == pytest.approx(-1 / 3 + dm, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs", [{"tau": 0.0}, {"tau": -1.0}, {"alpha": -0.5}, {"margin": "avg"}], ids=lambda kw: str(kw)
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        pair(**kwargs)


def test_pair_shapes_must_agree():
    """A (P, 1) column next to (P,) tensors would broadcast to P×P: refused."""
    p = t([-6.0, -7.0])
    with pytest.raises(ValueError):
        pairwise_cringe_loss(p[:, None], t([3.0, 3.0]), p, t([5.0, 5.0]), t([1.0, 1.0]), b=0.0, tau=1.0)


@pytest.mark.parametrize("margin", ["sum", "mean"])
def test_pair_gradcheck(margin):
    """With the gate attached (finite differences see the gate move, so the detached default cannot pass by design;
    its gradient is checked by hand above)."""
    chosen, rejected, cringe = (
        t([-6.0, -4.5], requires_grad=True),
        t([-10.0, -3.0], requires_grad=True),
        t([2.5, 0.7], requires_grad=True),
    )
    nw, nl = t([3.0, 2.0]), t([5.0, 4.0])

    def f(c, r, cr):
        return pairwise_cringe_loss(c, nw, r, nl, cr, alpha=0.7, b=1.5, tau=2.0, margin=margin,
                                    detach_gate=False).losses  # fmt: skip

    assert torch.autograd.gradcheck(f, (chosen, rejected, cringe), eps=1e-6, atol=1e-8, rtol=1e-6)
