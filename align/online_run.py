"""One GRPO run end to end: prompts → (SFT on their answers) → policy → sampling evaluation → GRPO → sampling
evaluation → model, summary.json (with the reward curve), log_history.json and the model card. Orchestration
only, like :mod:`align.pipeline`; the parts both share are in :mod:`align.run_setup`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from align.config import Recipe
from align.data.example import LoadReport
from align.data.loaders import EVAL_COLUMNS_HINT, require_examples, split_examples
from align.data.prompts import TokenizedPrompt, load_prompts, prompts_from_rows, tokenize_prompts
from align.errors import ConfigError, DataError
from align.evaluation.sampling import evaluate_by_sampling, paired_gain
from align.models.loading import check_finite_weights, load_policy, load_tokenizer, resolve_model_path
from align.online.scoring import RewardFunction, load_sources, reward_sources, unscored_callback
from align.run_setup import RunContext, open_run, resolve_path
from align.trainers.grpo import GRPOLossConfig, GRPOTrainer, PromptDataset

log = logging.getLogger("align")


def load_prompt_data(recipe: Recipe, tokenizer: Any, search_dirs: Sequence[str | Path] = (), *,
                     train_rows: Iterable[Mapping[str, Any]] | None = None,
                     eval_rows: Iterable[Mapping[str, Any]] | None = None
                     ) -> tuple[list[TokenizedPrompt], list[TokenizedPrompt], LoadReport, int]:
    """Train and held-out prompts of the recipe (split by prompt, as the offline data), tokenized; and how many
    prompts were truncated. ``train_rows`` / ``eval_rows`` (a ``datasets.Dataset`` or a list of dicts) replace
    ``data.train`` / ``data.eval``."""
    d = recipe.data
    if train_rows is not None:
        prompts, report = prompts_from_rows(train_rows, strict=d.strict, columns=d.columns)
    else:
        source = d.train if d.train.startswith("task:") else resolve_path(d.train, search_dirs)
        prompts, report = load_prompts(source, split=d.split, strict=d.strict, max_rows=d.max_rows,
                                       columns=d.columns)
        require_examples(report, d.train, "data.train", d.columns)
    if eval_rows is not None:
        train = prompts
        held, eval_report = prompts_from_rows(eval_rows, strict=d.strict, columns=d.eval_columns)
        report.merge(eval_report)
    elif d.eval:
        train = prompts
        held, eval_report = load_prompts(d.eval if d.eval.startswith("task:") else resolve_path(d.eval, search_dirs),
                                         split=d.split, strict=d.strict, columns=d.eval_columns)
        require_examples(eval_report, d.eval, "data.eval", d.eval_columns, EVAL_COLUMNS_HINT)
        report.merge(eval_report)
    else:
        train, held = split_examples(prompts, d.eval_fraction)
    train, held = train[: d.max_train_examples], held[: d.max_eval_examples]
    if not train:
        raise DataError(f"no usable prompts in {d.train} (skipped: {dict(report.skipped)})")
    tr, n1 = tokenize_prompts(train, tokenizer, max_prompt_length=d.max_prompt_length)
    ev, n2 = tokenize_prompts(held, tokenizer, max_prompt_length=d.max_prompt_length)
    return tr, ev, report, n1 + n2


def completion_rows(prompts: Sequence[TokenizedPrompt]) -> list[dict]:
    """TRL prompt-completion rows from prompts that carry a reference ``completion`` (or, as the built-in tasks'
    rows do, an ``answer`` that is the completion)."""
    rows = []
    for p in prompts:
        text = p.example.columns.get("completion") or p.example.columns.get("answer")
        if isinstance(text, str) and text:
            prompt = p.example.prompt
            rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": text}]}
                        if isinstance(prompt, list) else {"prompt": prompt, "completion": text})
    return rows


def check_grpo_sizes(recipe: Recipe, model_config: Any, prompts: Sequence[TokenizedPrompt], *,
                     param_bytes: int = 4, available: int | None = None) -> None:
    """Refuse GRPO settings this model and machine cannot run, before any sampling (a ``ConfigError``, one line):

    - the longest prompt + ``loss.max_completion_length`` must fit the model's context
      (``max_position_embeddings`` or the like);
    - a lower bound of the memory a step takes must fit the memory available (free GPU memory on a GPU, else
      the system's available memory; ``available`` overrides it). Sampling holds, for each of
      min(``loss.generation_batch_size``, prompts a step) × G sequences, the KV cache of its length
      (2·layers·kv_heads·head_dim values a token) and a few float32 vocabulary-sized rows; the training forward
      (each prompt once, log-probs of the completion tokens through the chunked head) holds the activations of
      every token fed (at least 8·layers·hidden values a token) and three float32 blocks of at most 1,024
      completion tokens × the vocabulary. The model, its gradients and optimizer state come on top.
    """
    from align.models.hub import model_context_length

    c: GRPOLossConfig = recipe.loss
    longest = max((len(p.prompt_ids) for p in prompts), default=0)
    length = longest + c.max_completion_length
    found = model_context_length(model_config)
    if found is not None and length > found[0]:
        limit, name = found
        raise ConfigError(f"loss.max_completion_length={c.max_completion_length} + the longest prompt ({longest} "
                          f"tokens) = {length} exceeds the model's context ({name}={limit}); lower "
                          f"loss.max_completion_length to at most {max(limit - longest, 0)}")
    get = model_config.get if isinstance(model_config, dict) else lambda k, d=None: getattr(model_config, k, d)
    layers, hidden, vocab = get("num_hidden_layers", 0) or 0, get("hidden_size", 0) or 0, get("vocab_size", 0) or 0
    heads = get("num_attention_heads", 0) or 0
    kv_heads = get("num_key_value_heads", None) or heads
    head_dim = get("head_dim", None) or (hidden // heads if heads else 0)
    kv = 2 * layers * kv_heads * head_dim * param_bytes
    per_step = recipe.train.per_device_train_batch_size
    sampling = min(c.generation_batch_size, per_step) * c.num_generations * (length * kv + 3 * vocab * 4)
    fed = per_step * (longest + c.num_generations * c.max_completion_length)
    scored = per_step * c.num_generations * c.max_completion_length
    training = fed * 8 * layers * hidden * param_bytes + 3 * min(scored, 1024) * vocab * 4
    need = max(sampling, training)
    available = _available_memory() if available is None else available
    if available is not None and need > available:
        raise ConfigError(f"loss.num_generations={c.num_generations} × {per_step} prompts a step × {length} tokens "
                          f"(longest prompt + loss.max_completion_length) needs at least {need / 2**30:.1f} GiB "
                          f"(KV cache and logits), more than the {available / 2**30:.1f} GiB available; lower "
                          "loss.num_generations, loss.max_completion_length or train.per_device_train_batch_size")


def _available_memory() -> int | None:
    """Free memory on the current GPU, else the system's available memory (Linux), in bytes; None if unknown."""
    if torch.cuda.is_available():
        return int(torch.cuda.mem_get_info()[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_grpo(recipe: Recipe, output_dir: str | Path | None = None, *, resume: bool = False,
             overwrite: bool = False, search_dirs: Sequence[str | Path] = (), progress: bool = True,
             command: str | None = None, reward_funcs: Sequence[RewardFunction | Any] | None = None,
             reward_weights: Sequence[float] | None = None, train_dataset: Iterable[Mapping[str, Any]] | None = None,
             eval_dataset: Iterable[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Run a GRPO recipe; the main process writes the outputs (see the module docstring).

    From Python, as TRL's ``GRPOTrainer``: ``reward_funcs`` (callables with TRL's reward-function signature,
    ``module:function`` strings, reward-model paths; see :func:`align.online.scoring.reward_sources`) with
    ``reward_weights`` replace ``loss.rewards``; ``train_dataset`` / ``eval_dataset`` (a ``datasets.Dataset`` or
    a list of dicts with a ``prompt`` column) replace ``data.train`` / ``data.eval``."""
    if reward_funcs is None and not recipe.loss.rewards:  # before anything loads
        raise ConfigError("loss.rewards: give at least one reward (function: module:function, or model: path), "
                          "or pass reward_funcs to align.train")
    return open_run(recipe, output_dir,
                    lambda ctx: _run(ctx, search_dirs, reward_funcs, reward_weights, train_dataset, eval_dataset),
                    finished=lambda summary: summary, resume=resume, overwrite=overwrite, progress=progress,
                    command=command)


def _run(ctx: RunContext, search_dirs: Sequence[str | Path], reward_funcs: Sequence[RewardFunction | Any] | None,
         reward_weights: Sequence[float] | None, train_dataset: Iterable[Mapping[str, Any]] | None,
         eval_dataset: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    """The GRPO run of :func:`run_grpo` in its claimed output directory."""
    recipe, args = ctx.recipe, ctx.args
    c: GRPOLossConfig = recipe.loss
    tokenizer = load_tokenizer(recipe.model.name_or_path)
    train, held, report, truncated = load_prompt_data(recipe, tokenizer, search_dirs, train_rows=train_dataset,
                                                      eval_rows=eval_dataset)
    log.info("prompts: %d train / %d held out, skipped %s", len(train), len(held), dict(report.skipped) or "none")
    start_model = ctx.sft(resolve_model_path(recipe.model.name_or_path), lambda: completion_rows(train))
    policy = load_policy(start_model, recipe.model.dtype)
    check_finite_weights(policy, f"model {start_model}", "GRPO cannot sample from it")
    check_grpo_sizes(recipe, policy.config, train + held, param_bytes=next(policy.parameters()).element_size())
    policy = ctx.ready(policy)
    ctx.record_settings()
    sources = (reward_sources(reward_funcs, reward_weights, search_dirs=list(search_dirs)[:1],  # the recipe's folder
                              device=args.device)
               if reward_funcs is not None else load_sources(c.rewards, device=args.device))
    eval_kw = {"n": c.num_generations, "max_new_tokens": c.max_completion_length,
               "temperature": c.temperature, "top_p": c.top_p, "batch_size": c.generation_batch_size,
               "seed": recipe.train.seed}
    do_eval = recipe.eval.enabled and bool(held)
    eval_before = evaluate_by_sampling(policy, tokenizer, held, sources, **eval_kw) if do_eval else None

    trainer = GRPOTrainer(policy, args, c, PromptDataset(train), None, processing_class=tokenizer, rewards=sources,
                          run_dir=ctx.out,
                          on_non_finite=recipe.train.on_non_finite)
    data_report = {**report.to_dict(), "train_prompts": len(train), "eval_prompts": len(held),
                   "prompts_truncated": truncated}
    ctx.attach(trainer, {"data": data_report})
    unscored = unscored_callback(sources[0].tally)  # reward/unscored in the logs: samples no reward scored
    trainer.callback_handler.callbacks.insert(0, unscored)  # first, so the trackers' callbacks see it too
    result, train_seconds = ctx.train(trainer)
    eval_after = evaluate_by_sampling(trainer.model, tokenizer, held, sources, **eval_kw) if do_eval else None
    model_dir = ctx.save(trainer, start_model)
    history = trainer.state.log_history
    curve = [h["reward/mean"] for h in history if "reward/mean" in h]
    steps = max(result.global_step, 1)
    summary = {
        **ctx.summary(trainer, result, train_seconds, model_dir, start_model),
        "rewards": [s.describe() for s in sources],  # also those given in Python (reward_funcs)
        "reward_mean_first": curve[0] if curve else None,
        "reward_mean_last": curve[-1] if curve else None,
        "reward_curve": curve,
        "eval": eval_after,
        "eval_before": eval_before,
        # held-out change per reward, with a bootstrap interval over prompts of the paired differences
        "eval_gain": paired_gain(eval_before, eval_after) if eval_before and eval_after else None,
        # samples are scored live (β > 0): their reference values are computed, not cached
        "reference_cache": (trainer.live_reference.stats.to_dict() if trainer.live_reference is not None
                            else {"key": "", "hits": 0, "computed": 0, "seconds": 0.0, "corrupted_shards": 0}),
        "timing": {"generation_seconds_per_step": trainer.generation_seconds / steps,
                   "reference_seconds_per_step": trainer.reference_seconds / steps,
                   "training_seconds_per_step": max(train_seconds - trainer.generation_seconds
                                                    - trainer.reference_seconds, 0.0) / steps,
                   "generation_fraction": trainer.generation_seconds / max(train_seconds, 1e-9)},
        "data": data_report,
        "unscored_samples": unscored.total,  # sampled in training, scored by no reward (None or NaN from each)
    }
    return ctx.finish(trainer, model_dir, summary)
