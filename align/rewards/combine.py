"""Combining several reward functions' outputs, with TRL's convention for rewards that do not apply.

A reward function may return ``None`` for a sample it does not score (TRL ``GRPOTrainer``); here that is NaN.
The total is the weighted ``nansum`` over functions (as TRL): a missing reward contributes nothing. A sample
where every function is missing gets 0 and is flagged in ``all_missing``, so the caller can count it, or drop it
from its group by passing ``mask & ~all_missing`` to :func:`align.rewards.group_advantages`. A batch where no
sample is scored at all is an error (not a reward of 0), and so is a total beyond float32's range (the sum is
computed in float64: a finite reward such as 1e300 is not mistaken for ±inf, but it cannot be trained on).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

from align.errors import RewardError

_FLOAT32_MAX = torch.finfo(torch.float32).max


class Combined(NamedTuple):
    """``total`` ``[B, G]`` (float) and ``all_missing`` ``[B, G]`` (bool: no function scored that sample)."""

    total: torch.Tensor
    all_missing: torch.Tensor


def reward_tensor(values: Sequence[float | None], group_size: int) -> torch.Tensor:
    """A reward function's flat output (``B·G`` values, group-major as TRL repeats each prompt G times in a row;
    ``None`` = does not apply) as ``[B, G]`` float32 with NaN for ``None``."""
    if group_size < 1 or len(values) % group_size:
        raise ValueError(f"{len(values)} rewards do not split into groups of {group_size}")
    flat = [math.nan if v is None else float(v) for v in values]
    return torch.tensor(flat, dtype=torch.float32).view(-1, group_size)


def combine(rewards: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> Combined:
    """total = Σ_f w_f · r_f over the functions f that scored each sample (NaN = missing). ``rewards``: name →
    ``[B, G]``; ``weights``: name → float, exactly the same names (``None`` = all 1). ±inf is an error."""
    if not rewards:
        raise ValueError("combine needs at least one reward")
    weights = dict.fromkeys(rewards, 1.0) if weights is None else dict(weights)
    if set(weights) != set(rewards):
        raise ValueError(f"weights name {sorted(weights)} but rewards name {sorted(rewards)}; give one weight each")
    names = sorted(rewards)
    shapes = {tuple(rewards[n].shape) for n in names}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"every reward must be [B, G] of one shape, got {[tuple(rewards[n].shape) for n in names]}")
    stacked = torch.stack([rewards[n].double() for n in names])  # [F, B, G]
    if torch.isinf(stacked).any():
        raise RewardError(f"rewards contain ±inf: {[n for n in names if torch.isinf(rewards[n]).any()]}")
    missing = torch.isnan(stacked).all(0)
    if missing.numel() and missing.all():
        raise RewardError(f"no sample was scored: every reward ({', '.join(names)}) gave None or NaN for all "
                         f"{missing.numel()} samples")
    w = torch.tensor([float(weights[n]) for n in names], dtype=torch.float64)[:, None, None]
    total = (stacked * w).nansum(0)
    if not torch.isfinite(total).all() or total.abs().max() > _FLOAT32_MAX:
        big = {n: float(rewards[n].double().nan_to_num(0.0).abs().max()) for n in names}
        raise RewardError(f"the weighted sum of rewards overflows float32 (|reward| up to "
                         f"{', '.join(f'{n}: {v:.3g}' for n, v in big.items())}; weights "
                         f"{', '.join(f'{n}: {weights[n]:g}' for n in names)}): scale the rewards down")
    return Combined(total.float(), missing)
