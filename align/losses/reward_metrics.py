"""The metrics every loss of a kind reports, computed in one place (detached, means over the batch's items)."""

from __future__ import annotations

import torch

from align.losses.pairs import Pairs


@torch.no_grad()
def pair_reward_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """Implicit-reward metrics of a pairwise loss, as TRL logs them: means over pairs.

    Args:
        chosen: ``[P]`` the preferred response's reward, β·(log π_θ − log π_ref) (a reward model: r).
        rejected: ``[P]`` the same for the dispreferred response.

    Returns:
        ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins`` and ``rewards/accuracies`` (strict: a tie
        is wrong); empty when there is no pair.
    """
    if chosen.numel() == 0:
        return {}
    margin = chosen - rejected
    return {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/margins": margin.mean().item(),
        "rewards/accuracies": (margin > 0).float().mean().item(),
    }


@torch.no_grad()
def pair_logps_metrics(pairs: Pairs, logps: torch.Tensor) -> dict[str, float]:
    """``logps/chosen`` and ``logps/rejected``: mean summed log-probs of the preferred and dispreferred responses
    under the policy (``logps`` ``[B, K]``), over the pairs; empty when there is no pair."""
    if len(pairs) == 0:
        return {}
    chosen, rejected = pairs.take(logps.detach())
    return {"logps/chosen": chosen.mean().item(), "logps/rejected": rejected.mean().item()}


@torch.no_grad()
def list_reward_metrics(rewards: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Reward metrics of a listwise loss: means over lists.

    Args:
        rewards: ``[B, K]`` implicit rewards (or a reward model's rewards), 0 on padded slots.
        labels: ``[B, K]`` higher is better.
        mask: ``[B, K]`` bool, False on padded slots.

    Returns:
        ``rewards/best`` (the reward of each list's best-labelled response; the first of tied best) and
        ``rewards/mean`` (each list's mean reward over its valid slots).
    """
    r = torch.where(mask, rewards.detach(), 0)
    best = torch.where(mask, labels, -torch.inf).argmax(-1, keepdim=True)
    return {"rewards/best": r.gather(1, best).mean().item(),
            "rewards/mean": (r.sum(-1) / mask.sum(-1).clamp(min=1)).mean().item()}
