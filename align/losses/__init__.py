"""Pure loss functions over ``[B, K]`` per-response scores (and token logits for Cringe). They import only torch."""

from align.losses.cringe import PairwiseCringeLoss, cringe_token_losses, pairwise_cringe_loss
from align.losses.dpo import DPO_LOSS_TYPES, PairwiseLoss, dpo_loss
from align.losses.listwise import (
    ListwiseLoss,
    dcg_lambda_weights,
    labels_from_ranks,
    labels_from_scores,
    listwise_count,
    listwise_loss,
)
from align.losses.mmpo import mmpo_loss, rank_margins
from align.losses.pairs import Pairs, count_pairs, preference_pairs

__all__ = ["DPO_LOSS_TYPES", "ListwiseLoss", "PairwiseCringeLoss", "PairwiseLoss", "Pairs", "count_pairs",
           "cringe_token_losses", "dcg_lambda_weights", "dpo_loss", "labels_from_ranks", "labels_from_scores",
           "listwise_count", "listwise_loss", "mmpo_loss", "pairwise_cringe_loss", "preference_pairs",
           "rank_margins"]
