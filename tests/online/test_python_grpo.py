"""GRPO from Python as TRL's GRPOTrainer is called: ``align.train(recipe, reward_funcs=[callable, ...],
train_dataset=datasets.Dataset, eval_dataset=...)`` on the embedded tiny model, two steps."""

from __future__ import annotations

import json

import datasets

import align
from align.tasks import task_rows

seen_columns: set[str] = set()


def has_digit(prompts, completions, answer, **kwargs):
    """TRL's signature; the dataset's ``answer`` column arrives as a keyword list."""
    seen_columns.update(kwargs)
    assert len(answer) == len(completions)
    return [float(any(ch.isdigit() for ch in c[-1]["content"])) for c in completions]


def test_grpo_from_python_with_a_callable_and_a_dataset(tmp_path):
    rows = task_rows("task:sort?n=12&seed=0&min_len=3&max_len=3&max_digit=5")
    recipe = align.load_recipe(None, ["algorithm=grpo", "sft.enabled=false", "train.max_steps=2",
                                      "train.per_device_train_batch_size=2", "train.logging_steps=1",
                                      "loss.num_generations=2", "loss.max_completion_length=4",
                                      "data.max_prompt_length=32"])
    summary = align.train(recipe, output_dir=tmp_path / "run", quiet=True, reward_funcs=[has_digit, len_reward],
                          reward_weights=[1.0, 0.0], train_dataset=datasets.Dataset.from_list(rows[:8]),
                          eval_dataset=rows[8:])
    assert summary["steps"] == 2 and len(summary["reward_curve"]) == 2
    assert summary["data"]["train_prompts"] == 8 and summary["data"]["eval_prompts"] == 4
    assert set(summary["eval"]["reward"]) == {"has_digit", "len_reward"}
    assert [r["name"] for r in summary["rewards"]] == ["has_digit", "len_reward"]
    assert summary["rewards"][0]["function"].endswith(":has_digit") and summary["rewards"][1]["weight"] == 0.0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["reward_curve"] == summary["reward_curve"]
    assert {"completion_ids", "trainer_state"} <= seen_columns  # TRL's arguments are passed too


def len_reward(prompts, completions, **kwargs):
    return [float(len(c[-1]["content"])) for c in completions]
