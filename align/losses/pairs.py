"""Turn ``[B, K]`` lists into the pairs they imply; shared by every pairwise objective."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Pairs:
    """Index tensors ``[P]`` of every pair (b, i, j) with ``labels[b, i] > labels[b, j]`` (i preferred)."""

    batch: torch.Tensor
    winner: torch.Tensor
    loser: torch.Tensor

    def __len__(self) -> int:
        return int(self.batch.numel())

    def take(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Winner and loser entries ``[P]`` of a ``[B, K]`` tensor."""
        return values[self.batch, self.winner], values[self.batch, self.loser]


def preference_pairs(labels: torch.Tensor, mask: torch.Tensor) -> Pairs:
    """All ordered pairs of a batch of lists.

    Args:
        labels: ``[B, K]`` higher is better.
        mask: ``[B, K]`` bool, False on padded slots.

    Ties form no pair; padded slots form no pair. For K = 2 lists with distinct labels this is one pair a list,
    in list order, so pairwise data reduces to the usual chosen/rejected batch.
    """
    mask = mask.bool()
    better = (labels[:, :, None] > labels[:, None, :]) & mask[:, :, None] & mask[:, None, :]  # [B, K, K]
    b, i, j = better.nonzero(as_tuple=True)
    return Pairs(b, i, j)


def count_pairs(labels: torch.Tensor, mask: torch.Tensor) -> int:
    """Number of pairs :func:`preference_pairs` would return."""
    mask = mask.bool()
    return int(((labels[:, :, None] > labels[:, None, :]) & mask[:, :, None] & mask[:, None, :]).sum())


def pair_count(labels: torch.Tensor, mask: torch.Tensor, config: Any = None) -> int:
    """``LossSpec.count`` of the pairwise losses (one item per pair, whatever the config): :func:`count_pairs`."""
    return count_pairs(labels, mask)
