"""The parts every kind of run shares (one offline training run, a GRPO run, ``align iterate``): finding a data
file, LoRA and dropout on the policy, the ``TrainingArguments``, the SFT stage, saving the trained model, peak
memory. Below the run drivers (:mod:`align.pipeline`, :mod:`align.online_run`, :mod:`align.iterate`), which import
from here and never from each other's internals.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import TrainingArguments

from align.config import Recipe, training_kwargs
from align.data.example import DataError
from align.distributed import barrier, is_main
from align.io import write_json
from align.models.loading import MODEL_INFO, REFERENCE_ADAPTER, align_home
from align.trainers import ALGORITHMS, PreferenceTrainer


def resolve_path(path: str, search_dirs: Sequence[str | Path] = ()) -> str:
    """A relative data path, looked up in ``search_dirs`` in order (the recipe's folder, then the working
    directory); a hub name or an absolute path is returned as it is. A path found nowhere is an error that says
    where it looked."""
    if not str(path).strip():  # Path("") is the working directory: never read it by accident
        raise DataError("no data given: set data.train (a file, a directory, a hub dataset name or task:NAME?...)")
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    for base in search_dirs:
        if (Path(base) / p).exists():
            return str(Path(base) / p)
    if p.exists():
        return str(p)
    if p.suffix or path.startswith((".", "~")) or path.count("/") > 1:  # a file path, not a hub name
        tried = [str((Path(b) / p).resolve()) for b in search_dirs] or [str(p.resolve())]
        raise DataError(f"no such file: {path} (looked in {', '.join(dict.fromkeys(tried))})")
    return path


def maybe_lora(model: torch.nn.Module, recipe: Recipe, task: str) -> torch.nn.Module:
    """``model`` wrapped in a LoRA adapter (PEFT ``task`` type ``CAUSAL_LM`` or ``SEQ_CLS``) if the recipe's
    ``peft`` section is enabled, else ``model`` itself."""
    if not recipe.peft.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    p = recipe.peft
    return get_peft_model(model, LoraConfig(r=p.r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                                            target_modules=p.target_modules, task_type=task))


def training_arguments(recipe: Recipe, output_dir: Path) -> TrainingArguments:
    """``TrainingArguments`` from the recipe's ``train`` section (``extra`` passes through)."""
    return TrainingArguments(**training_kwargs(recipe, output_dir))


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout probability of ``model`` set to 0."""
    # As TRL does by default: dropout makes the policy's log-probs noisy against a dropout-free reference.
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def peak_memory_mb() -> float:
    """Peak GPU memory allocated if on GPU, else the process's peak resident set size."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_trained(trainer: PreferenceTrainer, recipe: Recipe, out: Path, start_model: str) -> Path:
    """Save the trained model to ``out/model`` (every rank takes part: ZeRO-3 gathers the weights; the main
    process writes). A PEFT run also keeps its adapter in ``out/adapter`` and writes a merged model that
    ``align eval --model`` loads directly. ``model/align_model.json`` records the kind, β and the reference."""
    model_dir = out / "model"
    policy = trainer.model
    if hasattr(policy, "peft_config"):
        if REFERENCE_ADAPTER in policy.peft_config:
            policy.delete_adapter(REFERENCE_ADAPTER)  # the frozen reference copy is not part of the result
        trainer.save_model(str(out / "adapter"))
        if is_main():
            policy.merge_and_unload().save_pretrained(str(model_dir))
            trainer.processing_class.save_pretrained(str(model_dir))
    else:
        trainer.save_model(str(model_dir))
    if is_main():
        algo = ALGORITHMS[recipe.algorithm]
        # What `align eval` needs to score this model the way it was trained: its kind, β, and the reference
        # (for a reward model: the language model it started from, the π_ref of the idealized ranking accuracy).
        # The data settings let `align eval --split eval` re-read the run's own held-out sequences.
        d = recipe.data
        info = {"kind": algo.model_kind, "algorithm": recipe.algorithm, "beta": getattr(recipe.loss, "beta", None),
                "reference": recipe.model.reference or start_model,
                "data": {"max_prompt_length": d.max_prompt_length, "max_response_length": d.max_response_length,
                         "eval_fraction": d.eval_fraction}}
        write_json(model_dir / MODEL_INFO, info)
    barrier()
    return model_dir


def run_sft(start_model: str, rows: list[dict], recipe: Recipe) -> str:
    """The recipe's SFT stage on TRL prompt-completion ``rows`` (cached under ``$ALIGN_HOME/sft``)."""
    from align.sft import run_sft as _run

    d = recipe.data
    return _run(start_model, rows, recipe.sft, align_home() / "sft", dtype=recipe.model.dtype,
                max_length=d.max_prompt_length + d.max_response_length, seed=recipe.train.seed)
