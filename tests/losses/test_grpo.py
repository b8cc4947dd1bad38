"""GRPO's clipped per-token loss and k3 KL: hand oracles, every loss_type's normaliser, and TRL's own loss."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from align.losses.grpo import grpo_count, grpo_loss

LN2 = math.log(2.0)


def test_clipping_by_hand():
    """Two one-token sequences. Sequence 0: ratio e^{ln 1.5} = 1.5, Â = +1, ε = 0.2: the clipped term wins,
    loss −min(1.5, 1.2) = −1.2. Sequence 1: ratio 0.5, Â = −1: −min(−0.5, −0.8) = 0.8 (clipped at 1 − ε)."""
    logps = torch.tensor([[math.log(1.5)], [math.log(0.5)]])
    old = torch.zeros(2, 1)
    out = grpo_loss(logps, torch.tensor([1.0, -1.0]), torch.ones(2, 1), old_logps=old, epsilon=0.2,
                    loss_type="bnpo")
    torch.testing.assert_close(out.losses, torch.tensor([-1.2, 0.8]))
    assert out.count == 2
    assert out.metrics["clip_ratio/high"] == 0.5 and out.metrics["clip_ratio/low"] == 0.5
    # inside the range nothing is clipped: ratio 1.1, Â = 2 → −2.2
    inside = grpo_loss(torch.tensor([[math.log(1.1)]]), torch.tensor([2.0]), torch.ones(1, 1),
                       old_logps=torch.zeros(1, 1), loss_type="bnpo")
    assert inside.losses.item() == pytest.approx(-2.2, abs=1e-6) and inside.metrics["clip_ratio/region"] == 0.0
    # epsilon_high widens only the upper side: ratio 1.5 with ε_high = 0.6 is not clipped → −1.5
    wide = grpo_loss(logps[:1], torch.tensor([1.0]), torch.ones(1, 1), old_logps=old[:1], epsilon=0.2,
                     epsilon_high=0.6, loss_type="bnpo")
    assert wide.losses.item() == pytest.approx(-1.5, abs=1e-6)


def test_k3_by_hand():
    """k3 = e^δ − δ − 1 with δ = log π_ref − log π_θ: 0 at δ = 0; 2 − ln 2 − 1 = 0.306853 at δ = ln 2."""
    logps = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.0, -2.0 + LN2]])
    out = grpo_loss(logps, torch.tensor([0.0]), torch.ones(1, 2), ref_logps=ref, beta=0.5, loss_type="bnpo")
    torch.testing.assert_close(out.losses, torch.tensor([0.0, 0.5 * (1 - LN2)]))
    assert out.metrics["kl"] == pytest.approx((1 - LN2) / 2, abs=1e-6)


def test_each_loss_type_reduces_as_documented():
    """Per-token losses −Â (on-policy, ratio 1): sequence 0 has 3 tokens of Â = 1, sequence 1 one token of Â = −2
    (its other two tokens masked). Token losses: [−1, −1, −1] and [2]."""
    logps = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    adv = torch.tensor([1.0, -2.0])
    total = {}
    for kind in ("grpo", "bnpo", "dapo", "dr_grpo"):
        out = grpo_loss(logps, adv, mask, loss_type=kind, max_completion_length=4)
        assert out.count == grpo_count(mask, kind, 4)
        total[kind] = (out.losses.sum() / out.count).item()
    assert total["grpo"] == pytest.approx((-1.0 + 2.0) / 2)  # sequence means −1 and 2, averaged
    assert total["bnpo"] == pytest.approx((-3.0 + 2.0) / 4) == total["dapo"]  # 4 tokens
    assert total["dr_grpo"] == pytest.approx((-3.0 + 2.0) / (2 * 4))  # 2 sequences × max length 4


def test_gradient_of_the_on_policy_objective_is_minus_the_advantage():
    """With π_old = π_θ the ratio is 1 but its gradient is ∂ρ/∂logp = 1: d(loss)/d(logp_t) = −Â/count."""
    logps = torch.zeros(1, 2, requires_grad=True)
    out = grpo_loss(logps, torch.tensor([3.0]), torch.ones(1, 2), loss_type="dapo")
    (out.losses.sum() / out.count).backward()
    torch.testing.assert_close(logps.grad, torch.full((1, 2), -1.5))


def test_zero_advantage_gives_zero_policy_term_and_no_nan():
    logps = torch.randn(3, 4)
    out = grpo_loss(logps, torch.zeros(3), torch.ones(3, 4), old_logps=logps - 0.3, loss_type="grpo")
    assert torch.isfinite(out.losses).all() and out.losses.abs().max() == 0


def test_fully_masked_sequences_count_for_grpo_and_add_nothing():
    out = grpo_loss(torch.zeros(2, 2), torch.tensor([1.0, 1.0]), torch.tensor([[1, 1], [0, 0]]), loss_type="grpo")
    assert out.count == 2 and out.losses.tolist() == [-1.0, 0.0]


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="reference"):
        grpo_loss(torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), beta=0.1)
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), loss_type="ppo")
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), loss_type="dr_grpo")


# ------------------------------------------------------------------------------------------------- the peer: TRL


def _trl_loss(loss_type: str, logps, old, ref, adv, mask, *, beta, eps, eps_high, max_len, level="token"):
    """TRL 1.x's ``GRPOTrainer._compute_loss`` on our tensors: the method runs on a stand-in ``self`` whose model
    forward returns our per-token log-probs (no entropy bonus, importance sampling at ``level``, one process, no
    gradient accumulation)."""
    from trl import GRPOTrainer

    metrics = defaultdict(lambda: defaultdict(list))
    me = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=level, beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type, epsilon_low=eps, epsilon_high=eps_high, use_vllm=False,
        vllm_importance_sampling_correction=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=max_len, aux_loss_enabled=False,
        _entropy_bonus_enabled=False, _metrics=metrics,
        accelerator=SimpleNamespace(num_processes=1, gather=lambda x: x, reduce=lambda x, reduction: x))
    n, t = logps.shape
    inputs = {"prompt_ids": torch.zeros(n, 1, dtype=torch.long), "prompt_mask": torch.ones(n, 1, dtype=torch.long),
              "completion_ids": torch.zeros(n, t, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "num_items_in_batch": mask.sum()}
    if beta:
        inputs["ref_per_token_logps"] = ref
    return GRPOTrainer._compute_loss(me, None, inputs), {k: v[0] for k, v in metrics["train"].items()}


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_equals_trls_grpo_loss(loss_type, beta):
    g = torch.Generator().manual_seed(0)
    n, t = 6, 5
    logps = (-torch.rand(n, t, generator=g) * 3).requires_grad_(True)
    old = logps.detach() + 0.3 * torch.randn(n, t, generator=g)  # ratios on both sides of the clip range
    ref = logps.detach() + 0.5 * torch.randn(n, t, generator=g)
    adv = torch.randn(n, generator=g)
    mask = (torch.rand(n, t, generator=g) > 0.25).long()
    mask[0] = 0  # a fully masked completion too
    trl, trl_metrics = _trl_loss(loss_type, logps, old, ref, adv, mask, beta=beta, eps=0.2, eps_high=0.28,
                                 max_len=t)
    out = grpo_loss(logps, adv, mask, old_logps=old, ref_logps=ref, beta=beta, epsilon=0.2, epsilon_high=0.28,
                    loss_type=loss_type, max_completion_length=t)
    ours = out.losses.sum() / out.count
    torch.testing.assert_close(ours, trl.to(ours.dtype), rtol=1e-6, atol=1e-7)
    g_ours, = torch.autograd.grad(ours, logps, retain_graph=True)
    g_trl, = torch.autograd.grad(trl, logps)
    torch.testing.assert_close(g_ours, g_trl, rtol=1e-5, atol=1e-7)
    for side in ("low", "high", "region"):  # the same clip statistics
        assert out.metrics[f"clip_ratio/{side}"] == pytest.approx(trl_metrics[f"clip_ratio/{side}_mean"], abs=1e-6)
    if beta:
        assert out.metrics["kl"] == pytest.approx(trl_metrics["kl"], rel=1e-5)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_sequence_level_importance_sampling_equals_trls_gspo(loss_type, beta):
    """GSPO: one ratio per sequence from its mean token log-ratio; loss, gradient and clip fractions as TRL's."""
    g = torch.Generator().manual_seed(2)
    n, t = 8, 6
    logps = (-torch.rand(n, t, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    old = logps.detach() + 0.4 * torch.randn(n, t, generator=g, dtype=torch.float64)
    ref = logps.detach() + 0.5 * torch.randn(n, t, generator=g, dtype=torch.float64)
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    mask = (torch.rand(n, t, generator=g) > 0.3).long()
    mask[0] = 0
    trl, trl_metrics = _trl_loss(loss_type, logps, old, ref, adv, mask, beta=beta, eps=0.2, eps_high=0.28,
                                 max_len=t, level="sequence")
    out = grpo_loss(logps, adv, mask, old_logps=old, ref_logps=ref, beta=beta, epsilon=0.2, epsilon_high=0.28,
                    loss_type=loss_type, max_completion_length=t, importance_sampling_level="sequence")
    ours = out.losses.sum() / out.count
    assert abs(ours.item() - trl.item()) < 1e-6
    g_ours, = torch.autograd.grad(ours, logps, retain_graph=True)
    g_trl, = torch.autograd.grad(trl, logps)
    assert float((g_ours - g_trl).abs().max()) < 1e-6
    for side in ("low", "high", "region"):
        assert out.metrics[f"clip_ratio/{side}"] == pytest.approx(trl_metrics[f"clip_ratio/{side}_mean"], abs=1e-6)
    assert trl_metrics["clip_ratio/region_mean"] > 0  # the inputs reach the clip range
    token = grpo_loss(logps, adv, mask, old_logps=old, ref_logps=ref, beta=beta, epsilon=0.2, epsilon_high=0.28,
                      loss_type=loss_type, max_completion_length=t)
    assert abs((token.losses.sum() / token.count).item() - ours.item()) > 1e-4  # the level changes the loss


def test_sequence_level_ratio_by_hand():
    """One sequence, two tokens, log-ratios ln 2 and 0: s = exp(ln 2 / 2) = √2 > 1.2, Â = +1: every token's term is
    −min(√2, 1.2) = −1.2, token mean −1.2 (token level would give mean(−1.2, −1) = −1.1)."""
    logps = torch.tensor([[LN2, 0.0]])
    out = grpo_loss(logps, torch.tensor([1.0]), torch.ones(1, 2), old_logps=torch.zeros(1, 2), loss_type="grpo",
                    importance_sampling_level="sequence")
    assert float(out.mean()) == pytest.approx(-1.2)
    tok = grpo_loss(logps, torch.tensor([1.0]), torch.ones(1, 2), old_logps=torch.zeros(1, 2), loss_type="grpo")
    assert float(tok.mean()) == pytest.approx(-1.1)
    with pytest.raises(ValueError, match="importance_sampling_level"):
        grpo_loss(logps, torch.tensor([1.0]), torch.ones(1, 2), importance_sampling_level="group")


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_the_registered_spec_counts_before_the_forward_and_names_its_unit(loss_type):
    from align.losses import GRPO, GRPOLossConfig, RolloutScores

    config = GRPOLossConfig(rewards=[{"function": "tests.test_config:constant_reward"}], loss_type=loss_type,
                            max_completion_length=5, beta=0.1)
    g = torch.Generator().manual_seed(1)
    logps = -torch.rand(4, 5, generator=g)
    mask = (torch.rand(4, 5, generator=g) > 0.3).long()
    out = GRPO.compute(RolloutScores(logps, torch.randn(4, generator=g), mask, ref_logps=logps + 0.1), config)
    assert GRPO.count(None, mask, config) == out.count
    assert GRPO.unit_of(config) == ("sequence" if loss_type in ("grpo", "dr_grpo") else "token")
    assert not GRPO.needs_reference and GRPO.token_level  # its reference scores samples live: no cache
