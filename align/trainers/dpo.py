"""DPO and its variants (sigmoid / cDPO, ipo, hinge, robust) on the shared base. Loss, config and formulas:
``align.losses.dpo``."""

from __future__ import annotations

from align.losses.dpo import DPO, DPOLossConfig
from align.trainers.base import PreferenceTrainer

__all__ = ["DPOLossConfig", "DPOTrainer"]


class DPOTrainer(PreferenceTrainer):
    """DPO on every preferred/dispreferred pair of each list (one pair per list for pairwise data).

    >>> # trainer = DPOTrainer(model, TrainingArguments(...), DPOLossConfig(beta=0.1), ListDataset(lists, refs))
    """

    spec = DPO
