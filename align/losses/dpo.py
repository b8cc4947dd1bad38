"""DPO and its common pairwise variants as one pure function over ``[B, K]`` log-probs.

Rafailov et al. 2023, "Direct Preference Optimization" (arXiv 2305.18290), Eq. 7:
    L = -log σ(β h),  h = [log π_θ(y_w) - log π_ref(y_w)] - [log π_θ(y_l) - log π_ref(y_l)]
Variants, with h as above (formulas as in ``LOSSES.md`` §1 and TRL's ``DPOTrainer``):
    sigmoid  -(1-ε) log σ(βh) - ε log σ(-βh)              (ε = label_smoothing > 0 is cDPO)
    robust   [-(1-ε) log σ(βh) + ε log σ(-βh)] / (1-2ε)    (rDPO, Chowdhury et al. 2024, Eq. 8)
    hinge    max(0, 1 - βh)                                (SLiC / RSO, Liu et al. 2023)
    ipo      (h̄ - 1/(2β))²                                 (IPO, Azar et al. 2023, Eq. 17)
For IPO we length-normalise, as TRL does and as the IPO authors confirmed to TRL: h̄ uses each response's
log-ratio divided by its token count, so β means the same at any response length. Pass lengths of 1 to get
the summed form of the original DPO repository.

On lists of K > 2 responses every ordered pair (ties excluded) is one term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from align.losses.pairs import Pairs, preference_pairs

DPOLossType = Literal["sigmoid", "ipo", "hinge", "robust"]
DPO_LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo", "hinge", "robust")


@dataclass
class PairwiseLoss:
    """Per-pair losses and the implicit rewards behind them.

    Attributes:
        losses: ``[P]`` one loss per pair; reduce with ``losses.sum() / n`` (mean over pairs).
        chosen_rewards: ``[P]`` β·(log π_θ - log π_ref) of the preferred response, detached.
        rejected_rewards: ``[P]`` the same for the dispreferred response, detached.
        pairs: which (list, winner, loser) each entry is.
    """

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    pairs: Pairs

    def metrics(self) -> dict[str, float]:
        """Means over pairs: rewards, margins and strict reward accuracy (ties are wrong)."""
        if len(self.pairs) == 0:
            return {}
        margin = self.chosen_rewards - self.rejected_rewards
        return {
            "rewards/chosen": self.chosen_rewards.mean().item(),
            "rewards/rejected": self.rejected_rewards.mean().item(),
            "rewards/margins": margin.mean().item(),
            "rewards/accuracies": (margin > 0).float().mean().item(),
        }


def dpo_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
    lengths: torch.Tensor | None = None,
) -> PairwiseLoss:
    """DPO-family loss for every preferred/dispreferred pair of a batch of lists.

    Args:
        policy_logps: ``[B, K]`` summed response log-probs under the policy.
        ref_logps: ``[B, K]`` the same under the reference.
        labels: ``[B, K]`` higher is better; equal labels form no pair.
        mask: ``[B, K]`` bool, False on padded slots.
        beta: β, the strength of the KL regularisation.
        loss_type: ``sigmoid`` | ``ipo`` | ``hinge`` | ``robust``.
        label_smoothing: ε for cDPO (``sigmoid``) and rDPO (``robust``), in [0, 0.5).
        lengths: ``[B, K]`` response token counts; required by ``ipo``.

    Returns:
        :class:`PairwiseLoss` with ``[P]`` per-pair losses.

    >>> import torch
    >>> out = dpo_loss(torch.tensor([[-10., -12.]]), torch.tensor([[-11., -11.]]),
    ...                torch.tensor([[1., 0.]]), torch.ones(1, 2, dtype=torch.bool))
    >>> round(out.losses.item(), 6)
    0.598139
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if not beta > 0:  # also rejects NaN
        raise ValueError(f"beta must be > 0, got {beta}")
    pairs = preference_pairs(labels, mask)
    logratio = policy_logps - ref_logps  # [B, K]
    r_w, r_l = pairs.take(logratio)  # [P]
    h = r_w - r_l
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    elif loss_type == "robust":
        losses = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    elif loss_type == "ipo":
        if lengths is None:
            raise ValueError("ipo needs response lengths (pass ones for the summed form)")
        n_w, n_l = pairs.take(lengths.to(logratio.dtype).clamp(min=1))
        losses = (r_w / n_w - r_l / n_l - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose from {DPO_LOSS_TYPES}")
    return PairwiseLoss(losses, (beta * r_w).detach(), (beta * r_l).detach(), pairs)
