"""GRPO with ranking rewards (Shao et al. 2024, DeepSeekMath §4.1) on the rollout base.

Per prompt, G completions are sampled from the policy and scored by the recipe's reward sources; group-relative
advantages (optionally with He et al.'s unlikeliness reward) drive the clipped per-token objective with the k3 KL
to the reference (``align.losses.grpo``; formulas in ``docs/algorithms.md``, GRPO). Sampling, buffering over
``num_iterations``, the group-packed forward and the live reference belong to the rollout base,
:class:`~align.trainers.rollout.RolloutTrainer`.
"""

from __future__ import annotations

import torch

from align.losses.grpo import GRPO, GRPOLossConfig
from align.online.advantages import RolloutRewards, rollout_advantages
from align.trainers.rollout import PromptDataset, RepeatWindows, Rollout, RolloutTrainer, gathered_rewards


class GRPOTrainer(RolloutTrainer):
    """GRPO on prompts; the reference (β > 0) is live: the PEFT base with the adapter disabled, or a frozen copy of
    the starting weights.

    >>> # trainer = GRPOTrainer(model, TrainingArguments(...), GRPOLossConfig(rewards=[...]), PromptDataset(p), ...)
    """

    spec = GRPO

    @property
    def needs_old_logps(self) -> bool:
        c: GRPOLossConfig = self.loss_config
        return c.num_iterations > 1 or c.unlikeliness > 0  # the unlikeliness reward ranks by π_old's log-probs

    def advantages(self, raw: dict[str, torch.Tensor], mean_logps: torch.Tensor | None) -> RolloutRewards:
        """Group-relative advantages (``scale_rewards``) of the sources' rewards after their transforms and the
        unlikeliness reward, aggregated as ``multi_objective_aggregation`` says
        (:func:`align.online.advantages.rollout_advantages`)."""
        c: GRPOLossConfig = self.loss_config
        return rollout_advantages(raw, self.sources, aggregation=c.multi_objective_aggregation,
                                  scale=c.scale_rewards, unlikeliness_beta=c.unlikeliness, mean_logps=mean_logps)


__all__ = ["GRPOLossConfig", "GRPOTrainer", "PromptDataset", "RepeatWindows", "Rollout", "gathered_rewards"]
