"""GRPO's clipped per-token policy-gradient loss with the k3 KL to the reference, as a pure function.

Shao et al. 2024, "DeepSeekMath" (arXiv 2402.03300), §4.1; variants as TRL's ``GRPOTrainer`` names them. For every
completion token t of sequence i (advantage Â_i, the same for all its tokens):
    ρ_t   = π_θ(y_t) / π_old(y_t)                                   (importance ratio; 1 when π_old = π_θ)
    ℓ_t   = −min(ρ_t·Â_i, clip(ρ_t, 1 − ε, 1 + ε_high)·Â_i) + β·k3_t
    k3_t  = π_ref(y_t)/π_θ(y_t) − log(π_ref(y_t)/π_θ(y_t)) − 1       (Schulman's unbiased, non-negative KL estimator)
How the token losses become one number (the ``loss_type``; the item count is what gradient accumulation sums):
    grpo     mean over sequences of each sequence's token mean        items: sequences
    bnpo     token sum / token count of this process's step           items: tokens (this process)
    dapo     token sum / token count of the whole step, all processes items: tokens (all processes)
    dr_grpo  token sum / (sequences × max_completion_length)          items: sequences × max_completion_length
(Yu et al. 2025 "DAPO", arXiv 2503.14476; Liu et al. 2025 "Understanding R1-Zero-Like Training" (Dr. GRPO), arXiv
2503.20783.) The formulas and our conventions are in ``docs/algorithms.md`` (GRPO).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

GRPO_LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dapo", "dr_grpo")
GRPOLossType = Literal["grpo", "bnpo", "dapo", "dr_grpo"]


@dataclass
class GRPOLossOutput:
    """Per-item GRPO losses: ``loss = losses.sum() / (item count of the whole step)``.

    Attributes:
        losses: ``[I]`` per-item losses: per sequence (``grpo``: its token mean; ``dr_grpo``: its token sum, each
            sequence counting ``max_completion_length`` items) or per token (``bnpo``, ``dapo``).
        count: the items of this batch (sequences, tokens, or sequences × max_completion_length).
        metrics: means over the batch's completion tokens: ``kl``, ``clip_ratio/low``, ``clip_ratio/high``,
            ``clip_ratio/region``.
    """

    losses: torch.Tensor
    count: float
    metrics: dict[str, float] = field(default_factory=dict)


def grpo_count(mask: torch.Tensor, loss_type: GRPOLossType, max_completion_length: int) -> float:
    """The item count of :func:`grpo_loss` for a completion ``mask`` ``[N, T]`` (known right after generation)."""
    if loss_type == "grpo":
        return float(mask.shape[0])  # every sequence, a fully masked one too (it adds 0), as TRL
    if loss_type in ("bnpo", "dapo"):
        return float(mask.sum())
    if loss_type == "dr_grpo":
        return float(mask.shape[0] * max_completion_length)
    raise ValueError(f"unknown GRPO loss_type {loss_type!r}; choose from {GRPO_LOSS_TYPES}")


def grpo_loss(
    logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: GRPOLossType = "dapo",
    max_completion_length: int | None = None,
) -> GRPOLossOutput:
    """The GRPO loss of a batch of completions (see the module docstring for every formula).

    Args:
        logps: ``[N, T]`` per-token log-probs of the completions under the policy (with gradients).
        advantages: ``[N]`` one advantage per completion.
        mask: ``[N, T]`` 1 on the completion tokens that count (0 on prompt, padding, masked-out completions).
        old_logps: ``[N, T]`` under the policy that sampled them (π_old); None means π_old = π_θ (one update per
            generation), i.e. ``logps.detach()``.
        ref_logps: ``[N, T]`` under the reference; required when ``beta > 0``.
        beta: β, the weight of the k3 KL term (0: no reference needed).
        epsilon, epsilon_high: the clip range [1 − ε, 1 + ε_high]; ``epsilon_high`` defaults to ε.
        loss_type: ``grpo`` | ``bnpo`` | ``dapo`` | ``dr_grpo``.
        max_completion_length: the generation length limit (``dr_grpo``'s constant normaliser).

    Returns:
        :class:`GRPOLossOutput`.
    """
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"unknown GRPO loss_type {loss_type!r}; choose from {GRPO_LOSS_TYPES}")
    if beta > 0 and ref_logps is None:
        raise ValueError("beta > 0 needs the reference's per-token log-probs")
    if loss_type == "dr_grpo" and not max_completion_length:
        raise ValueError("dr_grpo needs max_completion_length")
    eps_high = epsilon if epsilon_high is None else epsilon_high
    mask = mask.to(logps.dtype)
    old = logps.detach() if old_logps is None else old_logps
    adv = advantages.to(logps.dtype)[:, None]  # [N, 1]
    ratio = torch.exp(logps - old)  # [N, T]
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    kl = None
    if beta > 0:
        delta = ref_logps - logps  # log(π_ref / π_θ)
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
    per_token = per_token * mask
    if loss_type == "grpo":
        losses = per_token.sum(-1) / mask.sum(-1).clamp(min=1)
    elif loss_type == "dr_grpo":
        losses = per_token.sum(-1)
    else:  # bnpo, dapo: one item per token
        losses = per_token[mask.bool()]
    count = grpo_count(mask, loss_type, max_completion_length or 0)
    with torch.no_grad():
        n_tok = mask.sum().clamp(min=1)
        low = ((ratio < 1 - epsilon) & (adv < 0)).to(mask.dtype) * mask
        high = ((ratio > 1 + eps_high) & (adv > 0)).to(mask.dtype) * mask
        metrics = {"clip_ratio/low": float(low.sum() / n_tok), "clip_ratio/high": float(high.sum() / n_tok),
                   "clip_ratio/region": float((low + high).sum() / n_tok)}
        if kl is not None:
            metrics["kl"] = float((kl * mask).sum() / n_tok)
    return GRPOLossOutput(losses, count, metrics)
