"""Pairwise Cringe (Xu et al. 2023, arXiv 2312.16682): CE on the preferred response + α·g·token-level Cringe on the
dispreferred one, g = σ((b − M)/τ). No reference model, so no cache is built. Loss, config, what was and was not
verified against the paper, and our choices: ``align.losses.cringe``."""

from __future__ import annotations

from align.losses.cringe import CRINGE, CringeLossConfig
from align.trainers.base import PreferenceTrainer

__all__ = ["CringeLossConfig", "CringeTrainer"]


class CringeTrainer(PreferenceTrainer):
    """Pairwise Cringe on every preferred/dispreferred pair of each list (the forward keeps the logits)."""

    spec = CRINGE
