"""Reward-model losses: the pair and list losses on a scalar head's rewards, their config and registry entry.

The reward r(x, y) replaces the implicit reward β·(log π_θ − log π_ref) in the same losses the policy uses, with
β = 1 and no reference (``docs/algorithms.md`` §5):
    bt        Bradley–Terry, −log σ(r_w − r_l) over every labelled pair (Ouyang et al. 2022, Eq. 1)
    mmpo      −[p log σ(r_w − r_l) + (1 − p) log σ(r_l − r_w)], p = σ(γ·margin) (Kim et al. 2024)
    list_mle  Plackett–Luce likelihood of the labelled order (Xia et al. 2008), mean over lists
    lambda    LiPO-λ: DCG λ-weighted pair-logistic over the list (Liu et al. 2024), mean over lists
ψ for the list losses comes from the labels' ranks. Optional reward centring (Eisenstein et al. 2023; TRL's
``center_rewards_coefficient``) adds c·(r_w + r_l)² per pair, so rewards stay near zero (pair losses only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from align.losses.base import ListScores, LossOutput, LossSpec, Unit
from align.losses.dpo import DPOLossConfig, dpo_loss
from align.losses.listwise import labels_from_ranks, listwise_count, listwise_loss
from align.losses.mmpo import MMPOLossConfig, mmpo_loss
from align.losses.pairs import count_pairs
from align.losses.reward_metrics import list_reward_metrics
from align.validation import NON_NEGATIVE, Range, check_fields

PAIR_LOSSES: tuple[str, ...] = ("bt", "mmpo")
REWARD_LOSS_TYPES: tuple[str, ...] = ("bt", "mmpo", "list_mle", "lambda")


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


def reward_loss(scores: ListScores, config: RewardLossConfig) -> LossOutput:
    """The reward-model loss of a batch of lists.

    Args:
        scores: ``policy_logps`` holding the rewards r(x, y), ``labels`` and ``mask``, all ``[B, K]``; no reference.
        config: the loss type, MMPO's γ and margins, and the centring coefficient.

    Returns:
        :class:`LossOutput`: per pair (``bt``, ``mmpo``: with the pairs and the pair reward metrics) or per list
        (``list_mle``, ``lambda``: with the best and mean reward metrics).
    """
    c = config
    if c.loss_type not in REWARD_LOSS_TYPES:
        raise ValueError(f"unknown reward loss_type {c.loss_type!r}; choose from {REWARD_LOSS_TYPES}")
    if scores.ref_logps is not None:
        raise ValueError("a reward model's loss takes no reference log-probs")
    if c.loss_type in PAIR_LOSSES:
        if c.loss_type == "bt":
            out = dpo_loss(scores, DPOLossConfig(beta=1.0))
        else:
            out = mmpo_loss(scores, MMPOLossConfig(beta=1.0, gamma=c.gamma, margins=c.margins))
        if c.center_rewards_coefficient and out.count:
            r_w, r_l = out.pairs.take(scores.implicit_rewards(1.0))  # [P]
            out.losses = out.losses + c.center_rewards_coefficient * (r_w + r_l) ** 2
        return out
    r = scores.implicit_rewards(1.0)  # [B, K] the rewards, 0 on padded slots
    out = listwise_loss(r, labels_from_ranks(scores.labels, scores.mask), scores.mask, loss_type=c.loss_type)
    out.metrics.update(list_reward_metrics(r, scores.labels, scores.mask))
    return out


def reward_count(labels: torch.Tensor, mask: torch.Tensor, config: RewardLossConfig) -> int:
    """``LossSpec.count`` of the reward model: pairs for the pair losses, lists for the list losses."""
    if config.loss_type in PAIR_LOSSES:
        return count_pairs(labels, mask)
    return listwise_count(labels, mask, config.loss_type)


def reward_unit(config: RewardLossConfig) -> Unit:
    """``pair`` for the pair losses, ``list`` for the list losses."""
    return "pair" if config.loss_type in PAIR_LOSSES else "list"


REWARD = LossSpec(name="reward", config=RewardLossConfig, compute=reward_loss, count=reward_count,
                  needs_reference=False, unit="pair", unit_for=reward_unit)
