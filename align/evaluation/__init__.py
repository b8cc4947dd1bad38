"""Ranking evaluation: how well a reward model, a policy's implicit reward or its log-likelihood orders held-out
responses (pairwise accuracy, list metrics, bootstrap CIs, the idealized ranking accuracy of Chen et al. 2024)."""

from align.evaluation.bootstrap import bootstrap_weights, percentile_interval
from align.evaluation.idealized import DEFAULT_BETAS, idealized_by_beta, idealized_correct
from align.evaluation.ranking import (
    METRIC_KEYS,
    evaluate_policy,
    evaluate_reward_model,
    list_tensors,
    policy_scorers,
    ranking_report,
    report_scores,
    score_report,
)

__all__ = ["DEFAULT_BETAS", "METRIC_KEYS", "bootstrap_weights", "evaluate_policy", "evaluate_reward_model",
           "idealized_by_beta", "idealized_correct", "list_tensors", "percentile_interval", "policy_scorers",
           "ranking_report", "report_scores", "score_report"]
