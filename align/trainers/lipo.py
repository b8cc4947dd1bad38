"""LiPO (Liu et al., "LiPO: Listwise Preference Optimization through Learning-to-Rank", NAACL 2025) on whole
ranked lists, one forward per list. Scores s_i = β·(log π_θ(y_i) − log π_ref(y_i)); labels ψ from human ranks
(ψ_k = share of the list ranked below y_k, ties half) or from scores (min-max per list).
Formulas: ``align.losses.listwise``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from align.config import POSITIVE, check_fields
from align.forward import PolicyOutput
from align.losses.listwise import labels_from_ranks, labels_from_scores, listwise_count, listwise_loss
from align.trainers.base import Objective, PreferenceTrainer


@dataclass
class LiPOLossConfig:
    """LiPO settings.

    Attributes:
        beta: β; 0.05 as in the paper.
        loss_type: ``lambda`` (LiPO-λ, default), ``pair_logistic``, ``pair_hinge``, ``list_mle``, ``softmax``.
        normalization: ``sum`` (the paper's formula: per-list sum over pairs, mean over lists) or ``rax`` (the
            reference code: λ-weights × list size, mean over all pairs of the batch).
        labels: ``ranks`` (order only) or ``scores`` (min-max of the labels per list).
    """

    beta: float = 0.05
    loss_type: Literal["lambda", "pair_logistic", "pair_hinge", "list_mle", "softmax"] = "lambda"
    normalization: Literal["sum", "rax"] = "sum"
    labels: Literal["ranks", "scores"] = "ranks"

    def __post_init__(self) -> None:
        check_fields(self, "loss", beta=POSITIVE)
        if self.normalization == "rax" and self.loss_type in ("list_mle", "softmax"):
            raise ValueError(f"loss.normalization 'rax' applies to pairwise loss types, not {self.loss_type!r}")


class LiPOTrainer(PreferenceTrainer):
    """Listwise preference optimisation on lists of any length (OASST lists have 2–9 responses)."""

    needs_reference = True

    def _psi(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        c: LiPOLossConfig = self.loss_config
        to_psi = labels_from_ranks if c.labels == "ranks" else labels_from_scores
        return to_psi(inputs["labels"], inputs["list_mask"])

    def count_items(self, inputs: dict[str, torch.Tensor]) -> int:
        c: LiPOLossConfig = self.loss_config
        return listwise_count(self._psi(inputs), inputs["list_mask"], c.loss_type, c.normalization)

    def objective(self, policy: PolicyOutput, inputs: dict[str, torch.Tensor]) -> Objective:
        c: LiPOLossConfig = self.loss_config
        mask = inputs["list_mask"]
        s = torch.where(mask, c.beta * (policy.logps - inputs["ref_logps"]), 0.0)  # [B, K]
        out = listwise_loss(s, self._psi(inputs), mask, loss_type=c.loss_type, normalization=c.normalization)
        r = s.detach()
        best = torch.where(mask, inputs["labels"], -torch.inf).argmax(-1, keepdim=True)
        metrics = {"rewards/best": r.gather(1, best).mean().item(),
                   "rewards/mean": (r.sum(-1) / mask.sum(-1).clamp(min=1)).mean().item()}
        return Objective(out.loss_sum, out.count, metrics)
