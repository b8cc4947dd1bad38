"""Trainers, one file per algorithm on one of two bases (:class:`PreferenceTrainer` for ranked lists,
:class:`RolloutTrainer` for the policy's own samples), and the registry recipes name them by.

A registry entry is a trainer class; what the algorithm needs (its config, a reference, its counting unit, token-level
values) is its loss's :class:`~align.losses.LossSpec`, and only the kind of model is the trainer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from align.losses import LossOutput, LossSpec, Unit
from align.trainers.base import ListDataset, PreferenceTrainer
from align.trainers.cringe import CringeLossConfig, CringeTrainer
from align.trainers.dpo import DPOLossConfig, DPOTrainer
from align.trainers.grpo import GRPOLossConfig, GRPOTrainer
from align.trainers.lipo import LiPOLossConfig, LiPOTrainer
from align.trainers.mmpo import MMPOLossConfig, MMPOTrainer
from align.trainers.reward import RewardLossConfig, RewardModelTrainer
from align.trainers.rollout import PromptDataset, RolloutTrainer


@dataclass(frozen=True)
class Algorithm:
    """A registry entry: a trainer class whose ``spec`` is its loss and whose ``model_kind`` is its model."""

    trainer: type

    @property
    def spec(self) -> LossSpec:
        """The loss the trainer trains."""
        return self.trainer.spec

    @property
    def config(self) -> type:
        """The dataclass a recipe's ``loss`` section loads into."""
        return self.spec.config

    @property
    def needs_reference(self) -> bool:
        """The loss reads reference log-probs (a cache is built before training)."""
        return self.spec.needs_reference

    @property
    def unit(self) -> Unit:
        """What one item of the loss is under the default config (see :meth:`unit_of`)."""
        return self.spec.unit

    def unit_of(self, config: Any) -> Unit:
        """What one item of the loss is under ``config``."""
        return self.spec.unit_of(config)

    @property
    def token_level(self) -> bool:
        """The loss needs per-token values (the forward keeps the logits)."""
        return self.spec.token_level

    @property
    def online(self) -> bool:
        """Trains on its own samples of prompts (GRPO) rather than on ranked lists."""
        return issubclass(self.trainer, RolloutTrainer)

    @property
    def model_kind(self) -> str:
        """``policy`` (a causal LM) or ``reward`` (a scalar-head sequence classifier)."""
        return getattr(self.trainer, "model_kind", "policy")


ALGORITHMS: dict[str, Algorithm] = {
    cls.spec.name: Algorithm(cls)
    for cls in (DPOTrainer, LiPOTrainer, MMPOTrainer, CringeTrainer, RewardModelTrainer, GRPOTrainer)
}

__all__ = ["ALGORITHMS", "Algorithm", "CringeLossConfig", "CringeTrainer", "DPOLossConfig", "DPOTrainer",
           "GRPOLossConfig", "GRPOTrainer",
           "LiPOLossConfig", "LiPOTrainer", "ListDataset", "LossOutput", "MMPOLossConfig", "MMPOTrainer",
           "PreferenceTrainer", "PromptDataset", "RewardLossConfig", "RewardModelTrainer", "RolloutTrainer"]
