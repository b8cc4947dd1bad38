"""Model-free reward and advantage arithmetic for group sampling (GRPO, on-policy ranking): a group of G
sampled responses to one prompt is a ranked list whose labels are the rewards, ``[B, G]`` tensors."""

from align.rewards.advantages import GroupAdvantages, group_advantages, rank_normalize, unlikeliness
from align.rewards.aggregate import AGGREGATIONS, Aggregated, aggregate_advantages
from align.rewards.combine import Combined, combine, reward_tensor
from align.rewards.reranking import ndcg_at_k, ndcg_reward, ndcg_score, parse_ranking
from align.rewards.text import completion_text
from align.rewards.wrappers import rank_reward

__all__ = ["AGGREGATIONS", "Aggregated", "Combined", "GroupAdvantages", "aggregate_advantages", "combine",
           "completion_text", "group_advantages", "ndcg_at_k", "ndcg_reward", "ndcg_score", "parse_ranking",
           "rank_normalize", "rank_reward", "reward_tensor", "unlikeliness"]
