"""align from Python: a recipe with overrides, training, evaluation, the reference cache — then the same run
TRL-style, with a trainer built from a datasets.Dataset. Copy it into a notebook, or run it:

    python examples/python_api.py

It uses the embedded tiny model and the HH-RLHF slice beside the project, a few steps of each (about a minute),
and writes under ./runs/python_api.
"""

from pathlib import Path

from datasets import load_dataset
from transformers import TrainingArguments

import align
from align.models import load_model, load_tokenizer
from align.trainers import DPOLossConfig, DPOTrainer

REPO = Path(__file__).resolve().parents[1]
HH = REPO.parent / "shared" / "data" / "hh_rlhf_harmless_base.jsonl.gz"
OUT = Path("runs/python_api")

# 1. A recipe with dotted overrides, trained quietly; the summary is the dictionary summary.json holds.
recipe = align.load_recipe(REPO / "recipes/dpo_tiny.yaml", [f"data.train={HH}", "data.max_rows=100", "sft.max_steps=10",
                                                     "train.max_steps=10", "train.logging_steps=5",
                                                     f"model.name_or_path=embedded:tiny?corpus={HH.parent}"])
summary = align.train(recipe, output_dir=OUT / "recipe", overwrite=True, quiet=True)
print("trained:", summary["steps"], "steps, loss", summary["train_loss_first"], "->", summary["train_loss_last"])
print("reference cache:", summary["reference_cache"])

# 2. Held-out ranking accuracy of the trained policy's implicit reward (the reference it recorded), no intervals.
report = align.evaluate(summary["model_dir"], HH, split="eval", max_rows=100, resamples=0,
                        max_prompt_length=recipe.data.max_prompt_length,
                        max_response_length=recipe.data.max_response_length, quiet=True)
print("held-out pairwise accuracy:", report["pairwise_accuracy"], "over", report["n_pairs"], "pairs;",
      "reference entries computed:", report["reference_cache"]["computed"])

# 3. TRL-style: the model, TrainingArguments, the loss config and a datasets.Dataset; the trainer tokenizes the
#    rows and fills the reference log-probs from the model's starting weights (through the shared cache).
model_dir = summary["start_model"]
dataset = load_dataset("json", data_files=str(HH), split="train[:64]")
args = TrainingArguments(output_dir=str(OUT / "trl_style"), max_steps=4, per_device_train_batch_size=8,
                         learning_rate=5e-4, report_to="none", disable_tqdm=True, save_strategy="no")
trainer = DPOTrainer(model=load_model(model_dir), args=args, loss_config=DPOLossConfig(beta=0.1),
                     train_dataset=dataset, processing_class=load_tokenizer(model_dir),
                     max_prompt_length=96, max_response_length=64)
trainer.train()
print("TRL-style run: reference", trainer.reference_stats.to_dict(), "; rows skipped:",
      dict(trainer.train_dataset.report.skipped))
