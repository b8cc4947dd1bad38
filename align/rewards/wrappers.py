"""Turning a reward function into another reward function (TRL's signature in and out).

:func:`rank_reward` is the rank transform of :func:`align.rewards.rank_normalize` as a reward function: each
reward replaced by its rank among the completions of the same prompt, mapped to [0, 1] (a scale-free use of a
reward whose magnitude means little, e.g. a reward model's score). In a recipe the same is ``transform: rank``.

The unlikeliness reward (:func:`align.rewards.unlikeliness`) is not offered as a reward function: it ranks the
completions by their log-probability under the sampling policy, which a reward function is not given. It is
GRPO's ``loss.unlikeliness``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from align.errors import RewardError
from align.rewards.advantages import rank_normalize

RewardFunction = Callable[..., Sequence[float | None]]


def _groups(prompts: Sequence[Any] | None, n: int, group_size: int | None) -> list[range]:
    """Index ranges of the groups: runs of ``group_size``, else runs of equal consecutive prompts (TRL passes each
    prompt's G completions in a row)."""
    if group_size is not None:
        if group_size < 1 or n % group_size:
            raise ValueError(f"{n} completions do not split into groups of {group_size}")
        return [range(s, s + group_size) for s in range(0, n, group_size)]
    if prompts is None or len(prompts) != n:
        raise ValueError("rank_reward needs the prompts (one per completion) or a group_size")
    out, start = [], 0
    for i in range(1, n + 1):
        if i == n or prompts[i] != prompts[start]:
            out.append(range(start, i))
            start = i
    return out


def rank_reward(fn: RewardFunction, group_size: int | None = None) -> RewardFunction:
    """A reward function returning, for each completion, the rank of ``fn``'s reward among its group's, on [0, 1]
    (worst 0, best 1, ties share their mean rank; a group of one or of equal rewards gets 0.5; None stays None).

    Groups are the completions of one prompt: runs of ``group_size`` (GRPO's ``num_generations``) when given, else
    runs of equal consecutive prompts.

    >>> longest = rank_reward(lambda prompts, completions, **kw: [len(c) for c in completions])
    >>> longest(prompts=["p", "p", "p"], completions=["a", "abc", "ab"])
    [0.0, 1.0, 0.5]
    """
    @functools.wraps(fn)
    def ranked(prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any) -> list:
        values = list(fn(prompts=prompts, completions=completions, **kwargs))
        if len(values) != len(completions):
            raise RewardError(f"reward function {getattr(fn, '__name__', fn)} returned {len(values)} values for "
                             f"{len(completions)} completions")
        out: list[float | None] = [None] * len(values)
        for idx in _groups(prompts, len(values), group_size):
            raw = [math.nan if values[i] is None else float(values[i]) for i in idx]
            r = torch.tensor([raw], dtype=torch.float64)
            valid = ~torch.isnan(r)
            ranks = rank_normalize(torch.nan_to_num(r), valid)[0].tolist()
            for j, i in enumerate(idx):
                out[i] = ranks[j] if bool(valid[0, j]) else None
        return out

    ranked.__name__ = f"{getattr(fn, '__name__', 'reward')}_rank"
    return ranked
