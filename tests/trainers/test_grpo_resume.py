"""GRPO interrupted after a checkpoint and resumed ends with the uninterrupted run's model, bit for bit, on CPU:
samples come from streams seeded by (run seed, window, prompt index), and a window that outlives a checkpoint
(μ = num_iterations > 1) is saved with it, π_old's values included."""

from __future__ import annotations

import pytest

import align.trainers.rollout as rollout_module
from align.config import load_recipe
from align.online_run import run_grpo
from tests.helpers import model_hash

TASK = "task:sort?n=40&seed=0&min_len=2&max_len=3&max_digit=5"


class Interrupted(RuntimeError):
    pass


def _recipe(model_dir, mu: int):
    overrides = [f"model.name_or_path={model_dir}", f"data.train={TASK}", "data.eval_fraction=0.1",
                 "sft.enabled=false", "eval.enabled=false", "train.per_device_train_batch_size=2",
                 "train.learning_rate=1e-3", "train.lr_scheduler_type=constant", "train.logging_steps=1",
                 "train.max_steps=4", "train.save_steps=1", "loss.num_generations=4", "loss.max_completion_length=6",
                 f"loss.num_iterations={mu}", "loss.beta=0.04", "loss.unlikeliness=0.25",
                 "loss.rewards=[{function: 'tests.online.rewards:length', weight: 1.0}]"]
    return load_recipe("recipes/grpo_rank_tiny.yaml", overrides)




@pytest.mark.parametrize("mu,stop_at", [(1, 2), (2, 3)])
def test_resumed_grpo_ends_with_the_uninterrupted_model(small_model_dir, tmp_path, monkeypatch, mu, stop_at):
    straight = tmp_path / "straight"
    run_grpo(_recipe(small_model_dir, mu), straight, progress=False)

    real = rollout_module.RolloutTrainer.get_batch_samples

    def dying(self, *a, **k):
        if self.state.global_step == stop_at:  # checkpoint-{stop_at} is written: the process dies here
            raise Interrupted
        return real(self, *a, **k)

    monkeypatch.setattr(rollout_module.RolloutTrainer, "get_batch_samples", dying)
    resumed = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        run_grpo(_recipe(small_model_dir, mu), resumed, progress=False)
    monkeypatch.setattr(rollout_module.RolloutTrainer, "get_batch_samples", real)
    s = run_grpo(_recipe(small_model_dir, mu), resumed, resume=True, progress=False)
    assert s["steps"] == 4
    assert model_hash(resumed) == model_hash(straight)
