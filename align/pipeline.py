"""One training run end to end: data → (SFT) → policy → trainer (reference filled before its first step) →
evaluation → model and summary.json. Orchestration only: the data, reference, evaluation and output code lives in
their own modules.

Under ``accelerate launch`` every rank runs this function; the reference pass and the evaluations are split across
ranks, and only the main process writes files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from align.config import Recipe
from align.data.collate import pad_values
from align.data.example import LoadReport
from align.data.loaders import EVAL_COLUMNS_HINT, load_examples, require_examples, split_examples
from align.data.tokenize import TokenizedList, TruncationReport, tokenize_examples
from align.distributed import is_zero3_partitioned
from align.errors import ConfigError, DataError
from align.evaluation import evaluate_policy, evaluate_reward_model, ranking_report
from align.models.loading import (
    load_model,
    load_policy,
    load_reward_model,
    load_tokenizer,
    resolve_model_path,
)
from align.reference import CachedReference, CacheStats, reference_for
from align.run_setup import RunContext, open_run, ready_model, resolve_path, sft_stage
from align.trainers import ALGORITHMS, ListDataset, PreferenceTrainer

log = logging.getLogger("align")


@dataclass
class PreparedData:
    """Tokenized train/eval lists and what loading and tokenizing them skipped or cut."""

    train: list[TokenizedList]
    eval: list[TokenizedList]
    report: LoadReport
    truncation: TruncationReport
    train_examples: list  # RankedExample, for the SFT stage

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "train_lists": len(self.train), "eval_lists": len(self.eval),
                "truncation": self.truncation.to_dict()}


def load_data(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, search_dirs: Sequence[str | Path] = ()
              ) -> PreparedData:
    """Load, split and tokenize the recipe's data (relative paths resolved against ``search_dirs``)."""
    d = recipe.data
    examples, report = load_examples(resolve_path(d.train, search_dirs), format=d.format, split=d.split,
                                     strict=d.strict, max_rows=d.max_rows, columns=d.columns)
    require_examples(report, d.train, "data.train", d.columns)
    if d.eval:
        train_ex = examples
        eval_ex, eval_report = load_examples(resolve_path(d.eval, search_dirs), format=d.format, split=d.split,
                                             strict=d.strict, columns=d.eval_columns)
        require_examples(eval_report, d.eval, "data.eval", d.eval_columns, EVAL_COLUMNS_HINT)
        report.merge(eval_report)
    else:
        train_ex, eval_ex = split_examples(examples, d.eval_fraction)
    train_ex, eval_ex = train_ex[: d.max_train_examples], eval_ex[: d.max_eval_examples]
    kw = {"max_prompt_length": d.max_prompt_length, "max_response_length": d.max_response_length,
          "truncation": d.truncation}
    train, trunc = tokenize_examples(train_ex, tokenizer, **kw)
    evl, trunc_eval = tokenize_examples(eval_ex, tokenizer, **kw)
    trunc.prompts_truncated += trunc_eval.prompts_truncated
    trunc.responses_truncated += trunc_eval.responses_truncated
    trunc.dropped.update(trunc_eval.dropped)
    if not train:
        raise DataError(f"no usable training lists in {d.train} (skipped: {dict(report.skipped)})")
    return PreparedData(train, evl, report, trunc, train_ex)


def prepare_policy(recipe: Recipe, search_dirs: Sequence[str | Path] = (), progress: bool = True,
                   device: torch.device | None = None, policy: torch.nn.Module | None = None):
    """Tokenizer, data, the starting weights (after the recipe's SFT stage) and the policy, ready to train
    (:func:`~align.run_setup.ready_model`: LoRA if asked, on ``device``, dropout off if asked). A policy that
    starts from an existing PEFT adapter keeps training it and holds a frozen copy as its reference. ``policy``: a
    causal LM already in memory with ``model.name_or_path``'s weights (``align iterate``'s current policy), used
    instead of loading them; the recipe must then have no SFT stage.

    Returns ``(tokenizer, data, start_model, policy, sft_seconds)``.
    """
    tokenizer = load_tokenizer(recipe.model.name_or_path)
    data = load_data(recipe, tokenizer, search_dirs)
    log.info("data: %d rows read, %d lists (%d train / %d eval), skipped %s", data.report.rows_read,
             data.report.examples, len(data.train), len(data.eval), dict(data.report.skipped) or "none")
    start_model = resolve_model_path(recipe.model.name_or_path)
    reward = ALGORITHMS[recipe.algorithm].model_kind == "reward"
    if policy is not None:
        if recipe.sft.enabled or reward:
            raise ConfigError("a policy passed in memory trains as it is: no SFT stage, not a reward model")
        return tokenizer, data, start_model, ready_model(policy, recipe, device), 0.0
    from align.sft import sft_rows

    start_model, sft_seconds = sft_stage(start_model, lambda: sft_rows(data.train_examples), recipe)
    if reward:  # a random scalar head on the (SFT) LM
        policy = ready_model(load_reward_model(start_model, recipe.model.dtype, tokenizer), recipe, device, "SEQ_CLS")
    else:
        policy = load_policy(start_model, recipe.model.dtype)
        if hasattr(policy, "peft_config") and recipe.peft.enabled:
            log.info("%s is a PEFT adapter: training it further (the peft section's shape is not used)", start_model)
        policy = ready_model(policy, recipe, device)
    return tokenizer, data, start_model, policy, sft_seconds


def recipe_reference(recipe: Recipe, policy: torch.nn.Module, tokenizer, data: PreparedData, progress: bool = True
                     ) -> CachedReference | None:
    """The run's reference, or None if the algorithm needs none.

    The default is the policy's starting weights (computed on demand before the first step, inside the engine).
    A separate ``model.reference`` is loaded, fills the cache for this run's lists at once and is freed.
    """
    if not ALGORITHMS[recipe.algorithm].needs_reference:
        return None
    r = recipe.reference
    kw = {"cache_dir": r.cache_dir, "batch_size": r.batch_size, "shard_size": r.shard_size,
          "on_corrupt": r.on_corrupt, "source": Path(recipe.data.train).name, "progress": progress,
          "packing": recipe.train.packing, "audit_samples": r.audit_samples}
    if not recipe.model.reference:
        return reference_for(policy, tokenizer, model_name=recipe.model.name_or_path, **kw)
    ref = load_model(recipe.model.reference, recipe.model.dtype, key="model.reference")
    if not is_zero3_partitioned(ref):
        ref = ref.to(next(policy.parameters()).device)
    ref.eval()
    reference = reference_for(ref, tokenizer, model_name=recipe.model.reference, **kw)
    reference.prefetch(data.train + data.eval)
    reference.live = None  # everything this run needs is cached; the separate reference is not kept
    del ref
    return reference


def run_training(recipe: Recipe, output_dir: str | Path | None = None, *, resume: bool = False,
                 overwrite: bool = False, search_dirs: Sequence[str | Path] = (), progress: bool = True,
                 command: str | None = None) -> dict[str, Any]:
    """Run ``recipe``; the main process writes ``summary.json``, ``log_history.json``, ``recipe.json`` and the
    model (with its card) under ``output_dir/model``. Relative data paths are looked up in ``search_dirs`` (then
    the working directory). ``command`` is the command line that reproduces the run, for the model card."""
    if ALGORITHMS[recipe.algorithm].online:
        from align.online_run import run_grpo

        return run_grpo(recipe, output_dir, resume=resume, overwrite=overwrite, search_dirs=search_dirs,
                        progress=progress, command=command)
    return train_offline(recipe, output_dir, resume=resume, overwrite=overwrite, search_dirs=search_dirs,
                         progress=progress, command=command)[0]


def train_offline(recipe: Recipe, output_dir: str | Path | None = None, *, policy: torch.nn.Module | None = None,
                  resume: bool = False, overwrite: bool = False, search_dirs: Sequence[str | Path] = (),
                  progress: bool = True, command: str | None = None
                  ) -> tuple[dict[str, Any], torch.nn.Module | None]:
    """:func:`run_training` of an offline algorithm, optionally on a ``policy`` already in memory (see
    :func:`prepare_policy`). Returns the summary and the trained model, ready to sample from, when it can be used
    as it is (a plain model, not a DeepSpeed engine's nor a PEFT wrapper); else None (load ``model_dir``)."""
    return open_run(recipe, output_dir, lambda ctx: _train(ctx, search_dirs, policy),
                    finished=lambda summary: (summary, None), resume=resume, overwrite=overwrite, progress=progress,
                    command=command)


def _train(ctx: RunContext, search_dirs: Sequence[str | Path], policy: torch.nn.Module | None
           ) -> tuple[dict[str, Any], torch.nn.Module | None]:
    """The offline run of :func:`train_offline` in its claimed output directory."""
    recipe, progress = ctx.recipe, ctx.progress
    algo = ALGORITHMS[recipe.algorithm]
    tokenizer, data, start_model, policy, ctx.sft_seconds = prepare_policy(recipe, search_dirs, progress,
                                                                           ctx.args.device, policy)
    ctx.record_settings()
    pad = tokenizer.pad_token_id or 0
    eval_kw = {"batch_size": recipe.eval.batch_size, "pad_token_id": pad, "progress": progress}
    reference = recipe_reference(recipe, policy, tokenizer, data, progress)

    do_eval = recipe.eval.enabled and bool(data.eval)
    eval_before = None
    if do_eval and algo.model_kind == "reward":  # the head is random: a chance-level baseline
        eval_before = evaluate_reward_model(policy, data.eval, **eval_kw)
    elif do_eval and (reference is None or recipe.model.reference):
        eval_before = evaluate_policy(policy, data.eval, packing=recipe.train.packing, **eval_kw)

    trainer: PreferenceTrainer = algo.trainer(
        policy, ctx.args, recipe.loss, ListDataset(data.train), ListDataset(data.eval) if data.eval else None,
        processing_class=tokenizer, reference=reference, reference_is_policy=not recipe.model.reference,
        on_non_finite=recipe.train.on_non_finite, packing=recipe.train.packing)
    ctx.attach(trainer, {"data": data.to_dict(), "reference_cache": lambda: trainer.reference_stats.to_dict()})
    result, train_seconds = ctx.train(trainer)
    eval_refs = trainer.eval_dataset.ref_logps if trainer.eval_dataset is not None else None
    if do_eval and eval_before is None and eval_refs is not None:
        # The reference is the starting policy: its cached log-probs are the "before" scores, no new forward.
        eval_before = ranking_report(pad_values(eval_refs), data.eval)

    engine = trainer.is_deepspeed_enabled
    eval_after = None
    if do_eval and algo.model_kind == "reward":
        eval_after = evaluate_reward_model(trainer.model, data.eval, engine_managed=engine, **eval_kw)
    elif do_eval:
        eval_after = evaluate_policy(trainer.model, data.eval, ref_logps=None if eval_refs is None else
                                     pad_values(eval_refs), engine_managed=engine, packing=recipe.train.packing,
                                     **eval_kw)
    model_dir = ctx.save(trainer, start_model)
    summary = {
        **ctx.summary(trainer, result, train_seconds, model_dir, start_model),
        "eval": eval_after,
        "eval_before": eval_before,
        "reference_cache": (reference.stats if reference is not None else CacheStats()).to_dict(),
        "reference_check": trainer.reference_check,
        "data": data.to_dict(),
        "packing": {"packed": trainer.packing.packed, "chunked_head": trainer.packing.packed and
                    trainer.packing.chunked, "reason": trainer.packing.reason},
    }
    ctx.finish(trainer, model_dir, summary)
    trained = trainer.model
    reusable = not engine and not hasattr(trained, "peft_config")
    return summary, (trained if reusable else None)
