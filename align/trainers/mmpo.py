"""MMPO (Kim et al., "Margin Matching Preference Optimization", EMNLP Findings 2024): DPO with a soft target
p = σ(γ·(m_w − m_l)) per pair from quality margins. Loss, config, formulas and the rank margin: ``align.losses.mmpo``.
"""

from __future__ import annotations

from align.losses.mmpo import MMPO, MMPOLossConfig
from align.trainers.base import PreferenceTrainer

__all__ = ["MMPOLossConfig", "MMPOTrainer"]


class MMPOTrainer(PreferenceTrainer):
    """Every pair of every list, each with its own soft target."""

    spec = MMPO
