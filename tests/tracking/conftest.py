"""One finished run shared by the model-card and report tests: LiPO on the real OASST ranked lists (so the
held-out set has lists longer than pairs), a few steps on the small model, a step logged every step."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import OASST, REPO

STEPS = 6


@pytest.fixture(scope="session")
def finished_run(small_model_dir, tmp_path_factory) -> tuple[Path, dict]:
    """``(run_dir, summary)`` of ``align.pipeline.run_training``; the last checkpoint is the last step."""
    from align.config import load_recipe
    from align.pipeline import run_training

    out = tmp_path_factory.mktemp("lipo_run")
    overrides = [f"model.name_or_path={small_model_dir}", f"data.train={OASST}", "data.max_prompt_length=48",
                 "data.max_response_length=32", "sft.enabled=false", f"train.max_steps={STEPS}",
                 "train.logging_steps=1", f"train.save_steps={STEPS}", "train.learning_rate=2e-3",
                 f"reference.cache_dir={out / 'refcache'}", "eval.batch_size=32"]
    recipe = load_recipe(REPO / "recipes" / "lipo_tiny.yaml", overrides)
    summary = run_training(recipe, out / "run", progress=False)
    return out / "run", summary
