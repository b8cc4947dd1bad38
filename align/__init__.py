"""align: fine-tune language models on ranked responses.

The Python API mirrors the command line (see ``align.api``)::

    import align

    recipe = align.load_recipe("recipes/dpo_tiny.yaml", ["train.max_steps=20"])
    summary = align.train(recipe, output_dir="runs/notebook", quiet=True)
    report = align.evaluate(summary["model_dir"], "../shared/data/hh_rlhf_harmless_base.jsonl.gz", split="eval")

The trainers also take TRL-style arguments (``from align.trainers import DPOTrainer, DPOLossConfig``), with a
``datasets.Dataset`` of any format the loaders read as ``train_dataset``.
"""

import align.tasks  # noqa: F401  (registers the built-in tasks as prompt sources: `task:NAME?...`)
from align.api import build_reference_cache, evaluate, load_recipe, quiet, train

__version__ = "0.1.0"
__all__ = ["__version__", "build_reference_cache", "evaluate", "load_recipe", "quiet", "train"]
