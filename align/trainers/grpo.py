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
from align.rewards import group_advantages, unlikeliness
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

    def advantages(self, rewards: torch.Tensor, mean_logps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Group-relative advantages (scaled by ``scale_rewards``) of the rewards, after the unlikeliness reward."""
        c: GRPOLossConfig = self.loss_config
        valid = ~torch.isnan(rewards)  # unscored samples take no part in their group's statistics
        rewards = torch.nan_to_num(rewards)
        if c.unlikeliness > 0:
            rewards = unlikeliness(rewards, torch.nan_to_num(mean_logps), valid, beta_rank=c.unlikeliness)
        grouped = group_advantages(rewards, valid, scale=c.scale_rewards)
        return grouped.advantages, grouped.zero_std


__all__ = ["GRPOLossConfig", "GRPOTrainer", "PromptDataset", "RepeatWindows", "Rollout", "gathered_rewards"]
