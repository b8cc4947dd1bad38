"""LiPO (Liu et al., "LiPO: Listwise Preference Optimization through Learning-to-Rank", NAACL 2025) on whole
ranked lists, one forward per list. Scores s_i = β·(log π_θ(y_i) − log π_ref(y_i)); labels ψ from human ranks
(ψ_k = share of the list ranked below y_k, ties half) or from scores (min-max per list).
Loss, config and formulas: ``align.losses.listwise``.
"""

from __future__ import annotations

from align.losses.listwise import LIPO, LiPOLossConfig
from align.trainers.base import PreferenceTrainer

__all__ = ["LiPOLossConfig", "LiPOTrainer"]


class LiPOTrainer(PreferenceTrainer):
    """Listwise preference optimisation on lists of any length (OASST lists have 2–9 responses)."""

    spec = LIPO
