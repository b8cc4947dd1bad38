"""``align train recipes/grpo_rank_tiny.yaml`` as shipped (the embedded tiny model, its SFT stage, GRPO with the
unlikeliness reward on the sorting task): the task's true reward rises over the run.

The run is pinned to one CPU thread so that it follows one reproducible numerical path (float sums in another
order change the SFT model and every sample after it). The gain is not robust to that path: measured, one thread
gives held-out graded 0.570 -> 0.640 (seed 0) and 0.415 -> 0.492 (seed 1), two threads 0.558 -> 0.518. The test
guards the pipeline on the measured path; it does not claim the recipe always improves."""

from __future__ import annotations

import json
import statistics

import torch

from align.config import load_recipe
from align.online_run import run_grpo
from tests.conftest import REPO


def test_grpo_rank_tiny_raises_the_true_reward(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a child process (the SFT stage may run in one) reads this
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe = load_recipe(REPO / "recipes" / "grpo_rank_tiny.yaml")
        s = run_grpo(recipe, tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    curve = s["reward_curve"]
    logged = [h for h in json.loads((tmp_path / "run" / "log_history.json").read_text()) if "loss" in h]
    assert s["steps"] == 40 and len(curve) == len(logged) >= s["steps"] // recipe.train.logging_steps  # per logged step
    assert curve == [h["reward/mean"] for h in logged]
    assert s["reward_mean_first"] == curve[0] and s["reward_mean_last"] == curve[-1]
    # the training reward (graded score of the policy's own samples, 16 prompts x 8 per step) is noisy step to
    # step; compare the first and the last quarter of the run
    q = max(len(curve) // 4, 1)
    assert statistics.mean(curve[-q:]) > statistics.mean(curve[:q]), curve
    # and on held-out prompts (64 x 8 samples, before and after on the same random stream; measured: 0.570 ->
    # 0.640 with 95% interval [0.604, 0.678] for seed 0, 0.415 -> 0.492 for seed 1)
    before, after = s["eval_before"]["reward"]["reward_graded"], s["eval"]["reward"]["reward_graded"]
    assert after > before + 0.02, (before, after)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["reward_curve"] == curve
