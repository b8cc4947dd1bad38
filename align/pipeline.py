"""One training run end to end: data → (SFT) → policy → trainer (reference filled before its first step) →
evaluation → model and summary.json. Orchestration only: the data, reference, evaluation and output code lives in
their own modules.

Under ``accelerate launch`` every rank runs this function; the reference pass and the evaluations are split across
ranks, and only the main process writes files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from align.config import Recipe, preflight, to_dict
from align.data.collate import pad_values
from align.data.example import LoadReport
from align.data.loaders import EVAL_COLUMNS_HINT, load_examples, require_examples, split_examples
from align.data.tokenize import TokenizedList, TruncationReport, tokenize_examples
from align.distributed import barrier, is_main, is_zero3_partitioned
from align.errors import ConfigError, DataError
from align.evaluation import evaluate_policy, evaluate_reward_model, ranking_report
from align.io import write_json
from align.modelcard import write_model_card
from align.models.loading import (
    is_adapter,
    load_model,
    load_policy,
    load_reward_model,
    load_tokenizer,
    resolve_model_path,
)
from align.reference import CachedReference, CacheStats, reference_for
from align.run_setup import disable_dropout, maybe_lora, peak_memory_mb, resolve_path, run_sft, save_trained, training_arguments
from align.runstate import RunState, check_no_links, claim_output_dir, prepare_output_dir
from align.tracking import add_run_info, check_report_to
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
    """Tokenizer, data, the starting weights (after the recipe's SFT stage) and the policy, ready to train: on
    ``device`` (unless ZeRO-3 placed it), dropout off if asked, LoRA-wrapped if asked. A policy that starts from
    an existing PEFT adapter keeps training it and holds a frozen copy as its reference. ``policy``: a causal LM
    already in memory with ``model.name_or_path``'s weights (``align iterate``'s current policy), used instead of
    loading them; the recipe must then have no SFT stage.

    Returns ``(tokenizer, data, start_model, policy, sft_seconds)``.
    """
    tokenizer = load_tokenizer(recipe.model.name_or_path)
    data = load_data(recipe, tokenizer, search_dirs)
    log.info("data: %d rows read, %d lists (%d train / %d eval), skipped %s", data.report.rows_read,
             data.report.examples, len(data.train), len(data.eval), dict(data.report.skipped) or "none")
    start_model, sft_seconds = resolve_model_path(recipe.model.name_or_path), 0.0
    if policy is not None:
        if recipe.sft.enabled or ALGORITHMS[recipe.algorithm].model_kind == "reward":
            raise ConfigError("a policy passed in memory trains as it is: no SFT stage, not a reward model")
        if not is_zero3_partitioned(policy) and device is not None:
            policy = policy.to(device)
        if recipe.model.disable_dropout:
            disable_dropout(policy)
        if not hasattr(policy, "peft_config"):  # an adapter the policy started from keeps training
            policy = maybe_lora(policy, recipe, "CAUSAL_LM")
        return tokenizer, data, start_model, policy, sft_seconds
    if recipe.sft.enabled and is_adapter(start_model):
        raise ConfigError(f"model.name_or_path {start_model} is a PEFT adapter: an SFT stage on top of it is not "
                         "supported; set sft.enabled=false")
    if recipe.sft.enabled:
        t0 = time.perf_counter()
        from align.sft import sft_rows

        start_model = run_sft(start_model, sft_rows(data.train_examples), recipe)
        sft_seconds = time.perf_counter() - t0
    if ALGORITHMS[recipe.algorithm].model_kind == "reward":  # a random scalar head on the (SFT) LM
        policy = load_reward_model(start_model, recipe.model.dtype, tokenizer)
        policy = maybe_lora(policy, recipe, "SEQ_CLS")
    else:
        policy = load_policy(start_model, recipe.model.dtype)
        if not hasattr(policy, "peft_config"):
            policy = maybe_lora(policy, recipe, "CAUSAL_LM")
        elif recipe.peft.enabled:
            log.info("%s is a PEFT adapter: training it further (the peft section's shape is not used)", start_model)
    if device is not None and not is_zero3_partitioned(policy):
        policy = policy.to(device)
    if recipe.model.disable_dropout:
        disable_dropout(policy)
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
    check_report_to(recipe.train.report_to)  # a missing tracker or a bad device setting fails before any load
    preflight(recipe)
    out = Path(output_dir or recipe.output_dir)
    with claim_output_dir(out, command):  # one run at a time in `out`; refused: /, ~, a project root, links
        recipe_dict = to_dict(recipe)
        run_state = prepare_output_dir(out, recipe_dict, resume=resume, overwrite=overwrite)
        if run_state.finished is not None:  # --resume of a finished run: nothing to do, the model is untouched
            return run_state.finished, None
        return _train(recipe, out, recipe_dict, run_state, search_dirs, progress, command, policy)


def _train(recipe: Recipe, out: Path, recipe_dict: dict[str, Any], run_state: RunState,
           search_dirs: Sequence[str | Path], progress: bool, command: str | None,
           policy: torch.nn.Module | None = None) -> tuple[dict[str, Any], torch.nn.Module | None]:
    """The offline run of :func:`train_offline`, once its output directory is claimed and checked."""
    t_start = time.perf_counter()
    algo = ALGORITHMS[recipe.algorithm]
    torch.manual_seed(recipe.train.seed)
    # TrainingArguments first: under `accelerate launch` it sets up the process group (and ZeRO-3 partitioning
    # at model load), so everything below runs split across ranks instead of once per rank.
    args = training_arguments(recipe, out)
    args.disable_tqdm = not progress
    tokenizer, data, start_model, policy, sft_seconds = prepare_policy(recipe, search_dirs, progress, args.device,
                                                                       policy)
    if is_main():
        write_json(out / "recipe.json", recipe_dict)  # the settings in effect (see prepare_output_dir)
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
        policy, args, recipe.loss, ListDataset(data.train), ListDataset(data.eval) if data.eval else None,
        processing_class=tokenizer, reference=reference, reference_is_policy=not recipe.model.reference,
        on_non_finite=recipe.train.on_non_finite, packing=recipe.train.packing)
    if not progress:  # quiet means quiet: no progress bar, no printed log lines (trackers still get them)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    add_run_info(trainer, {"recipe": to_dict(recipe), "data": data.to_dict(),
                           "reference_cache": lambda: trainer.reference_stats.to_dict()})
    last = run_state.resume_from
    t_train = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    train_seconds = time.perf_counter() - t_train
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
    check_no_links(out)  # nothing links out of the output directory now either
    model_dir = save_trained(trainer, recipe, out, start_model)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {
        "algorithm": recipe.algorithm,
        "steps": result.global_step,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": result.training_loss,  # over every step of this train() call, logged or not
        "eval": eval_after,
        "eval_before": eval_before,
        "reference_cache": (reference.stats if reference is not None else CacheStats()).to_dict(),
        "reference_check": trainer.reference_check,
        "tokens_per_second": round(trainer.tokens_per_second(), 1),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "data": data.to_dict(),
        "train_seconds": round(train_seconds, 2),
        "sft_seconds": round(sft_seconds, 2),
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "model_dir": str(model_dir),
        "start_model": start_model,
        "world_size": args.world_size,
        "command": command,
        "resume": run_state.to_dict(),
        "non_finite_steps": trainer.guard.events,
        **{"padding_fraction": None, "tokens_per_step": None, **trainer.token_stats("run")},
        "packing": {"packed": trainer.packing.packed, "chunked_head": trainer.packing.packed and
                    trainer.packing.chunked, "reason": trainer.packing.reason},
    }
    if is_main():
        write_json(out / "summary.json", summary)
        write_json(out / "log_history.json", trainer.state.log_history)
        write_model_card(model_dir, summary, to_dict(recipe), command)
    barrier()
    trained = trainer.model
    reusable = not engine and not hasattr(trained, "peft_config")
    return summary, (trained if reusable else None)


