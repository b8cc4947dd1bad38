"""DPO and its variants (sigmoid / cDPO, ipo, hinge, robust) on the shared base. Formulas: ``align.losses.dpo``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from align.config import POSITIVE, Range, check_fields
from align.forward import PolicyOutput
from align.losses import count_pairs, dpo_loss
from align.trainers.base import Objective, PreferenceTrainer


@dataclass
class DPOLossConfig:
    """DPO objective settings.

    Attributes:
        beta: β; 0.1 as in the DPO paper and TRL.
        loss_type: ``sigmoid`` (DPO; cDPO with ``label_smoothing``), ``ipo`` (length-normalised), ``hinge``,
            ``robust`` (rDPO).
        label_smoothing: ε for cDPO / rDPO, in [0, 0.5); the other loss types have none.
    """

    beta: float = 0.1
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "loss", beta=POSITIVE, label_smoothing=Range(0, 0.5, high_open=True))
        if self.label_smoothing and self.loss_type not in ("sigmoid", "robust"):
            raise ValueError(f"loss.label_smoothing applies to loss_type sigmoid (cDPO) and robust (rDPO), "
                             f"not {self.loss_type!r}")


class DPOTrainer(PreferenceTrainer):
    """DPO on every preferred/dispreferred pair of each list (one pair per list for pairwise data).

    >>> # trainer = DPOTrainer(model, TrainingArguments(...), DPOLossConfig(beta=0.1), ListDataset(lists, refs))
    """

    needs_reference = True

    def count_items(self, inputs: dict[str, torch.Tensor]) -> int:
        return count_pairs(inputs["labels"], inputs["list_mask"])

    def objective(self, policy: PolicyOutput, inputs: dict[str, torch.Tensor]) -> Objective:
        c: DPOLossConfig = self.loss_config
        policy_logps = policy.logps
        out = dpo_loss(policy_logps, inputs["ref_logps"], inputs["labels"], inputs["list_mask"], beta=c.beta,
                       loss_type=c.loss_type, label_smoothing=c.label_smoothing, lengths=inputs["lengths"])
        chosen, rejected = out.pairs.take(policy_logps.detach())
        metrics = out.metrics()
        if len(out.pairs):
            metrics.update({"logps/chosen": chosen.mean().item(), "logps/rejected": rejected.mean().item()})
        return Objective(out.losses.sum(), len(out.pairs), metrics)
