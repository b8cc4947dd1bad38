"""Several rewards → advantages in TRL's two ``multi_objective_aggregation`` modes, checked against TRL 1.16's own
code: the aggregation block of ``GRPOTrainer._generate_and_score_completions`` is cut from its source and run on
our tensors, so a change on TRL's side shows up here."""

from __future__ import annotations

import inspect
import math
import textwrap
from types import SimpleNamespace

import pytest
import torch

from align.rewards import aggregate_advantages, group_advantages

START = "        if self.multi_objective_aggregation == \"sum_then_normalize\":"
END = "        advantages = torch.nan_to_num(advantages, nan=0.0)"


def _trl_advantages(rewards_per_func: torch.Tensor, weights: list[float], mode: str, scale: str, g: int):
    """Run TRL's aggregation block (``rewards_per_func`` ``[B·G, F]``) and return its advantages ``[B·G]``."""
    from trl import GRPOTrainer
    from trl.trainer.utils import nanstd

    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    start, end = source.index(START), source.index(END) + len(END)
    block = textwrap.dedent(source[start:end])
    me = SimpleNamespace(multi_objective_aggregation=mode, scale_rewards=scale, reward_weights=torch.tensor(weights),
                         reward_funcs=[None] * len(weights))
    scope = {"self": me, "torch": torch, "nanstd": nanstd, "rewards_per_func": rewards_per_func,
             "num_generations": g, "device": rewards_per_func.device,
             "unscorable_mask": torch.isnan(rewards_per_func).all(dim=1)}
    exec(compile(block, "trl_grpo_aggregation", "exec"), scope)
    return scope["advantages"]


def _random_rewards(b: int, g: int, f: int, seed: int, missing: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(b, g, f, generator=gen) * torch.tensor([1.0, 10.0, 0.1])[:f]
    r[:, :, 0] = r[:, :, 0].round()  # ties in one reward
    r[0, :, 0] = 1.0  # a constant reward in one group
    r[torch.rand(b, g, f, generator=gen) < missing] = math.nan
    r[1, 0] = math.nan  # a sample that no reward scores
    return r


@pytest.mark.parametrize("mode", ["sum_then_normalize", "normalize_then_sum"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_trls_aggregation(mode, scale, seed):
    b, g, f = 6, 4, 3
    r = _random_rewards(b, g, f, seed, missing=0.15)
    weights = [1.0, 0.5, 2.0]
    trl = _trl_advantages(r.view(b * g, f), weights, mode, scale, g).view(b, g)
    ours = aggregate_advantages(r, weights, mode=mode, scale=scale)
    assert float((ours.advantages - trl).abs().max()) < 1e-6
    by_name = aggregate_advantages({"a": r[..., 0], "b": r[..., 1], "c": r[..., 2]}, {"a": 1.0, "b": 0.5, "c": 2.0},
                                   mode=mode, scale=scale)
    torch.testing.assert_close(by_name.advantages, ours.advantages)
    assert bool(ours.unscored[1, 0]) and ours.advantages[1, 0] == 0 and ours.rewards[1, 0] == 0
    expected_total = (torch.nan_to_num(r) * torch.tensor(weights)).sum(-1)
    torch.testing.assert_close(ours.rewards, expected_total)


def test_the_two_modes_differ_when_rewards_have_different_spreads():
    r = _random_rewards(6, 4, 3, 0, missing=0.0)
    a = aggregate_advantages(r, mode="sum_then_normalize").advantages
    b = aggregate_advantages(r, mode="normalize_then_sum").advantages
    assert float((a - b).abs().max()) > 0.1


def test_sum_then_normalize_is_group_advantages_of_the_weighted_sum():
    r = _random_rewards(5, 4, 2, 3, missing=0.0)
    r[1, 0] = 0.5  # every sample scored
    out = aggregate_advantages(r, [2.0, -1.0], scale="batch")
    expected = group_advantages(2 * r[..., 0] - r[..., 1], scale="batch")
    torch.testing.assert_close(out.advantages, expected.advantages)
    assert torch.equal(out.zero_std, expected.zero_std)


def test_zero_std_groups_and_bad_input():
    r = torch.tensor([[[1.0, 2.0], [1.0, 2.0]], [[0.0, 1.0], [1.0, 1.0]]])  # group 0 constant in both rewards
    for mode in ("sum_then_normalize", "normalize_then_sum"):
        out = aggregate_advantages(r, mode=mode)
        assert out.zero_std.tolist() == [True, False]
        assert out.advantages[0].abs().max() < 1e-6
    with pytest.raises(ValueError, match="multi_objective_aggregation"):
        aggregate_advantages(r, mode="sum")
    with pytest.raises(ValueError, match="2 weights for"):
        aggregate_advantages(torch.zeros(2, 2, 3), [1.0, 1.0])
    with pytest.raises(ValueError, match="weights name"):
        aggregate_advantages({"a": torch.zeros(2, 2)}, {"b": 1.0})
