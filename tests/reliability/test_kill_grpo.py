"""kill -9 during GRPO's sampling and while a GRPO checkpoint is written: the resumed run ends with the
uninterrupted run's model, bit for bit, on the CPU (samples come from seeded per-prompt streams)."""

from __future__ import annotations

import signal

import pytest

from tests.helpers import model_hash
from tests.reliability.test_kill import _align

TASK = "task:sort?n=40&seed=0&min_len=2&max_len=3&max_digit=5"


def _args(model_dir, out) -> list[str]:
    return ["train", "recipes/grpo_rank_tiny.yaml", "--output-dir", str(out), f"model.name_or_path={model_dir}",
            f"data.train={TASK}", "data.eval_fraction=0.1", "sft.enabled=false", "eval.enabled=false",
            "train.per_device_train_batch_size=2", "train.learning_rate=1e-3", "train.lr_scheduler_type=constant",
            "train.logging_steps=1", "train.max_steps=4", "train.save_steps=1", "loss.num_generations=4",
            "loss.max_completion_length=6", "loss.beta=0.04",
            "loss.rewards=[{function: 'tests.online.rewards:length', weight: 1.0}]"]




@pytest.fixture(scope="module")
def straight(small_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill_grpo")
    p = _align(tmp / "home", *_args(small_model_dir, tmp / "straight"))
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp, model_hash(tmp / "straight")


@pytest.mark.parametrize("kill", [("generate", 3), ("save", 2)])
def test_killed_grpo_resumes_to_the_uninterrupted_model(straight, small_model_dir, kill):
    tmp, want = straight
    out = tmp / f"killed-{kill[0]}"
    p = _align(tmp / "home", *_args(small_model_dir, out), kill=kill)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    assert not (out / "model").exists()
    p = _align(tmp / "home", *_args(small_model_dir, out), "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert model_hash(out) == want
