"""GRPO from Python as a TRL user writes it: a plain reward function with TRL's signature and a
``datasets.Dataset`` of prompts; then the same from a recipe whose reward module sits beside it. Run it:

    python examples/grpo_custom_reward.py [OUTPUT_DIR]

It uses the embedded tiny model and the built-in sorting task ("Sort: 3 1 2" → "1 2 3"): a short SFT stage and 4
GRPO steps for each run (about a minute and a half on two CPU cores). It writes under OUTPUT_DIR (default
./runs/grpo_custom_reward) each run's summary.json (with the reward curve), log_history.json and completions.jsonl
(the sampled completions with their rewards and advantages).
"""

import sys
from pathlib import Path

import datasets

import align
from align.tasks import task_rows

HERE = Path(__file__).resolve().parent / "grpo_custom_reward"
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/grpo_custom_reward")


def exact_and_short(prompts, completions, completion_ids, answer, **kwargs):
    """A reward function as TRL calls it: one value per completion (each prompt's completions in a row), the
    completions' token ids, and the prompt rows' other columns (here ``answer``) as keyword lists. 1 for the sorted
    list, minus 0.01 per token past 6; None would mean "not scored"."""
    out = []
    for completion, ids, target in zip(completions, completion_ids, answer):
        text = completion[-1]["content"] if isinstance(completion, list) else completion  # chat prompts: messages
        out.append(float(text.split() == target.split()) - 0.01 * max(len(ids) - 6, 0))
    return out


# 1. TRL-style: reward_funcs and a datasets.Dataset of prompts ("prompt" as chat messages, "answer" for the reward).
rows = task_rows("task:sort?n=256&seed=0&min_len=3&max_len=3&max_digit=5")
train = datasets.Dataset.from_list(rows[:248])
held_out = datasets.Dataset.from_list(rows[248:])
recipe = align.load_recipe(HERE / "recipe.yaml")
summary = align.train(recipe, output_dir=OUT / "callable", overwrite=True, quiet=True,
                      reward_funcs=[exact_and_short, "myrewards:sorted_reward"], reward_weights=[1.0, 0.5],
                      train_dataset=train, eval_dataset=held_out)
print("callable rewards: reward curve", [round(x, 3) for x in summary["reward_curve"]],
      "| held-out before → after:", summary["eval_before"]["reward"], "→", summary["eval"]["reward"])

# 2. The recipe alone: its reward module (myrewards.py) is found beside it, from any working directory.
summary = align.train(HERE / "recipe.yaml", output_dir=OUT / "recipe", overwrite=True, quiet=True)
print("recipe rewards: reward curve", [round(x, 3) for x in summary["reward_curve"]])
for run in ("callable", "recipe"):
    log = OUT / run / "completions.jsonl"
    print(f"{run}: {log}", "written" if log.exists() else "not written")
