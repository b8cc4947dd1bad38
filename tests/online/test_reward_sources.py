"""Rewards as a TRL user gives them: a module beside the recipe, a plain callable with TRL's reward-function
signature (prompts, completions, completion_ids, trainer_state and the dataset's columns), prompts from a
``datasets.Dataset``; and ``align.train(align.load_recipe(path))`` keeps the recipe-relative lookup."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

import align
from align.config import ConfigError, RewardSpec, load_recipe
from align.data.example import DataError
from align.data.prompts import prompt_dataset, prompts_from_rows
from align.online.scoring import RewardSource, reward_sources

RECIPE = """\
algorithm: grpo
model:
  name_or_path: embedded:tiny
data:
  train: task:sort?n=10
loss:
  rewards:
    - function: myrewards:digit_reward
"""


def _recipe_with_module(folder, value: float):
    folder.mkdir()
    (folder / "myrewards.py").write_text(textwrap.dedent(f"""\
        from helper_beside import scale

        def digit_reward(prompts, completions, **kwargs):
            return [scale({value}) if any(ch.isdigit() for ch in c) else None for c in completions]
        """))
    (folder / "helper_beside.py").write_text("def scale(x):\n    return 2 * x\n")
    (folder / "recipe.yaml").write_text(RECIPE)
    return folder / "recipe.yaml"


@pytest.mark.parametrize("value", [1.0, 3.0])  # two recipes, two modules of one name: each gets its own
def test_a_reward_module_beside_the_recipe_is_found_from_any_working_directory(tmp_path, monkeypatch, value):
    path = _recipe_with_module(tmp_path / "project", value)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))  # the lookup adds the recipe's folder
    recipe = load_recipe(path)
    assert recipe.recipe_dir == path.parent.resolve()
    [source] = align.online.scoring.load_sources(recipe.loss.rewards)
    prompt = prompts_from_rows([{"prompt": "p"}])[0][0]
    r = source([prompt], [["a 1", "none"]])
    assert r[0, 0].item() == 2 * value and math.isnan(r[0, 1].item())


def test_a_module_beside_the_recipe_shadows_neither_libraries_nor_is_shadowed(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr("sys.path", list(sys.path))
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "json.py").write_text("def reward(prompts, completions, **kw):\n    return [0.0] * len(completions)\n")
    (folder / "broken_rewards.py").write_text("def reward(:\n")
    (folder / "recipe.yaml").write_text(RECIPE.replace("myrewards:digit_reward", "json:reward"))
    with pytest.raises(ConfigError, match=r"the one in .* has the name of a module imported before: rename it"):
        load_recipe(folder / "recipe.yaml")  # the standard library's json stays
    assert sys.modules["json"].__file__ != str(folder / "json.py") and sys.path[-1] == str(folder)
    (folder / "recipe.yaml").write_text(RECIPE.replace("myrewards:digit_reward", "broken_rewards:reward"))
    with pytest.raises(ConfigError, match=r"reward module .*broken_rewards.py cannot be imported: SyntaxError"):
        load_recipe(folder / "recipe.yaml")


def test_a_missing_reward_module_says_where_it_looked(tmp_path, monkeypatch):
    (tmp_path / "recipe.yaml").write_text(RECIPE.replace("myrewards", "no_such_rewards_module"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"cannot be imported: No module named 'no_such_rewards_module' "
                                          r"\(looked beside the recipe in .*, then on sys.path\)"):
        load_recipe(tmp_path / "recipe.yaml")


def test_train_on_a_loaded_recipe_keeps_the_recipe_relative_lookup(tmp_path, monkeypatch):
    path = _recipe_with_module(tmp_path / "project", 1.0)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    seen = {}

    def fake_run_training(recipe, output_dir, *, search_dirs, **kwargs):
        seen["dirs"] = search_dirs
        return {}

    monkeypatch.setattr("align.pipeline.run_training", fake_run_training)
    monkeypatch.chdir(tmp_path)
    align.train(align.load_recipe(path), quiet=True)
    assert seen["dirs"][0] == path.parent.resolve()  # as align.train(path) does
    align.train(path, quiet=True)
    assert seen["dirs"][0] == path.parent.resolve()


def test_a_callable_gets_trls_reward_arguments(small_tokenizer):
    import datasets

    calls = []

    def graded(prompts, completions, completion_ids, trainer_state, answer, **kwargs):
        calls.append({"prompts": prompts, "completions": completions, "ids": completion_ids, "state": trainer_state,
                      "answer": answer, "other": kwargs})
        return [float(len(c[-1]["content"] if isinstance(c, list) else c)) if a else None
                for c, a in zip(completions, answer)]

    ds = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": "Sort: 3 1 2"}], "answer": "1 2 3", "level": 1},
        {"prompt": [{"role": "user", "content": "Sort: 2 1"}], "answer": "", "level": 2}])
    prompts, report, truncated = prompt_dataset(ds, small_tokenizer, max_prompt_length=64)
    assert report.rows_read == 2 and report.examples == 2 and truncated == 0
    assert prompts[0].prompt_ids and prompts[0].example.columns == {"answer": "1 2 3", "level": 1}

    sources = reward_sources([graded, "tests.test_config:constant_reward", graded], reward_weights=[1.0, 0.0, 0.5])
    assert [s.name for s in sources] == ["graded", "constant_reward", "graded_2"]
    assert [s.weight for s in sources] == [1.0, 0.0, 0.5]
    assert sources[0].describe() == {"name": "graded", "weight": 1.0, "transform": "none", "function":
                                     f"{__name__}:test_a_callable_gets_trls_reward_arguments.<locals>.graded"}
    assert sources[1].describe()["function"] == "tests.test_config:constant_reward"
    ids = [[(5, 6), (7,)], [(8, 9, 10), (11,)]]
    r = sources[0]([p.example for p in prompts], [["abc", "de"], ["f", "gh"]], completion_ids=ids,
                   trainer_state="STATE")
    assert r.shape == (2, 2) and r[0].tolist() == [3.0, 2.0] and torch.isnan(r[1]).all()
    call = calls[0]
    assert call["prompts"][0] == [{"role": "user", "content": "Sort: 3 1 2"}] and len(call["prompts"]) == 4
    assert call["completions"][0] == [{"role": "assistant", "content": "abc"}]  # conversational, as TRL
    assert call["ids"] == [[5, 6], [7], [8, 9, 10], [11]] and call["state"] == "STATE"
    assert call["answer"] == ["1 2 3", "1 2 3", "", ""] and call["other"] == {"level": [1, 1, 2, 2]}


def test_reward_sources_accepts_specs_and_refuses_bad_entries():
    [a, b] = reward_sources([RewardSpec(function="tests.test_config:constant_reward", name="c", weight=2.0),
                             {"function": "tests.test_config:constant_reward"}])
    assert (a.name, a.weight, b.name) == ("c", 2.0, "constant_reward")
    with pytest.raises(ValueError, match="reward_weights has 1 values for 2"):
        reward_sources([len, len], [1.0])
    with pytest.raises(ValueError, match="reward_weights\\[0\\] must be a finite number"):
        reward_sources([len], [math.nan])
    with pytest.raises(ValueError, match="give at least one reward"):
        reward_sources([])
    with pytest.raises(ValueError, match="reward model 'no/such/dir'|no such directory"):
        reward_sources(["no/such/dir"])
    bad = RewardSource.from_function(lambda prompts, completions, **kw: [1.0])
    with pytest.raises(ValueError, match="returned 1 values for 2 completions"):
        bad(prompts_from_rows([{"prompt": "p"}])[0], [["a", "b"]])


def test_prompt_rows_errors_name_the_columns():
    with pytest.raises(DataError, match=r"no usable prompts in 2 rows \(columns: \['question'\]"):
        prompts_from_rows([{"question": "a"}, {"question": "b"}])
    with pytest.raises(ValueError, match="expected a datasets.Dataset or a list of dicts"):
        prompts_from_rows("prompts.jsonl")
    examples, report = prompts_from_rows([{"question": "a"}, {"question": ""}], columns={"question": "prompt"})
    assert len(examples) == 1 and sum(report.skipped.values()) == 1
