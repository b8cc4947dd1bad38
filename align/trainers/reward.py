"""Scalar-head reward models (``AutoModelForSequenceClassification``, one output) on pairs or ranked lists.

The reward r(x, y) replaces the implicit reward β·(log π_θ − log π_ref) in the same pure losses the policy
trainers use, with β = 1 and no reference:
    bt        Bradley–Terry, −log σ(r_w − r_l) over every labelled pair (Ouyang et al. 2022, Eq. 1)
    mmpo      −[p log σ(r_w − r_l) + (1 − p) log σ(r_l − r_w)], p = σ(γ·margin) (Kim et al. 2024, LOSSES.md §3)
    list_mle  Plackett–Luce likelihood of the labelled order (Xia et al. 2008)
    lambda    LiPO-λ: DCG λ-weighted pair-logistic over the list (Liu et al. 2024)
Optional reward centring (Eisenstein et al. 2023; TRL's ``center_rewards_coefficient``) adds c·(r_w + r_l)² per
pair, so rewards stay near zero (pair losses only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from align.config import NON_NEGATIVE, Range, check_fields
from align.forward import PolicyOutput, reward_forward
from align.losses import count_pairs, dpo_loss, labels_from_ranks, listwise_count, listwise_loss, mmpo_loss
from align.trainers.base import Objective, PreferenceTrainer

PAIR_LOSSES = ("bt", "mmpo")


@dataclass
class RewardLossConfig:
    """Reward-model objective settings.

    Attributes:
        loss_type: ``bt`` (Bradley–Terry), ``mmpo`` (soft margins), ``list_mle`` or ``lambda`` (LiPO-λ on rewards).
        gamma: MMPO's γ (p = σ(γ·margin)); 2.2 as the paper's UltraFeedback recipe; ``.inf`` is Bradley–Terry.
        margins: MMPO margins from raw ``scores`` or from ``ranks`` (see ``align.losses.mmpo``).
        center_rewards_coefficient: c of the centring term c·(r_w + r_l)², pair losses only; 0 turns it off.
    """

    loss_type: Literal["bt", "mmpo", "list_mle", "lambda"] = "bt"
    gamma: float = 2.2
    margins: Literal["scores", "ranks"] = "scores"
    center_rewards_coefficient: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "loss", gamma=Range(0, low_open=True, inf=True), center_rewards_coefficient=NON_NEGATIVE)
        if self.center_rewards_coefficient and self.loss_type not in PAIR_LOSSES:
            raise ValueError(f"loss.center_rewards_coefficient applies to {PAIR_LOSSES}, not {self.loss_type!r}")


class RewardModelTrainer(PreferenceTrainer):
    """Trains a reward model: one forward scores all K responses of each list, then a pair or list loss."""

    needs_reference = False
    model_kind = "reward"

    def forward_lists(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> PolicyOutput:
        return reward_forward(model, inputs)

    def count_items(self, inputs: dict[str, torch.Tensor]) -> int:
        c: RewardLossConfig = self.loss_config
        if c.loss_type in PAIR_LOSSES:
            return count_pairs(inputs["labels"], inputs["list_mask"])
        return listwise_count(inputs["labels"], inputs["list_mask"], c.loss_type)

    def objective(self, policy: PolicyOutput, inputs: dict[str, torch.Tensor]) -> Objective:
        c: RewardLossConfig = self.loss_config
        r, labels, mask = policy.logps, inputs["labels"], inputs["list_mask"]
        zeros = torch.zeros_like(r)
        if c.loss_type in PAIR_LOSSES:
            if c.loss_type == "bt":
                out = dpo_loss(r, zeros, labels, mask, beta=1.0)
            else:
                out = mmpo_loss(r, zeros, labels, mask, beta=1.0, gamma=c.gamma, margins=c.margins)
            losses = out.losses
            if c.center_rewards_coefficient and len(out.pairs):
                r_w, r_l = out.pairs.take(r)
                losses = losses + c.center_rewards_coefficient * (r_w + r_l) ** 2
            return Objective(losses.sum(), len(out.pairs), out.metrics())
        out = listwise_loss(torch.where(mask, r, 0.0), labels_from_ranks(labels, mask), mask, loss_type=c.loss_type)
        rd = torch.where(mask, r.detach(), 0.0)
        best = torch.where(mask, labels, -torch.inf).argmax(-1, keepdim=True)
        metrics = {"rewards/best": rd.gather(1, best).mean().item(),
                   "rewards/mean": (rd.sum(-1) / mask.sum(-1).clamp(min=1)).mean().item()}
        return Objective(out.loss_sum, out.count, metrics)
