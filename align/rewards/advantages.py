"""Group-relative advantages and rank transforms of rewards ``[B, G]``: B prompts, G sampled responses each.

``mask`` ``[B, G]`` (bool, ``None`` = all valid) marks real responses; padded slots always get 0. Every
function works in float64 and returns the rewards' floating dtype (float32 for integer rewards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Scale = Literal["group", "batch", "none"]


def _check(rewards: torch.Tensor, mask: torch.Tensor | None, name: str = "rewards") -> torch.Tensor:
    if rewards.dim() != 2:
        raise ValueError(f"{name} must be [B, G], got shape {tuple(rewards.shape)}")
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    elif mask.shape != rewards.shape:
        raise ValueError(f"mask must match {name} [B, G] = {tuple(rewards.shape)}, got {tuple(mask.shape)}")
    mask = mask.bool()
    if not torch.isfinite(rewards[mask]).all():
        raise ValueError(f"{name} has NaN or inf at valid slots; combine() or mask them first")
    return mask


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


@dataclass(frozen=True)
class GroupAdvantages:
    """``advantages`` ``[B, G]`` and ``zero_std`` ``[B]`` (bool): groups whose valid rewards are all equal (or
    that have fewer than two valid responses), which carry no learning signal."""

    advantages: torch.Tensor
    zero_std: torch.Tensor

    @property
    def n_zero_std(self) -> int:
        """How many groups carry no signal."""
        return int(self.zero_std.sum())

    @property
    def frac_zero_std(self) -> float:
        """Fraction of the B groups that carry no signal (TRL logs the same as ``frac_reward_zero_std``)."""
        return self.n_zero_std / max(self.zero_std.numel(), 1)


def group_advantages(rewards: torch.Tensor, mask: torch.Tensor | None = None, scale: Scale = "group",
                     eps: float = 1e-4) -> GroupAdvantages:
    """GRPO advantages (Shao et al. 2024, DeepSeekMath): Â_i = (r_i − mean_g r) / (std + eps).

    ``scale="group"``: std is the Bessel-corrected std of the group's valid rewards; ``"batch"``: the
    Bessel-corrected std of all valid rewards of the batch (Liu et al. 2025, "Understanding R1-Zero-Like
    Training", drop the per-group std; TRL's ``scale_rewards="batch"``); ``"none"``: no division (Dr. GRPO).
    A group whose valid rewards are all equal, or with fewer than two valid responses (std undefined), gets
    exactly 0, never NaN; so does every padded slot.
    """
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    mask = _check(rewards, mask)
    r = torch.where(mask, rewards.double(), 0.0)
    n = mask.sum(-1, keepdim=True)
    mean = r.sum(-1, keepdim=True) / n.clamp(min=1)
    centred = torch.where(mask, r - mean, 0.0)
    hi = torch.where(mask, r, -torch.inf).amax(-1)
    lo = torch.where(mask, r, torch.inf).amin(-1)
    zero_std = (n.squeeze(-1) < 2) | (hi == lo)  # exact test: r - mean can be a rounding error away from 0
    if scale == "group":
        std = (centred.pow(2).sum(-1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()
        adv = centred / (std + eps)
    elif scale == "batch":
        valid = r[mask]
        std = valid.std(correction=1) if valid.numel() > 1 else valid.new_zeros(())
        adv = centred / (std + eps)
    else:
        adv = centred
    adv = torch.where(zero_std[:, None] | ~mask, 0.0, adv)
    return GroupAdvantages(adv.to(_out_dtype(rewards)), zero_std)


def _mean_ranks(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending 0-based rank of each valid value among its group's valid values, ties given their mean rank:
    rank_i = #{j : v_j < v_i} + ½·#{j ≠ i : v_j = v_i}. Returns ranks ``[B, G]`` and valid counts ``[B, 1]``."""
    v = values.double()
    both = mask[:, :, None] & mask[:, None, :]
    below = ((v[:, None, :] < v[:, :, None]) & both).sum(-1).double()
    tied = ((v[:, None, :] == v[:, :, None]) & both).sum(-1).double() - 1.0  # minus itself
    return torch.where(mask, below + 0.5 * tied, 0.0), mask.sum(-1, keepdim=True).double()


def rank_normalize(rewards: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each reward replaced by its rank in its group mapped to [0, 1]: rank_i / (n − 1) with the ascending mean
    rank of :func:`_mean_ranks` (worst 0, best 1, ties share their mean rank). A group of one, and a group whose
    rewards are all equal, get 0.5. Padded slots get 0. ``[B, G] -> [B, G]``."""
    mask = _check(rewards, mask)
    rank, n = _mean_ranks(rewards, mask)
    out = torch.where(n > 1, rank / (n - 1).clamp(min=1), 0.5)
    return torch.where(mask, out, 0.0).to(_out_dtype(rewards))


def unlikeliness(rewards: torch.Tensor, mean_logps: torch.Tensor, mask: torch.Tensor | None = None,
                 beta_rank: float = 0.25) -> torch.Tensor:
    """Unlikeliness reward (He, Fried & Welleck 2025, "Rewarding the Unlikely", arXiv 2506.02355):
    r̃_i = r_i · (1 − β_rank · rank_i / G).

    rank_i is the ascending position of response i in its group by mean token log-prob under the sampling
    policy (0 = least likely, G − 1 = most likely); equal log-probs share their mean rank (see
    :func:`_mean_ranks`). G is the group's number of valid responses. So among equally rewarded responses
    the likely ones are paid less, and GRPO stops reinforcing only what the policy already samples.
    ``rewards``, ``mean_logps``: ``[B, G]`` → ``[B, G]``; padded slots get 0.
    """
    mask = _check(rewards, mask)
    if mean_logps.shape != rewards.shape:
        raise ValueError(f"mean_logps must match rewards [B, G] = {tuple(rewards.shape)}, "
                         f"got {tuple(mean_logps.shape)}")
    _check(mean_logps, mask, "mean_logps")
    rank, n = _mean_ranks(mean_logps, mask)
    out = rewards.double() * (1.0 - beta_rank * rank / n.clamp(min=1))
    return torch.where(mask, out, 0.0).to(_out_dtype(rewards))
