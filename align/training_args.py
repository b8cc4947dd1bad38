"""What a recipe's ``train`` section says about ``transformers.TrainingArguments`` and TRL's names: the fields align
sets itself (:data:`ALIGN_SETS`), the TRL / transformers names that have an align equivalent under another key
(:data:`EQUIVALENTS`), and the installed ``TrainingArguments``'s fields. Plain data read by :mod:`align.config`
for its one-line errors; transformers is imported only when the fields are asked for.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

# TRL / transformers names with an align equivalent that is not simply the same name in another section.
# Keyed by the bare name; applies in any section.
EQUIVALENTS: dict[str, str] = {
    "max_length": "align limits prompt and response separately: data.max_prompt_length and "
                  "data.max_response_length (the longest sequence is their sum)",
    "max_completion_length": "use data.max_response_length",
    "truncation_mode": "use data.truncation (truncate | drop); align keeps the end of a long prompt and the start "
                       "of a long response",
    "precompute_ref_log_probs": "align always precomputes the reference log-probs, into a shared cache that later "
                                "runs reuse (settings: reference.*)",
    "precompute_ref_batch_size": "use reference.batch_size",
    "ref_model": "use model.reference (default: the policy's starting weights)",
    "model_name_or_path": "use model.name_or_path",
    "torch_dtype": "use model.dtype",
    "peft_config": "use the peft section (peft.enabled, peft.r, peft.lora_alpha, peft.lora_dropout, "
                   "peft.target_modules)",
    "use_peft": "use peft.enabled",
    "lora_r": "use peft.r",
    "dataset_name": "use data.train (a file, or a hub dataset name with data.split)",
    "train_dataset": "use data.train",
    "eval_dataset": "use data.eval",
    "dataset_train_split": "use data.split",
    "warmup_ratio": "transformers 5 has no warmup_ratio: set train.warmup_steps to a fraction below 1 "
                    "(0.1 = 10% of the steps)",
    "logging_dir": "not a TrainingArguments field in transformers 5: TensorBoard writes under "
                   "<output_dir>/checkpoints/runs/, or where the TENSORBOARD_LOGGING_DIR environment variable says",
    "evaluation_strategy": "renamed: use train.eval_strategy",
    "no_cuda": "align trains on the GPU when one is visible; to use the CPU, hide the GPUs (CUDA_VISIBLE_DEVICES=)",
    "overwrite_output_dir": "not needed: a run writes into its output directory; `align train --resume` continues "
                            "from its last checkpoint",
    "per_gpu_train_batch_size": "use train.per_device_train_batch_size",
    "per_gpu_eval_batch_size": "use train.per_device_eval_batch_size",
    "push_to_hub_model_id": "use train.hub_model_id",
    "lora": "use the peft section (peft.enabled: true, peft.r, ...)",
    "args": "use the train section (TrainingArguments fields)",
    "training_args": "use the train section (TrainingArguments fields)",
}

# TrainingArguments fields that align sets itself (training_kwargs), with what to do instead.
ALIGN_SETS: dict[str, str] = {
    "output_dir": "a run goes to the recipe's top-level output_dir or `align train --output-dir` "
                  "(checkpoints under <output_dir>/checkpoints)",
    "logging_first_step": "align always logs the first step",
    "save_strategy": "align saves a checkpoint every train.save_steps steps; use train.save_steps and "
                     "train.save_total_limit",
    "use_cpu": "align trains on the GPU when one is visible; to use the CPU, hide the GPUs (CUDA_VISIBLE_DEVICES=)",
    "disable_tqdm": "align always shows progress bars",
    "remove_unused_columns": "align's trainers read every column of their batches (always false)",
    "activation_checkpointing": "use train.gradient_checkpointing",
    "gradient_checkpointing_kwargs": "align checkpoints activations with the model's defaults "
                                     "(train.gradient_checkpointing)",
    "activation_checkpointing_kwargs": "align checkpoints activations with the model's defaults "
                                       "(train.gradient_checkpointing)",
    "resume_from_checkpoint": "use `align train --resume`",
    "ddp_find_unused_parameters": "every trainable parameter gets a gradient in align's objectives (always false)",
}
# Set by align only where it applies (so a user may still set it): dataloader_pin_memory (false without a GPU).


def training_argument_fields() -> dict[str, Any]:
    """The installed ``transformers.TrainingArguments``'s fields and their types."""
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(TrainingArguments) if f.init}
