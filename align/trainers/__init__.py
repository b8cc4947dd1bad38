"""Trainers, one file per algorithm on :class:`PreferenceTrainer`, and the registry recipes name them by."""

from __future__ import annotations

from dataclasses import dataclass

from align.trainers.base import ListDataset, Objective, PreferenceTrainer
from align.trainers.cringe import CringeLossConfig, CringeTrainer
from align.trainers.dpo import DPOLossConfig, DPOTrainer
from align.trainers.grpo import GRPOLossConfig, GRPOTrainer
from align.trainers.lipo import LiPOLossConfig, LiPOTrainer
from align.trainers.mmpo import MMPOLossConfig, MMPOTrainer
from align.trainers.reward import RewardLossConfig, RewardModelTrainer


@dataclass(frozen=True)
class Algorithm:
    """A registry entry: the trainer class and the dataclass its recipe's ``loss`` section loads into."""

    trainer: type[PreferenceTrainer]
    config: type

    @property
    def needs_reference(self) -> bool:
        return self.trainer.needs_reference

    @property
    def online(self) -> bool:
        """Trains on its own samples of prompts (GRPO) rather than on ranked lists."""
        return self.trainer.online

    @property
    def model_kind(self) -> str:
        """``policy`` (a causal LM) or ``reward`` (a scalar-head sequence classifier)."""
        return self.trainer.model_kind


ALGORITHMS: dict[str, Algorithm] = {
    "dpo": Algorithm(DPOTrainer, DPOLossConfig),
    "lipo": Algorithm(LiPOTrainer, LiPOLossConfig),
    "mmpo": Algorithm(MMPOTrainer, MMPOLossConfig),
    "cringe": Algorithm(CringeTrainer, CringeLossConfig),
    "reward": Algorithm(RewardModelTrainer, RewardLossConfig),
    "grpo": Algorithm(GRPOTrainer, GRPOLossConfig),
}

__all__ = ["ALGORITHMS", "Algorithm", "CringeLossConfig", "CringeTrainer", "DPOLossConfig", "DPOTrainer",
           "GRPOLossConfig", "GRPOTrainer",
           "LiPOLossConfig", "LiPOTrainer", "ListDataset", "MMPOLossConfig", "MMPOTrainer", "Objective",
           "PreferenceTrainer", "RewardLossConfig", "RewardModelTrainer"]
