"""``align train recipes/grpo_rank_tiny.yaml`` as shipped (the embedded tiny model, its SFT stage, GRPO with the
unlikeliness reward on the sorting task), on the machine's default thread count: the task's true reward rises over
the run, and on held-out prompts with a 95% interval (paired bootstrap over prompts) that excludes 0.

This asserts learning, not a float path: the recipe's header lists the runs measured (3 seeds on 1 thread, seed 0
on 2 threads, each with its own SFT model); the interval excluded 0 in every one."""

from __future__ import annotations

import json
import statistics

import pytest

from align.config import load_recipe
from align.online_run import run_grpo
from tests.conftest import REPO


def test_grpo_rank_tiny_raises_the_true_reward(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "grpo_rank_tiny.yaml")
    s = run_grpo(recipe, tmp_path / "run", progress=False)
    curve = s["reward_curve"]
    logged = [h for h in json.loads((tmp_path / "run" / "log_history.json").read_text()) if "loss" in h]
    assert s["steps"] == 40 and len(curve) == len(logged) >= s["steps"] // recipe.train.logging_steps  # per logged step
    assert curve == [h["reward/mean"] for h in logged]
    assert s["reward_mean_first"] == curve[0] and s["reward_mean_last"] == curve[-1]
    # the training reward (graded score of the policy's own samples, 16 prompts x 8 per step) is noisy step to
    # step; compare the first and the last quarter of the run
    q = max(len(curve) // 4, 1)
    assert statistics.mean(curve[-q:]) > statistics.mean(curve[:q]), curve
    # and on held-out prompts (64 x 8 samples, before and after on the same random stream): the paired change's
    # 95% interval lies above 0
    before, after = s["eval_before"]["reward"]["reward_graded"], s["eval"]["reward"]["reward_graded"]
    gain = s["eval_gain"]["reward_graded"]
    assert gain["mean"] == pytest.approx(after - before, abs=1e-6)  # per-prompt values are kept to 6 decimals
    assert gain["ci"][0] > 0, (before, after, gain)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["reward_curve"] == curve
