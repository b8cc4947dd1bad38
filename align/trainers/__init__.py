"""Trainers, one file per algorithm on :class:`PreferenceTrainer`, and the registry recipes name them by."""

from __future__ import annotations

from dataclasses import dataclass

from align.trainers.base import ListDataset, Objective, PreferenceTrainer
from align.trainers.dpo import DPOLossConfig, DPOTrainer


@dataclass(frozen=True)
class Algorithm:
    """A registry entry: the trainer class and the dataclass its recipe's ``loss`` section loads into."""

    trainer: type[PreferenceTrainer]
    config: type

    @property
    def needs_reference(self) -> bool:
        return self.trainer.needs_reference


ALGORITHMS: dict[str, Algorithm] = {
    "dpo": Algorithm(DPOTrainer, DPOLossConfig),
}

__all__ = ["ALGORITHMS", "Algorithm", "DPOLossConfig", "DPOTrainer", "ListDataset", "Objective", "PreferenceTrainer"]
