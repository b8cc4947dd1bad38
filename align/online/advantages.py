"""From the reward sources' raw rewards of a rollout to its advantages and reward metrics, in one call: each
source's group transform (``transform: rank``), the unlikeliness reward, TRL's ``multi_objective_aggregation``
and ``scale_rewards``. A trainer calls :func:`rollout_advantages` right after scoring its samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from align.online.scoring import RewardSource
from align.rewards import Aggregated, aggregate_advantages, combine, rank_normalize, unlikeliness


@dataclass
class RolloutRewards:
    """What :func:`rollout_advantages` returns (``[B, G]`` tensors unless said otherwise).

    Attributes:
        advantages: one per completion, 0 for completions no source scored.
        reward: the weighted sum of the raw rewards (before transforms): the reward the task defines, to log.
        zero_std: ``[B]`` groups that carry no signal.
        unscored: completions that no source scored.
        metrics: ``reward/mean``, ``reward/std``, ``reward/{name}/mean``, ``reward/{name}/std`` (over the completions
            each source scored), ``reward/transformed_mean`` (the weighted sum after the transforms and the
            unlikeliness reward) and ``frac_reward_zero_std``.
    """

    advantages: torch.Tensor
    reward: torch.Tensor
    zero_std: torch.Tensor
    unscored: torch.Tensor
    metrics: dict[str, float]


def rollout_advantages(raw: Mapping[str, torch.Tensor], sources: Sequence[RewardSource], *,
                       aggregation: str = "sum_then_normalize", scale: str = "group",
                       unlikeliness_beta: float = 0.0, mean_logps: torch.Tensor | None = None) -> RolloutRewards:
    """Advantages of one rollout.

    Args:
        raw: source name → ``[B, G]`` rewards (NaN: not scored), as :class:`RewardSource` returns them. In a
            multi-process run pass every process's rows (gathered): ``scale="batch"`` and ``normalize_then_sum``
            normalise over the whole batch, as TRL does.
        sources: the sources (their ``name``, ``weight`` and ``transform``).
        aggregation: ``sum_then_normalize`` | ``normalize_then_sum`` (see :mod:`align.rewards.aggregate`).
        scale: ``group`` | ``batch`` | ``none`` (``sum_then_normalize`` only, as TRL).
        unlikeliness_beta: β_rank of He et al.'s unlikeliness reward; each (transformed) reward is multiplied by
            1 − β_rank·rank/G, which under ``sum_then_normalize`` is the same as multiplying their weighted sum.
        mean_logps: ``[B, G]`` mean token log-probs of the completions under the sampling policy (needed when
            ``unlikeliness_beta`` > 0).
    """
    names = [s.name for s in sources]
    if set(names) != set(raw):
        raise ValueError(f"rewards name {sorted(raw)} but the sources are {sorted(names)}")
    if unlikeliness_beta > 0 and mean_logps is None:
        raise ValueError("the unlikeliness reward needs the completions' mean log-probs (mean_logps)")
    metrics: dict[str, float] = {}
    used: dict[str, torch.Tensor] = {}
    for s in sources:
        r = raw[s.name]
        valid = ~torch.isnan(r)
        v = r[valid]
        metrics[f"reward/{s.name}/mean"] = float(v.mean()) if v.numel() else math.nan
        metrics[f"reward/{s.name}/std"] = float(v.std()) if v.numel() > 1 else 0.0
        x = rank_normalize(torch.nan_to_num(r), valid) if s.transform == "rank" else r
        if unlikeliness_beta > 0:
            x = unlikeliness(torch.nan_to_num(x), mean_logps.to(x.device), valid, beta_rank=unlikeliness_beta)
        used[s.name] = torch.where(valid, x, torch.nan)
    weights = {s.name: s.weight for s in sources}
    agg: Aggregated = aggregate_advantages(used, weights, mode=aggregation, scale=scale)
    plain = combine(raw, weights)
    scored = plain.total[~plain.all_missing]
    metrics["reward/mean"] = float(scored.mean()) if scored.numel() else math.nan
    metrics["reward/std"] = float(scored.std()) if scored.numel() > 1 else 0.0
    transformed = combine(used, weights).total[~plain.all_missing]  # what the advantages are computed from
    metrics["reward/transformed_mean"] = float(transformed.mean()) if transformed.numel() else math.nan
    metrics["frac_reward_zero_std"] = float(agg.zero_std.float().mean()) if agg.zero_std.numel() else 0.0
    return RolloutRewards(agg.advantages, plain.total, agg.zero_std, agg.unscored, metrics)
