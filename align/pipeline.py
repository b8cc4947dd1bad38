"""One training run end to end: data → (SFT) → tokenize → reference cache → train → evaluate → summary.json."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from align.config import Recipe, ReferenceConfig, to_dict
from align.data.example import LoadReport
from align.data.loaders import load_examples, split_examples
from align.data.tokenize import TokenizedList, TruncationReport, tokenize_examples
from align.evaluation import evaluate_policy, evaluate_reward_model, ranking_report
from align.models.loading import (
    MODEL_INFO,
    align_home,
    load_model,
    load_reward_model,
    load_tokenizer,
    resolve_model_path,
)
from align.reference import CacheStats, ReferenceCache
from align.trainers import ALGORITHMS, ListDataset

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


def resolve_path(path: str, base: Path | None) -> str:
    """A relative data path as given if it exists from here, else relative to ``base`` (the recipe's project)."""
    p = Path(path)
    if p.is_absolute() or p.exists() or base is None or not (base / p).exists():
        return path
    return str(base / p)


def load_data(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, base: Path | None = None) -> PreparedData:
    """Load, split and tokenize the recipe's data."""
    d = recipe.data
    examples, report = load_examples(resolve_path(d.train, base), format=d.format, split=d.split, strict=d.strict,
                                     max_rows=d.max_rows)
    if d.eval:
        train_ex = examples
        eval_ex, eval_report = load_examples(resolve_path(d.eval, base), format=d.format, split=d.split,
                                             strict=d.strict)
        report.rows_read += eval_report.rows_read
        report.examples += eval_report.examples
        report.skipped.update(eval_report.skipped)
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
        raise ValueError(f"no usable training lists in {d.train} (skipped: {dict(report.skipped)})")
    return PreparedData(train, evl, report, trunc, train_ex)


def reference_logps(reference: torch.nn.Module, tokenizer, lists: list[TokenizedList], config: ReferenceConfig,
                    settings: dict[str, Any], progress: bool = True) -> tuple[ReferenceCache, CacheStats]:
    """Fill (or reuse) the cache of ``reference``'s log-probs of ``lists``; a PEFT model counts with its adapter
    disabled (its base model is the reference)."""
    root = Path(config.cache_dir) if config.cache_dir else align_home() / "reference"
    ctx = reference.disable_adapter() if hasattr(reference, "disable_adapter") else contextlib.nullcontext()
    with ctx:
        cache = ReferenceCache.for_model(root, reference, tokenizer, lists, shard_size=config.shard_size,
                                         settings=settings)
        stats = cache.ensure(reference, lists, batch_size=config.batch_size, pad_token_id=tokenizer.pad_token_id or 0,
                             on_corrupt=config.on_corrupt, progress=progress)
    return cache, stats


def build_reference(recipe: Recipe, policy: torch.nn.Module, tokenizer, lists: list[TokenizedList],
                    progress: bool = True) -> tuple[ReferenceCache, CacheStats]:
    """The recipe's reference cache for ``lists``.

    The reference is the policy's starting weights unless ``model.reference`` names another model; with PEFT it
    is the base model with the adapter disabled. A separately loaded reference is freed right after.
    """
    settings = {"max_prompt_length": recipe.data.max_prompt_length,
                "max_response_length": recipe.data.max_response_length, "truncation": recipe.data.truncation}
    if not recipe.model.reference:
        return reference_logps(policy, tokenizer, lists, recipe.reference, settings, progress)
    ref = load_model(recipe.model.reference, recipe.model.dtype).to(policy.device)
    try:
        return reference_logps(ref, tokenizer, lists, recipe.reference, settings, progress)
    finally:
        del ref
        gc.collect()


def prepare_policy(recipe: Recipe, base: Path | None = None, progress: bool = True):
    """Tokenizer, data, the starting weights (after the recipe's SFT stage) and the policy, ready to train:
    on the GPU if there is one, dropout off if asked, LoRA-wrapped if asked.

    Returns ``(tokenizer, data, start_model, policy, sft_seconds)``.
    """
    tokenizer = load_tokenizer(recipe.model.name_or_path)
    data = load_data(recipe, tokenizer, base)
    log.info("data: %d rows read, %d lists (%d train / %d eval), skipped %s", data.report.rows_read,
             data.report.examples, len(data.train), len(data.eval), dict(data.report.skipped) or "none")

    start_model, sft_seconds = resolve_model_path(recipe.model.name_or_path), 0.0
    if recipe.sft.enabled:
        t0 = time.perf_counter()
        start_model = run_sft(start_model, data.train_examples, recipe, progress)
        sft_seconds = time.perf_counter() - t0
    reward = ALGORITHMS[recipe.algorithm].model_kind == "reward"
    if reward:  # the scalar head starts random on top of the (SFT) language model, as in InstructGPT
        policy = load_reward_model(start_model, recipe.model.dtype, tokenizer)
    else:
        policy = load_model(start_model, recipe.model.dtype)
    if torch.cuda.is_available():
        policy = policy.cuda()
    if recipe.model.disable_dropout:
        _disable_dropout(policy)
    if recipe.peft.enabled:
        from peft import LoraConfig, get_peft_model

        p = recipe.peft
        policy = get_peft_model(policy, LoraConfig(r=p.r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                                                   target_modules=p.target_modules,
                                                   task_type="SEQ_CLS" if reward else "CAUSAL_LM"))

    return tokenizer, data, start_model, policy, sft_seconds


def training_arguments(recipe: Recipe, output_dir: Path) -> TrainingArguments:
    """``TrainingArguments`` from the recipe's ``train`` section (``extra`` passes through)."""
    t = recipe.train
    kw = {k: v for k, v in vars(t).items() if k != "extra"}
    kw.update(t.extra)
    kw.update(output_dir=str(output_dir / "checkpoints"), logging_first_step=True, save_strategy="steps",
              use_cpu=not torch.cuda.is_available(), disable_tqdm=False)
    return TrainingArguments(**kw)


def _disable_dropout(model: torch.nn.Module) -> None:
    # As TRL does by default: dropout makes the policy's log-probs noisy against a dropout-free reference.
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def peak_memory_mb() -> float:
    """Peak GPU memory allocated if on GPU, else the process's peak resident set size."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_training(recipe: Recipe, output_dir: str | Path | None = None, *, resume: bool = False,
                 recipe_path: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run ``recipe`` and write ``summary.json`` (and the trained model under ``output_dir/model``)."""
    t_start = time.perf_counter()
    out = Path(output_dir or recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json_text(to_dict(recipe)))
    base = Path(recipe_path).resolve().parent.parent if recipe_path else None
    algo = ALGORITHMS[recipe.algorithm]
    torch.manual_seed(recipe.train.seed)

    # TrainingArguments first: under `accelerate launch` it sets up the process group, so that the reference
    # cache below is split across ranks instead of computed by every rank.
    args = training_arguments(recipe, out)
    tokenizer, data, start_model, policy, sft_seconds = prepare_policy(recipe, base, progress)
    pad = tokenizer.pad_token_id or 0
    cache_stats, train_refs, eval_refs = CacheStats(), None, None
    if algo.needs_reference:
        all_lists = data.train + data.eval
        cache, cache_stats = build_reference(recipe, policy, tokenizer, all_lists, progress)
        refs = [cache.logps(i) for i in range(len(all_lists))]
        train_refs, eval_refs = refs[: len(data.train)], refs[len(data.train):]
        log.info("reference cache %s: %d hits, %d computed in %.1fs", cache_stats.key, cache_stats.hits,
                 cache_stats.computed, cache_stats.seconds)

    eval_before = None
    if recipe.eval.enabled and data.eval and algo.model_kind == "reward":
        eval_before = evaluate_reward_model(policy, data.eval, batch_size=recipe.eval.batch_size, pad_token_id=pad,
                                            progress=progress)  # the head is random: a chance-level baseline
    elif recipe.eval.enabled and data.eval:
        if eval_refs is not None and not recipe.model.reference:
            # The reference is the starting policy: its cached log-probs are the "before" scores, no new forward.
            eval_before = ranking_report(pad_lists(eval_refs), data.eval)
        else:
            eval_before = evaluate_policy(policy, data.eval, batch_size=recipe.eval.batch_size, pad_token_id=pad,
                                          progress=progress)

    trainer = algo.trainer(policy, args, recipe.loss, ListDataset(data.train, train_refs),
                           ListDataset(data.eval, eval_refs) if data.eval else None, processing_class=tokenizer)
    last = get_last_checkpoint(args.output_dir) if resume and Path(args.output_dir).is_dir() else None
    t_train = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    train_seconds = time.perf_counter() - t_train
    model_dir = out / "model"

    eval_after = None
    if recipe.eval.enabled and data.eval and algo.model_kind == "reward":
        eval_after = evaluate_reward_model(policy, data.eval, batch_size=recipe.eval.batch_size, pad_token_id=pad,
                                           progress=progress)
    elif recipe.eval.enabled and data.eval:
        ref_tensor = pad_lists(eval_refs) if eval_refs is not None else None
        eval_after = evaluate_policy(policy, data.eval, ref_logps=ref_tensor, batch_size=recipe.eval.batch_size,
                                     pad_token_id=pad, progress=progress)
    if recipe.peft.enabled:  # the adapter alone, and a merged model that `align eval --model` loads directly
        trainer.save_model(str(out / "adapter"))
        policy.merge_and_unload().save_pretrained(str(model_dir))
        tokenizer.save_pretrained(str(model_dir))
    else:
        trainer.save_model(str(model_dir))
    # What `align eval` needs to score this model the way it was trained: its kind, β, and the reference
    # (for a reward model: the language model it started from, the π_ref of the idealized ranking accuracy).
    info = {"kind": algo.model_kind, "algorithm": recipe.algorithm, "beta": getattr(recipe.loss, "beta", None),
            "reference": recipe.model.reference or start_model}
    (model_dir / MODEL_INFO).write_text(json_text(info))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {
        "algorithm": recipe.algorithm,
        "steps": result.global_step,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "eval": eval_after,
        "eval_before": eval_before,
        "reference_cache": {k: v for k, v in cache_stats.to_dict().items()
                            if k in ("key", "hits", "computed", "seconds", "corrupted_shards")},
        "tokens_per_second": round(trainer.tokens_per_second(), 1),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "data": data.to_dict(),
        "train_seconds": round(train_seconds, 2),
        "sft_seconds": round(sft_seconds, 2),
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "model_dir": str(model_dir),
        "start_model": start_model,
    }
    (out / "summary.json").write_text(json_text(summary))
    return summary


def json_text(obj: Any) -> str:
    """JSON for the machine-readable outputs: NaN and infinities (e.g. an accuracy over zero pairs) become null,
    so strict parsers read the file; anything else non-serialisable becomes its string."""

    def clean(o: Any) -> Any:
        if isinstance(o, float):
            return o if math.isfinite(o) else None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(obj), indent=1, default=str, allow_nan=False)


def pad_lists(refs: list[list[float]]) -> torch.Tensor:
    """Per-list values of different lengths → ``[n, K_max]`` with NaN on empty slots."""
    k = max((len(r) for r in refs), default=1)
    t = torch.full((len(refs), k), math.nan)
    for i, r in enumerate(refs):
        t[i, : len(r)] = torch.tensor(r)
    return t


def run_sft(start_model: str, examples: list, recipe: Recipe, progress: bool) -> str:
    """The recipe's SFT stage on the preferred responses (cached under ``$ALIGN_HOME/sft``)."""
    from align.sft import run_sft as _run

    d = recipe.data
    return _run(start_model, examples, recipe.sft, align_home() / "sft", dtype=recipe.model.dtype,
                max_length=d.max_prompt_length + d.max_response_length, seed=recipe.train.seed)
