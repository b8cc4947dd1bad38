"""Every loss config checks every option at construction (Python use included), not at the first loss call."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

import align.losses as losses
from align.config import ConfigError

CONFIGS = [getattr(losses, n) for n in losses.__all__ if n.endswith("LossConfig")]
REQUIRED = {"CringeLossConfig": {"b": 0.0, "tau": 1.0},
            "GRPOLossConfig": {"rewards": [{"function": "tests.test_config:constant_reward"}]}}


def _bad_values(tp) -> list:
    """Values a field of type ``tp`` must refuse."""
    if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType):
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        return _bad_values(arms[0]) if len(arms) == 1 else ["not-a-value"]
    if typing.get_origin(tp) is typing.Literal:
        return ["not-a-choice", None]
    if tp is bool:
        return ["yes", 1]
    if tp is int:
        return [1.5, "3", -(10**9)]
    if tp is float:
        return [math.nan, "x"]
    if typing.get_origin(tp) is list:
        return [["module_that_does_not_exist:f"], [{"function": "x:y", "weights": 2}], "not a list"]
    raise AssertionError(f"no invalid value known for {tp}")


CASES = [(cls, f.name, bad) for cls in CONFIGS
         for f in dataclasses.fields(cls)
         for bad in _bad_values(typing.get_type_hints(cls)[f.name])]


def test_every_loss_config_is_covered():
    assert {c.__name__ for c in CONFIGS} >= {"DPOLossConfig", "LiPOLossConfig", "MMPOLossConfig", "CringeLossConfig",
                                             "RewardLossConfig", "GRPOLossConfig"}


@pytest.mark.parametrize(("cls", "name", "bad"), CASES,
                         ids=[f"{c.__name__}.{n}={b!r}" for c, n, b in CASES])
def test_an_invalid_option_raises_at_construction(cls, name, bad):
    base = dict(REQUIRED.get(cls.__name__, {}))
    cls(**base)  # the defaults are valid
    with pytest.raises(ValueError, match=rf"loss\.{name}|reward|rewards"):
        cls(**{**base, name: bad})


def test_a_grpo_run_needs_a_reward_but_the_config_may_leave_them_to_reward_funcs(tmp_path):
    import align

    assert losses.GRPOLossConfig().rewards == []
    (tmp_path / "r.yaml").write_text("algorithm: grpo\nloss:\n  num_generations: 4\n")
    recipe = align.load_recipe(tmp_path / "r.yaml")
    with pytest.raises(ConfigError, match="loss.rewards: give at least one reward .* or pass reward_funcs"):
        align.train(recipe, output_dir=tmp_path / "run", quiet=True)
    with pytest.raises(ValueError, match=r"\['reward_funcs'\] apply to algorithm grpo, not 'dpo'"):
        align.train(align.load_recipe(None), reward_funcs=[len], quiet=True)


def test_dpo_apo_zero_is_refused_when_the_config_is_made():
    with pytest.raises(ConfigError, match=r"loss\.loss_type: expected one of \['sigmoid'"):
        losses.DPOLossConfig(loss_type="apo_zero")
