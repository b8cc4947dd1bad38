"""GRPOTrainer end to end on the small model: summary and logged metrics, one generation per accumulation window
reused for μ = num_iterations steps, the live reference, and groups of equal rewards (zero advantage, no NaN)."""

from __future__ import annotations

import json
import math

import pytest

import align.trainers.grpo as grpo_module
from align.config import load_recipe
from align.online.engines import SharedPrefixEngine
from align.online_run import run_grpo

TASK = "task:sort?n=40&seed=0&min_len=2&max_len=3&max_digit=5"


def _recipe(model_dir, tmp_path, reward="short", **extra):
    overrides = [f"model.name_or_path={model_dir}", f"data.train={TASK}", "data.eval_fraction=0.1",
                 "sft.enabled=false", "eval.enabled=false", "train.per_device_train_batch_size=2",
                 "train.learning_rate=1e-3", "train.logging_steps=1", "train.save_steps=100", "loss.num_generations=4",
                 "loss.max_completion_length=6", "loss.unlikeliness=0.0"]
    recipe = load_recipe("recipes/grpo_rank_tiny.yaml", overrides + [f"{k}={v}" for k, v in extra.items()])
    recipe.loss.rewards = [type(recipe.loss.rewards[0])(function=f"tests.online.rewards:{reward}", weight=1.0)]
    return recipe


@pytest.fixture
def generate_calls(monkeypatch):
    calls = []
    real = SharedPrefixEngine.generate

    def counting(self, model, prompt_ids, **k):
        calls.append(len(prompt_ids))
        return real(self, model, prompt_ids, **k)

    monkeypatch.setattr(SharedPrefixEngine, "generate", counting)
    return calls


def test_summary_metrics_generation_windows_and_live_reference(small_model_dir, tmp_path, generate_calls):
    recipe = _recipe(small_model_dir, tmp_path, **{"train.max_steps": 4, "train.gradient_accumulation_steps": 2,
                                                   "loss.num_iterations": 2, "loss.beta": 0.1})
    s = run_grpo(recipe, tmp_path / "run", progress=False)
    assert s["steps"] == 4
    # one generation per accumulation window (2 micro-batches x 2 prompts = 4 prompts), each window serving
    # num_iterations = 2 optimizer steps: 4 steps -> 2 generations
    assert generate_calls == [4, 4]
    assert len(s["reward_curve"]) == 4 and s["reward_mean_first"] == s["reward_curve"][0]
    assert s["reward_mean_last"] == s["reward_curve"][-1] and all(math.isfinite(v) for v in s["reward_curve"])
    assert s["reference_cache"]["computed"] > 0  # β > 0: the samples' reference values are computed live
    assert s["timing"]["generation_seconds_per_step"] > 0 and s["timing"]["training_seconds_per_step"] > 0
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    logged = [h for h in history if "loss" in h]
    assert len(logged) == 4
    for key in ("reward/mean", "reward/std", "reward/short/mean", "reward/short/std", "frac_reward_zero_std",
                "completions/mean_length", "completions/min_length", "completions/max_length",
                "completions/clipped_ratio", "kl", "clip_ratio/region", "entropy", "tokens_per_step",
                "padding_fraction", "reward/transformed_mean", "timing/reference_seconds"):
        assert all(key in h and math.isfinite(h[key]) for h in logged), key
    # the first step is on-policy against the reference: KL exactly 0 before any update
    assert logged[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert any(h["kl"] > 0 for h in logged[1:])


@pytest.mark.parametrize("drop", [False, True])
def test_equal_rewards_give_zero_advantage_and_no_nan(small_model_dir, tmp_path, drop):
    recipe = _recipe(small_model_dir, tmp_path, reward="constant",
                     **{"train.max_steps": 2, "loss.drop_zero_variance_groups": str(drop).lower()})
    s = run_grpo(recipe, tmp_path / "run", progress=False)
    history = [h for h in json.loads((tmp_path / "run" / "log_history.json").read_text()) if "loss" in h]
    assert [h["frac_reward_zero_std"] for h in history] == [1.0, 1.0]
    # zero advantage and β = 0: the loss and its gradient are exactly 0, never NaN
    assert [h["loss"] for h in history] == [0.0, 0.0] and all(h["grad_norm"] == 0.0 for h in history)
    assert s["non_finite_steps"] == []


def test_one_step_moves_probability_toward_above_average_samples(small_model_dir, tmp_path, monkeypatch):
    """The whole path (sampling, rewards, advantages, row layout, loss, optimizer step): after one plain SGD step,
    the samples with positive advantage gained log-probability relative to those with negative advantage."""
    import torch

    seen = {}
    real = grpo_module.GRPOTrainer._make_rollout

    def recording(self, prompt_batches):
        rollout = real(self, prompt_batches)
        seen["trainer"], seen["rollout"] = self, rollout
        seen["before"] = [self._no_grad_logps(self.model, b).logps.sum(-1) for b in rollout.batches]
        return rollout

    monkeypatch.setattr(grpo_module.GRPOTrainer, "_make_rollout", recording)
    recipe = _recipe(small_model_dir, tmp_path, reward="length",
                     **{"train.max_steps": 1, "train.optim": "sgd", "train.learning_rate": 0.5,
                        "train.max_grad_norm": 0, "train.per_device_train_batch_size": 4,
                        "loss.num_generations": 8, "loss.max_completion_length": 12})
    run_grpo(recipe, tmp_path / "run", progress=False)
    trainer, rollout = seen["trainer"], seen["rollout"]
    up, down = [], []
    for batch, before in zip(rollout.batches, seen["before"]):
        delta = trainer._no_grad_logps(trainer.model, batch).logps.sum(-1) - before
        adv = batch["advantages"]
        up.append(delta[adv > 0])
        down.append(delta[adv < 0])
    up, down = torch.cat(up), torch.cat(down)
    assert up.numel() and down.numel()
    assert up.mean() > down.mean() + 0.05, (up.mean(), down.mean())
