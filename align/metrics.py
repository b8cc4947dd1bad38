"""Moved to :mod:`align.ranking_metrics` (ranking metrics of scored lists); the old name stays importable."""

from align.ranking_metrics import (  # noqa: F401
    LIST_KEYS,
    aggregate,
    list_metrics,
    pairwise_accuracy,
    per_list_metrics,
)
