"""MMPO (Kim et al., "Margin Matching Preference Optimization", EMNLP Findings 2024): DPO with a soft target
p = σ(γ·(m_w − m_l)) per pair from quality margins. Formulas and the rank margin: ``align.losses.mmpo``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from align.config import POSITIVE, Range, check_fields
from align.forward import PolicyOutput
from align.losses import count_pairs
from align.losses.mmpo import mmpo_loss
from align.trainers.base import Objective, PreferenceTrainer


@dataclass
class MMPOLossConfig:
    """MMPO settings.

    Attributes:
        beta: β (the paper's recipes use 0.01).
        gamma: γ, how sharply a margin becomes a target (2.2 on UltraFeedback; ``.inf`` is DPO).
        margins: ``scores`` (raw quality scores, as the reference code) or ``ranks`` (from rank positions, for
            data with ranks only).
    """

    beta: float = 0.01
    gamma: float = 2.2
    margins: Literal["scores", "ranks"] = "scores"

    def __post_init__(self) -> None:
        check_fields(self, "loss", beta=POSITIVE, gamma=Range(0, low_open=True, inf=True))


class MMPOTrainer(PreferenceTrainer):
    """Every pair of every list, each with its own soft target."""

    needs_reference = True

    def count_items(self, inputs: dict[str, torch.Tensor]) -> int:
        return count_pairs(inputs["labels"], inputs["list_mask"])

    def objective(self, policy: PolicyOutput, inputs: dict[str, torch.Tensor]) -> Objective:
        c: MMPOLossConfig = self.loss_config
        out = mmpo_loss(policy.logps, inputs["ref_logps"], inputs["labels"], inputs["list_mask"], beta=c.beta,
                        gamma=c.gamma, margins=c.margins)
        return Objective(out.losses.sum(), len(out.pairs), out.metrics())
