"""Scalar-head reward models (``AutoModelForSequenceClassification``, one output) on pairs or ranked lists.

The reward r(x, y) replaces the implicit reward β·(log π_θ − log π_ref) in the losses the policy trainers use, with
β = 1 and no reference (Bradley–Terry, MMPO, list-MLE, LiPO-λ; optional reward centring). Loss, config and
formulas: ``align.losses.reward``.
"""

from __future__ import annotations

import torch

from align.forward import PolicyOutput, reward_forward
from align.losses.reward import REWARD, RewardLossConfig
from align.trainers.base import PreferenceTrainer

__all__ = ["RewardLossConfig", "RewardModelTrainer"]


class RewardModelTrainer(PreferenceTrainer):
    """Trains a reward model: one forward scores all K responses of each list, then a pair or list loss."""

    spec = REWARD
    model_kind = "reward"

    def forward_lists(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> PolicyOutput:
        return reward_forward(model, inputs)
