"""Moved to :mod:`align.evaluation.ranking` (ranking reports of scored held-out lists);
the old name stays importable."""

from align.evaluation.ranking import (  # noqa: F401
    METRIC_KEYS,
    evaluate_policy,
    evaluate_reward_model,
    list_tensors,
    policy_scorers,
    ranking_report,
    report_scores,
    score_report,
)
