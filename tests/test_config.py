"""Recipes: every shipped recipe validates; bad keys and types are clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.config import ConfigError, load_recipe
from align.trainers import DPOLossConfig
from tests.conftest import REPO

RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)  # launcher configs


def test_there_are_recipes():
    assert any(p.name == "dpo_tiny.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_validates(path: Path):
    recipe = load_recipe(path)
    assert recipe.algorithm
    if recipe.train.deepspeed:
        assert (REPO / recipe.train.deepspeed).exists(), f"{path}: {recipe.train.deepspeed} missing"


def test_overrides_and_types(tmp_path):
    r = load_recipe(REPO / "recipes/dpo_tiny.yaml", ["loss.beta=0.25", "train.learning_rate=1e-3",
                                                     "loss.loss_type=ipo", "data.max_rows=10"])
    assert isinstance(r.loss, DPOLossConfig) and r.loss.beta == 0.25 and r.loss.loss_type == "ipo"
    assert r.train.learning_rate == 1e-3 and r.data.max_rows == 10


@pytest.mark.parametrize("override, message", [
    (["train.lerning_rate=1"], "unknown key 'train.lerning_rate'"),
    (["data.max_rows=ten"], "data.max_rows: expected"),
    (["loss.beta=high"], "loss.beta: expected"),
    (["loss.loss_type=sigmoidd"], "loss.loss_type: expected one of"),
    (["loss.gamma=1"], "unknown key 'loss.gamma'"),
    (["algorithm=ppo"], "algorithm: unknown 'ppo'"),
    (["sft.enabled=3"], "sft.enabled: expected"),
    (["model=3"], "model: expected a mapping"),
    (["nonsense"], "not key=value"),
])
def test_bad_recipes_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_recipe(REPO / "recipes/dpo_tiny.yaml", override)


def test_unreadable_recipe(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: [dpo\n")
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_recipe(bad)
