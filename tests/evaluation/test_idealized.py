"""Idealized ranking accuracy R*, R̃* (Chen et al. 2024, docs/algorithms.md §7) on hand-made reference log-probs, and the
Theorem 4.1 oracle against our DPO loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from align.evaluation.idealized import DEFAULT_BETAS, UNANIMOUS_ALPHA, idealized_by_beta, idealized_correct
from align.losses import DPOLossConfig, ListScores, dpo_loss
from align.ranking_metrics import pairwise_accuracy

LOG_ODDS_999 = 6.906754778648554  # log(0.999 / 0.001) = log(999)

# Four pairs with log π_ref(y_w) − log π_ref(y_l) = −3, −1, −0.5, +1. Winners sit in slot 0 for pairs 0 and 2 and
# in slot 1 for pairs 1 and 3, so the orientation of the comparison is checked too.
REF = torch.tensor([[-13.0, -10.0], [-8.0, -9.0], [-4.5, -4.0], [-6.0, -5.0]], dtype=torch.float64)
LABELS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
MASK = torch.ones(4, 2, dtype=torch.bool)

# Shifts (1/β)·log(999): 690.7, 69.07, 6.907, 3.453, 2.302, 1.381, 0.691, 0.0069; a pair is right iff d + shift > 0.
HAND = [
    (0.01, [1, 1, 1, 1]),
    (0.1, [1, 1, 1, 1]),
    (1.0, [1, 1, 1, 1]),  # 6.9 fixes −3
    (2.0, [1, 1, 1, 1]),  # −3 + 3.45 > 0
    (3.0, [0, 1, 1, 1]),  # −3 + 2.30 < 0, −1 + 2.30 > 0
    (5.0, [0, 1, 1, 1]),  # 1.38 fixes −1 and −0.5 but not −3
    (10.0, [0, 0, 1, 1]),  # 0.69 fixes −0.5 only
    (1000.0, [0, 0, 0, 1]),  # the reference's own ranking
]


def test_log_odds_constant():
    assert math.log(999) == pytest.approx(LOG_ODDS_999, abs=1e-12)
    assert UNANIMOUS_ALPHA == pytest.approx(0.999)
    assert DEFAULT_BETAS == (0.01, 0.1, 1.0, 5.0, 10.0)


@pytest.mark.parametrize(("beta", "expected"), HAND)
def test_r_star_by_hand(beta, expected):
    assert idealized_correct(REF, LABELS, MASK, beta=beta).tolist() == expected


def test_r_star_default_alpha_is_unanimous():
    assert torch.equal(idealized_correct(REF, LABELS, MASK, beta=5.0),
                       idealized_correct(REF, LABELS, MASK, beta=5.0, alpha=0.999))
    # a less lopsided rater split shifts less: α = 0.75 gives log 3 = 1.0986 at β = 1, fixing −1 and −0.5 only
    assert idealized_correct(REF, LABELS, MASK, beta=1.0, alpha=0.75).tolist() == [0, 1, 1, 1]


def test_r_star_is_strict():
    # α = 0.75: α / (1 − α) = 3 exactly, so at β = 1 the shift is exactly log 3; a difference of exactly −log 3
    # is a tie between the idealized policy's log-probs, and a tie is not counted
    tie = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    lab, m = torch.tensor([[1.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool)
    assert math.log(0.75 / (1 - 0.75)) == math.log(3.0)
    assert idealized_correct(tie, lab, m, beta=1.0, alpha=0.75).tolist() == [0]
    assert idealized_correct(tie - 1e-9 * torch.tensor([[0.0, 1.0]]), lab, m, beta=1.0, alpha=0.75).tolist() == [1]
    assert idealized_correct(tie + 1e-9 * torch.tensor([[0.0, 1.0]]), lab, m, beta=1.0, alpha=0.75).tolist() == [0]
    # β = 2 halves the shift exactly
    half = torch.tensor([[0.0, math.log(3.0) / 2]], dtype=torch.float64)
    assert idealized_correct(half, lab, m, beta=2.0, alpha=0.75).tolist() == [0]


def test_r_tilde_star_uses_per_token_means():
    # pair 0: summed −20 vs −5 (d = −15, wrong at β = 10) but means −1 vs −2.5 (d = +1.5, right)
    # pair 1: summed −4 vs −6 (d = +2, right) but means −2 vs −1 (d = −1, wrong at β = 10: −1 + 0.69 < 0)
    ref = torch.tensor([[-20.0, -5.0], [-4.0, -6.0]], dtype=torch.float64)
    lengths = torch.tensor([[20.0, 2.0], [2.0, 6.0]])
    lab, m = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.ones(2, 2, dtype=torch.bool)
    assert idealized_correct(ref, lab, m, beta=10.0).tolist() == [0, 1]
    assert idealized_correct(ref, lab, m, beta=10.0, lengths=lengths).tolist() == [1, 0]
    # at β = 1 (shift 6.9) the mean difference −1 is fixed, the summed −15 is not
    assert idealized_correct(ref, lab, m, beta=1.0, lengths=lengths).tolist() == [1, 1]
    assert idealized_correct(ref, lab, m, beta=1.0).tolist() == [0, 1]
    by = idealized_by_beta(ref, lab, m, lengths, betas=(1.0, 10.0))
    assert list(by) == [1.0, 10.0]
    assert by[10.0]["summed"].tolist() == [0, 1] and by[10.0]["length_normalized"].tolist() == [1, 0]
    assert by[1.0]["summed"].tolist() == [0, 1] and by[1.0]["length_normalized"].tolist() == [1, 1]
    assert list(idealized_by_beta(ref, lab, m, lengths)) == list(DEFAULT_BETAS)


def test_lists_count_every_labelled_pair():
    ref = torch.tensor([[-10.0, -1.0, -5.0], [0.0, -20.0, -1.0], [-1.0, -30.0, 99.0]], dtype=torch.float64)
    labels = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 7.0]])
    mask = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])
    # list 0 pairs d: 0>1 −9, 0>2 −5, 1>2 +4;  list 1 (0 ~ 1 tied: no pair): 0>2 +1, 1>2 −19;  list 2: 0>1 +29
    assert idealized_correct(ref, labels, mask, beta=10.0).tolist() == [1, 1, 1]
    assert idealized_correct(ref, labels, mask, beta=1.0).tolist() == [2, 1, 1]  # shift 6.9: −5 fixed, −9 not
    assert idealized_correct(ref, labels, mask, beta=0.1).tolist() == [3, 2, 1]  # shift 69: all (3 + 2 + 1 pairs)
    assert idealized_correct(ref, labels, mask, beta=0.01).tolist() == [3, 2, 1]  # the padded slot never counts


def test_large_beta_gives_the_reference_strict_accuracy():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(300, 3, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 3, (300, 3), generator=g).double()
    mask = torch.ones(300, 3, dtype=torch.bool)
    mask[:100, 2] = False
    own = pairwise_accuracy(ref, labels, mask)
    r_star = idealized_correct(ref, labels, mask, beta=1e6)
    assert r_star.sum().item() / own["n_pairs"] == pytest.approx(own["pairwise_accuracy"])
    assert 0.3 < own["pairwise_accuracy"] < 0.7
    # and small β makes every pair right
    assert idealized_correct(ref, labels, mask, beta=1e-4).sum().item() == own["n_pairs"]


@pytest.mark.parametrize("alpha", [0.5, 1.0, 0.3, 1.2, 0.0, math.nan])
def test_alpha_outside_open_interval_raises(alpha):
    with pytest.raises(ValueError, match="alpha"):
        idealized_correct(REF, LABELS, MASK, beta=1.0, alpha=alpha)


@pytest.mark.parametrize("beta", [0.0, -1.0, math.nan])
def test_nonpositive_beta_raises(beta):
    with pytest.raises(ValueError, match="beta"):
        idealized_correct(REF, LABELS, MASK, beta=beta)


def _random_pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(n, 2, generator=g, dtype=torch.float64) * 5
    winner_first = torch.rand(n, generator=g) < 0.5
    labels = torch.stack([winner_first.double(), (~winner_first).double()], dim=1)
    return ref, labels, torch.ones(n, 2, dtype=torch.bool)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 5.0])
def test_idealized_dpo_optimum_ranks_as_r_star(beta):
    ref, labels, mask = _random_pairs(400, seed=1)
    alpha = 0.999
    # log π*(y) = log π_ref(y) + (1/β) · log(α / (1 − α)) · 1[y is y_w]
    policy = ref + (math.log(alpha / (1 - alpha)) / beta) * labels
    acc = pairwise_accuracy(policy, labels, mask)
    r_star = idealized_correct(ref, labels, mask, beta=beta, alpha=alpha).sum().item() / acc["n_pairs"]
    assert acc["pairwise_accuracy"] == pytest.approx(r_star)
    # the reference alone ranks about half of these pairs right; the optimum shifts some but not all (sd of d: 7)
    assert pairwise_accuracy(ref, labels, mask)["pairwise_accuracy"] < r_star < 1


@pytest.mark.parametrize("beta", [0.1, 1.0, 5.0])
def test_theorem_4_1_oracle_matches_dpo_loss(beta):
    """Chen et al. Thm 4.1: with c = log π_ref(y_l) − log π_ref(y_w), the policy ranks the pair right iff
    L_DPO ≤ −log σ(β c)."""
    ref, labels, mask = _random_pairs(300, seed=2)
    policy = ref + torch.randn(300, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    out = dpo_loss(ListScores(policy, labels, mask, ref_logps=ref), DPOLossConfig(beta=beta, loss_type="sigmoid"))
    assert out.losses.shape == (300,)
    rows = torch.arange(300)
    w, lo = labels.argmax(1), labels.argmin(1)  # one pair per list, in list order
    assert torch.equal(out.pairs.batch, rows) and torch.equal(out.pairs.winner, w)
    c = ref[rows, lo] - ref[rows, w]
    right = policy[rows, w] > policy[rows, lo]
    bound = -F.logsigmoid(beta * c)
    assert torch.equal(out.losses <= bound, right)
    assert 0.2 < right.double().mean().item() < 0.8  # both outcomes are exercised


def test_theorem_4_1_tie_sits_on_the_bound():
    # equal policy log-probs: the loss equals the bound exactly (the theorem's ≥, ties count as right as in R)
    policy = torch.tensor([[-5.0, -5.0]], dtype=torch.float64)
    ref = torch.tensor([[-3.0, -7.0]], dtype=torch.float64)
    scores = ListScores(policy, torch.tensor([[1.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool), ref_logps=ref)
    out = dpo_loss(scores, DPOLossConfig(beta=0.5))
    c = -7.0 - -3.0
    assert out.losses.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5 * c))), rel=1e-12)
    assert out.losses.item() <= -F.logsigmoid(torch.tensor(0.5 * c, dtype=torch.float64)).item()
