"""Moved to :mod:`align.losses.reward_metrics` (the losses' batch metrics of implicit rewards);
the old name stays importable."""

from align.losses.reward_metrics import (  # noqa: F401
    list_reward_metrics,
    pair_logps_metrics,
    pair_reward_metrics,
)
