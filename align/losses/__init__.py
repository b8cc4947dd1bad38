"""Pure loss functions over ``[B, K]`` per-response scores. They import only torch."""

from align.losses.dpo import DPO_LOSS_TYPES, PairwiseLoss, dpo_loss
from align.losses.pairs import Pairs, count_pairs, preference_pairs

__all__ = ["DPO_LOSS_TYPES", "Pairs", "PairwiseLoss", "count_pairs", "dpo_loss", "preference_pairs"]
