"""Several rewards → one advantage per sample: TRL's two ``multi_objective_aggregation`` modes.

``sum_then_normalize`` (TRL's default): the weighted sum of the rewards (a reward that did not score a sample, NaN,
adds nothing), then group-relative advantages of that sum, scaled as ``scale_rewards`` says
(:func:`align.rewards.group_advantages`).

``normalize_then_sum`` (GDPO, "Group reward-Decoupled Normalization Policy Optimization", arXiv 2601.05242):
each reward is first normalised in its group, (r − mean_g) / (std_g + ε), so a reward with a large spread does not
drown the others; the weighted sum of those is then normalised over the whole batch, (s − mean) / (std + ε).
``scale_rewards`` does not enter (as in TRL). Stds are Bessel-corrected; a group in which a reward has fewer than
two scored samples contributes nothing for that reward.

In both modes a sample that no reward scored gets advantage 0 and is left out of every mean and std. The batch is
the whole generation step: in a multi-process run, pass every process's rewards (gathered), as TRL does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import torch

from align.errors import RewardError
from align.rewards.advantages import Scale, group_advantages

Aggregation = Literal["sum_then_normalize", "normalize_then_sum"]
AGGREGATIONS: tuple[str, ...] = ("sum_then_normalize", "normalize_then_sum")


class Aggregated(NamedTuple):
    """What :func:`aggregate_advantages` returns.

    Attributes:
        advantages: ``[B, G]``, 0 for unscored samples.
        rewards: ``[B, G]`` the weighted sum of the raw rewards (the reward to log), 0 for unscored samples.
        unscored: ``[B, G]`` bool, no reward scored the sample.
        zero_std: ``[B]`` bool, groups that carry no signal: under ``sum_then_normalize`` the summed reward is the
            same for all its scored samples; under ``normalize_then_sum`` every weighted reward is (or fewer than
            two samples are scored).
    """

    advantages: torch.Tensor
    rewards: torch.Tensor
    unscored: torch.Tensor
    zero_std: torch.Tensor


def _stack(rewards: Mapping[str, torch.Tensor] | torch.Tensor,
           weights: Mapping[str, float] | Sequence[float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, G, F]`` float64 rewards and ``[F]`` weights, checked."""
    if isinstance(rewards, Mapping):
        if not rewards:
            raise ValueError("aggregate_advantages needs at least one reward")
        names = list(rewards)
        if weights is not None and not isinstance(weights, Mapping):
            raise ValueError("with rewards by name, give weights by name (a mapping) or None")
        if weights is not None and set(weights) != set(names):
            raise ValueError(f"weights name {sorted(weights)} but rewards name {sorted(names)}; give one weight each")
        shapes = {tuple(rewards[n].shape) for n in names}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            got = [tuple(rewards[n].shape) for n in names]
            raise ValueError(f"every reward must be [B, G] of one shape, got {got}")
        stacked = torch.stack([rewards[n].double() for n in names], -1)
        w = [1.0 if weights is None else float(weights[n]) for n in names]
    else:
        if rewards.dim() != 3 or rewards.shape[-1] < 1:
            raise ValueError(f"rewards must be [B, G, F] (or a mapping name → [B, G]), got {tuple(rewards.shape)}")
        stacked = rewards.double()
        if isinstance(weights, Mapping):
            raise ValueError("with rewards as a [B, G, F] tensor, give weights as a sequence of F numbers")
        w = [1.0] * rewards.shape[-1] if weights is None else [float(x) for x in weights]
        if len(w) != rewards.shape[-1]:
            raise ValueError(f"{len(w)} weights for {rewards.shape[-1]} rewards")
    if torch.isinf(stacked).any():
        raise RewardError("rewards contain ±inf")
    weight = torch.tensor(w, dtype=torch.float64, device=stacked.device)
    if not torch.isfinite(weight).all():
        raise ValueError(f"reward weights must be finite, got {w}")
    return stacked, weight


def _nanstd(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """Bessel-corrected std over the non-NaN values (NaN where fewer than two)."""
    valid = ~torch.isnan(x)
    n = valid.sum() if dim is None else valid.sum(dim, keepdim=True)
    mean = torch.nanmean(x) if dim is None else torch.nanmean(x, dim, keepdim=True)
    sq = torch.where(valid, (x - mean) ** 2, 0.0)
    var = (sq.sum() if dim is None else sq.sum(dim, keepdim=True)) / (n - 1).clamp(min=1)
    std = torch.where(n > 1, var.sqrt(), torch.nan)
    return std if keepdim or dim is None else std.squeeze(dim)


def aggregate_advantages(rewards: Mapping[str, torch.Tensor] | torch.Tensor,
                         weights: Mapping[str, float] | Sequence[float] | None = None,
                         mode: Aggregation = "sum_then_normalize", scale: Scale = "group",
                         eps: float = 1e-4) -> Aggregated:
    """Advantages ``[B, G]`` from several rewards (see the module docstring for both modes).

    Args:
        rewards: name → ``[B, G]``, or one ``[B, G, F]`` tensor; NaN marks a sample a reward did not score.
        weights: one per reward (a mapping by name, or a sequence of F); None = all 1.
        mode: ``sum_then_normalize`` or ``normalize_then_sum`` (TRL's ``multi_objective_aggregation``).
        scale: ``group`` | ``batch`` | ``none``, the std of ``sum_then_normalize`` (TRL's ``scale_rewards``).
        eps: added to every std (TRL's 1e-4).
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"multi_objective_aggregation must be one of {AGGREGATIONS}, got {mode!r}")
    stacked, w = _stack(rewards, weights)  # [B, G, F], [F]
    unscored = torch.isnan(stacked).all(-1)
    total = torch.where(unscored, 0.0, (stacked * w).nansum(-1))
    out_dtype = next(iter(rewards.values())).dtype if isinstance(rewards, Mapping) else rewards.dtype
    out_dtype = out_dtype if out_dtype.is_floating_point else torch.float32
    if mode == "sum_then_normalize":
        grouped = group_advantages(total, ~unscored, scale=scale, eps=eps)
        adv, zero = grouped.advantages.double(), grouped.zero_std
    else:
        valid = ~torch.isnan(stacked)
        mean_k = torch.nanmean(stacked, 1, keepdim=True)  # [B, 1, F]
        std_k = _nanstd(stacked, 1, keepdim=True)
        normed = (stacked - mean_k) / (std_k + eps)  # NaN where unscored or the group's std is undefined
        summed = torch.where(unscored, torch.nan, (normed * w).nansum(-1))  # [B, G]
        std = _nanstd(summed)
        adv = torch.nan_to_num((summed - torch.nanmean(summed)) / (std + eps), nan=0.0)
        hi = torch.where(valid, stacked, -torch.inf).amax(1)  # [B, F]
        lo = torch.where(valid, stacked, torch.inf).amin(1)
        flat = (valid.sum(1) < 2) | (hi == lo) | (w == 0)
        zero = flat.all(-1)
    return Aggregated(adv.to(out_dtype), total.to(out_dtype), unscored, zero)
