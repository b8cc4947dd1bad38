"""The losses, one module each, under one contract (``align.losses.base``): a loss reads a batch record
(:class:`ListScores` for the list losses), returns a :class:`LossOutput` (per-item losses, their count, metrics) and is
registered by a :class:`LossSpec`. Each module holds its pure math over plain tensors, its config dataclass and its
spec. They import torch, :mod:`align.validation` (the configs' range checks) and :mod:`align.rewards.spec` (GRPO's
reward sources) only: no model, no ``torch.distributed``. :data:`LOSSES` maps each algorithm's name to its spec (the
recipe schema reads a ``loss`` section's config class from it). Formulas, papers and conventions:
``docs/algorithms.md``.
"""

from align.losses.base import UNITS, ListScores, LossOutput, LossSpec, Unit
from align.losses.cringe import CRINGE, CringeLossConfig, cringe_loss, cringe_token_losses, pairwise_cringe_loss
from align.losses.dpo import DPO, DPO_LOSS_TYPES, DPOLossConfig, dpo_loss
from align.losses.grpo import GRPO, GRPOLossConfig, RolloutScores, grpo_count, grpo_loss
from align.losses.listwise import (
    LIPO,
    LiPOLossConfig,
    dcg_lambda_weights,
    labels_from_ranks,
    labels_from_scores,
    lipo_loss,
    listwise_count,
    listwise_loss,
)
from align.losses.mmpo import MMPO, MMPOLossConfig, mmpo_loss, rank_margins
from align.losses.pairs import Pairs, count_pairs, pair_count, preference_pairs
from align.losses.reward import REWARD, RewardLossConfig, reward_loss

LOSSES: dict[str, LossSpec] = {s.name: s for s in (DPO, LIPO, MMPO, CRINGE, REWARD, GRPO)}

__all__ = ["CRINGE", "CringeLossConfig", "DPO", "DPOLossConfig", "DPO_LOSS_TYPES", "GRPO", "GRPOLossConfig", "LIPO",
           "LiPOLossConfig", "LOSSES", "ListScores", "LossOutput", "LossSpec", "MMPO", "MMPOLossConfig", "Pairs",
           "REWARD", "RewardLossConfig", "RolloutScores", "UNITS", "Unit", "count_pairs", "cringe_loss",
           "cringe_token_losses", "dcg_lambda_weights", "dpo_loss", "grpo_count", "grpo_loss", "labels_from_ranks",
           "labels_from_scores", "lipo_loss", "listwise_count", "listwise_loss", "mmpo_loss", "pair_count",
           "pairwise_cringe_loss", "preference_pairs", "rank_margins", "reward_loss"]
