"""``rollout_advantages``: raw rewards of a rollout → advantages and reward metrics, with the rank transform, the
unlikeliness reward and both aggregation modes."""

from __future__ import annotations

import math

import pytest
import torch

from align.online.advantages import rollout_advantages
from align.online.scoring import RewardSource
from align.rewards import aggregate_advantages, combine, group_advantages, rank_normalize, unlikeliness


def _sources(*specs):
    return [RewardSource.from_function(lambda **kw: [], name=n, weight=w, transform=t) for n, w, t in specs]


def _raw(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(4, 6, generator=g), "b": (torch.rand(4, 6, generator=g) * 3).round()}


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_sum_then_normalize_is_the_weighted_sum_then_unlikeliness_then_group_advantages(scale):
    raw, logps = _raw(), -torch.rand(4, 6, generator=torch.Generator().manual_seed(5))
    sources = _sources(("a", 1.0, "none"), ("b", 0.5, "rank"))
    out = rollout_advantages(raw, sources, scale=scale, unlikeliness_beta=0.25, mean_logps=logps)
    total = combine({"a": raw["a"], "b": rank_normalize(raw["b"])}, {"a": 1.0, "b": 0.5}).total
    expected = group_advantages(unlikeliness(total, logps, beta_rank=0.25), scale=scale)
    assert float((out.advantages - expected.advantages).abs().max()) < 1e-6
    torch.testing.assert_close(out.reward, raw["a"] + 0.5 * raw["b"])
    assert out.metrics["reward/a/mean"] == pytest.approx(float(raw["a"].mean()))
    assert out.metrics["reward/mean"] == pytest.approx(float((raw["a"] + 0.5 * raw["b"]).mean()), rel=1e-5)
    assert out.metrics["frac_reward_zero_std"] == float(expected.zero_std.float().mean())


def test_normalize_then_sum_and_unscored_completions():
    raw = _raw(1)
    raw["a"][0, 0] = raw["b"][0, 0] = math.nan  # no source scores this completion
    raw["b"][1, :3] = math.nan
    sources = _sources(("a", 1.0, "none"), ("b", 2.0, "none"))
    out = rollout_advantages(raw, sources, aggregation="normalize_then_sum")
    expected = aggregate_advantages(raw, {"a": 1.0, "b": 2.0}, mode="normalize_then_sum")
    torch.testing.assert_close(out.advantages, expected.advantages)
    assert out.advantages[0, 0] == 0 and bool(out.unscored[0, 0]) and out.reward[0, 0] == 0
    assert out.metrics["reward/b/mean"] == pytest.approx(float(raw["b"][~torch.isnan(raw["b"])].mean()))


def test_bad_calls():
    with pytest.raises(ValueError, match="rewards name"):
        rollout_advantages(_raw(), _sources(("a", 1.0, "none")))
    with pytest.raises(ValueError, match="mean_logps"):
        rollout_advantages(_raw(), _sources(("a", 1.0, "none"), ("b", 1.0, "none")), unlikeliness_beta=0.25)
