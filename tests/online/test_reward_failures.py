"""Reward functions that fail (tests/data/bad_inputs/rewards.py): a one-line error naming the function, the prompt
and the cause; unscored samples counted; a batch with none scored an error; 1e300 not mistaken for inf."""

from __future__ import annotations

import math
import re
import time

import pytest
import torch

from align.config import RewardSpec
from align.data.prompts import PromptExample
from align.online.scoring import RewardError, load_sources
from align.rewards.combine import combine
from tests.data.bad_inputs.rewards import REWARD_CASES

PROMPTS = [PromptExample("ab", {}, row=10), PromptExample("a3", {}, row=11)]  # `raises` fails on a "3"
TEXTS = [["x", "yy", "zzz"], ["1", "22", "333"]]


def _source(name: str, **kw):
    return load_sources([RewardSpec(function=f"tests.data.bad_inputs.rewards:{name}", **kw)])[0]


def _score(names: list[str], **kw) -> torch.Tensor:
    sources = load_sources([RewardSpec(function=f"tests.data.bad_inputs.rewards:{n}", **kw) for n in names])
    raw = {s.name: s(PROMPTS, TEXTS) for s in sources}
    return combine(raw, {s.name: s.weight for s in sources}).total


@pytest.mark.parametrize("name", [n for n, e in REWARD_CASES.items() if e is not None])
def test_each_bad_reward_is_a_one_line_error_naming_it(name):
    kw = {"reward_timeout_s": 1} if name == "never_returns" else {}
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as e:
        _score([name], **kw)
    msg = str(e.value)
    assert "\n" not in msg and re.search(REWARD_CASES[name], msg), msg
    assert time.perf_counter() - t0 < 30


def test_a_raise_names_the_prompt_it_fails_on():
    with pytest.raises(RewardError, match=r"on prompt 1 \(data row 11\)$"):
        _source("raises")(PROMPTS, TEXTS)


def test_huge_finite_rewards_are_kept_exactly_not_called_inf():
    r = _source("huge_finite")(PROMPTS, TEXTS)
    assert r.dtype == torch.float64 and torch.isfinite(r).all() and r[0, 0] == 1e300 * 2.0
    with pytest.raises(ValueError, match="overflows float32") as e:
        combine({"huge_finite": r})
    assert "±inf" not in str(e.value)


def test_unscored_samples_are_counted_and_a_batch_with_some_goes_on():
    sources = load_sources([RewardSpec(function="tests.data.bad_inputs.rewards:half_none"),
                            RewardSpec(function="tests.data.bad_inputs.rewards:all_none", weight=0.5)])
    raw = {s.name: s(PROMPTS, TEXTS) for s in sources}
    c = combine(raw, {s.name: s.weight for s in sources})
    assert sources[0].tally is sources[1].tally
    assert sources[0].tally.unscored == 3 and sources[0].tally.scored == 3  # completions 1, 3, 5 of the 6
    assert c.all_missing.sum() == 3 and torch.isfinite(c.total).all()


def test_tensor_numpy_and_bool_outputs_are_accepted():
    import numpy as np

    src = _source("half_none")
    src._fn = lambda prompts, completions, **k: np.arange(len(completions), dtype=np.float32)
    assert src(PROMPTS, TEXTS).tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    src._fn = lambda prompts, completions, **k: torch.ones(len(completions))
    assert src(PROMPTS, TEXTS).sum() == 6
    src._fn = lambda prompts, completions, **k: [True, False, np.bool_(True)] * 2  # a pass/fail reward
    assert src(PROMPTS, TEXTS).tolist() == [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]


def test_reward_timeout_must_be_positive():
    with pytest.raises(ValueError, match="reward_timeout_s"):
        RewardSpec(function="tests.data.bad_inputs.rewards:half_none", reward_timeout_s=0)
    with pytest.raises(ValueError, match="reward_timeout_s"):
        RewardSpec(function="tests.data.bad_inputs.rewards:half_none", reward_timeout_s=math.inf)


def test_a_timeout_that_is_met_changes_nothing():
    assert _source("half_none", reward_timeout_s=30)(PROMPTS, TEXTS).isnan().sum() == 3
