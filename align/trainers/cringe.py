"""Pairwise Cringe (Xu et al. 2023, arXiv 2312.16682): CE on the preferred response + α·g·token-level Cringe on the
dispreferred one, g = σ((b − M)/τ). No reference model, so no cache is built. What was and was not verified
against the paper, and our choices: ``align.losses.cringe``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from align.config import COUNT, NON_NEGATIVE, POSITIVE, Range, check_fields
from align.forward import PolicyOutput
from align.losses import count_pairs, preference_pairs
from align.losses.cringe import cringe_token_losses, pairwise_cringe_loss
from align.trainers.base import Objective, PreferenceTrainer


@dataclass
class CringeLossConfig:
    """Pairwise Cringe settings. ``b`` and ``tau`` have no default: the paper's values could not be verified
    here (see ``align.losses.cringe``), so a recipe must choose them.

    Attributes:
        b: the gate's margin, in nats of M (any finite number).
        tau: the gate's temperature (finite, > 0).
        alpha: weight of the Cringe term (finite, >= 0; 1 as binary Cringe); 0 is SFT on the preferred response.
        k: top-k positives sampled per token (1: the top non-target token, deterministic).
        margin: M on summed (``sum``) or per-token mean (``mean``) log-probs.
        detach_gate: stop the gradient through the gate.
    """

    b: float
    tau: float
    alpha: float = 1.0
    k: int = 1
    margin: Literal["sum", "mean"] = "sum"
    detach_gate: bool = True

    def __post_init__(self) -> None:
        check_fields(self, "loss", b=Range(), tau=POSITIVE, alpha=NON_NEGATIVE, k=COUNT)


class CringeTrainer(PreferenceTrainer):
    """Pairwise Cringe on every preferred/dispreferred pair of each list."""

    needs_reference = False
    keep_logits = True

    def count_items(self, inputs: dict[str, torch.Tensor]) -> int:
        return count_pairs(inputs["labels"], inputs["list_mask"])

    def objective(self, policy: PolicyOutput, inputs: dict[str, torch.Tensor]) -> Objective:
        c: CringeLossConfig = self.loss_config
        pairs = preference_pairs(inputs["labels"], inputs["list_mask"])
        B, K = inputs["list_mask"].shape
        row_of = torch.full((B, K), -1, dtype=torch.long, device=policy.logps.device)
        row_of[inputs["row_list"], inputs["row_slot"]] = torch.arange(inputs["row_list"].numel(),
                                                                    device=row_of.device)
        rows = row_of[pairs.batch, pairs.loser].unique()  # token Cringe only where a row is some pair's loser
        token = cringe_token_losses(policy.logits[rows, :-1], inputs["input_ids"][rows, 1:],
                                    inputs["loss_mask"][rows, 1:].bool(), k=c.k)  # [R, L-1]
        per_row = torch.zeros(row_of.numel(), dtype=token.dtype, device=token.device)
        per_row[rows] = token.sum(-1)
        w_logps, l_logps = pairs.take(policy.logps)
        w_len, l_len = pairs.take(inputs["lengths"])
        out = pairwise_cringe_loss(w_logps, w_len, l_logps, l_len, per_row[row_of[pairs.batch, pairs.loser]],
                                   alpha=c.alpha, b=c.b, tau=c.tau, margin=c.margin, detach_gate=c.detach_gate)
        return Objective(out.losses.sum(), len(pairs), out.metrics())
