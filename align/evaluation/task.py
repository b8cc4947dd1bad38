"""``align eval --scorer task``: score a policy on a built-in task by sampling from it and applying the task's true
rule (:mod:`align.tasks`), the measure every claim of ``docs/results.md`` is judged by.

For each prompt of ``--data task:NAME?...`` the model samples ``--samples`` completions; each is scored with the
task's graded ``score`` (mean over a prompt's samples, then over prompts, with a bootstrap CI over prompts) and its
exact ``correct`` rule (exact-match rate with its CI, and unbiased pass@k for every k up to the number of samples).
The sampling and scoring are :func:`align.evaluation.sampling.evaluate_by_sampling`, as GRPO and ``align iterate``
evaluate.
"""

from __future__ import annotations

import gc
from typing import Any

from align.data.loaders import split_examples
from align.data.prompts import load_prompts, tokenize_prompts
from align.errors import ConfigError, DataError
from align.evaluation.sampling import evaluate_by_sampling
from align.models.loading import check_finite_weights, load_model, load_tokenizer
from align.online.scoring import RewardSource
from align.rewards.spec import RewardSpec
from align.tasks import is_task_source, task_module

GRADED, EXACT = "score", "exact_match"  # the names of the two rules in the report
PASS_KS = (1, 2, 4, 8, 16, 32, 64)  # pass@k reported for each k up to the samples per prompt


def task_sources(source: str) -> list[RewardSource]:
    """The graded and exact reward sources of the task ``source`` names (``task:NAME?...``)."""
    if not is_task_source(source):
        raise ConfigError(f"--scorer task needs --data task:NAME?key=value&... (a built-in task), got {source!r}")
    module = task_module(source[len("task:"):].split("?", 1)[0]).__name__
    return [RewardSource(RewardSpec(function=f"{module}:reward_graded", name=GRADED)),
            RewardSource(RewardSpec(function=f"{module}:reward_exact", name=EXACT))]


def task_report(sampled: dict[str, Any]) -> dict[str, Any]:
    """The task measures of an :func:`evaluate_by_sampling` report: ``score``, ``exact_match`` (each with a
    ``*_ci``), ``pass_at_k`` of the exact rule."""
    return {"score": sampled["reward"][GRADED], "score_ci": sampled["reward_ci"].get(GRADED),
            "exact_match": sampled["reward"][EXACT], "exact_match_ci": sampled["reward_ci"].get(EXACT),
            "pass_at_k": sampled["pass_at_k"].get(EXACT, {})}


def run_task_eval(req: Any) -> dict[str, Any]:
    """Evaluate ``req.model`` (an :class:`~align.evaluation.run.EvalRequest` with ``scorer="task"``) on the task
    ``req.data``; returns the JSON-ready result."""
    import torch

    sources = task_sources(req.data)
    prompts, report = load_prompts(req.data, max_rows=req.max_rows)
    if req.split != "all":
        train, held = split_examples(prompts, req.eval_fraction)
        prompts = held if req.split == "eval" else train
    if not prompts:
        raise DataError(f"no prompts to evaluate in {req.data} (split {req.split})")
    tokenizer = load_tokenizer(req.model, key="--model")
    tokenized, truncated = tokenize_prompts(prompts, tokenizer, max_prompt_length=req.max_prompt_length)
    model = check_finite_weights(load_model(req.model, req.dtype, key="--model"), req.model)
    model = model.cuda() if torch.cuda.is_available() else model
    sampled = evaluate_by_sampling(model, tokenizer, tokenized, sources, n=req.samples,
                                   max_new_tokens=req.max_new_tokens, temperature=req.temperature,
                                   batch_size=req.batch_size, seed=req.seed, ks=PASS_KS, resamples=req.resamples,
                                   level=req.level)
    del model
    gc.collect()
    return {"model": req.model, "scorer": "task", "task": req.data, **task_report(sampled),
            "n_prompts": sampled["n_prompts"], "samples_per_prompt": req.samples, "temperature": req.temperature,
            "max_new_tokens": req.max_new_tokens, "mean_length": sampled["mean_length"],
            "truncated": sampled["truncated"], "seconds": sampled["seconds"],
            "confidence": {"level": req.level, "resamples": req.resamples, "unit": "prompt", "seed": req.seed},
            "data": {**report.to_dict(), "split": req.split, "prompts": len(prompts),
                     "prompts_truncated": truncated}}


def task_markdown(result: dict[str, Any]) -> str:
    """The table ``align eval --scorer task`` prints."""
    level = int(round(100 * result["confidence"]["level"]))

    def row(label: str, v: float | None, ci) -> str:
        return f"| {label} | {'—' if v is None else f'{v:.3f}'} | {f'[{ci[0]:.3f}, {ci[1]:.3f}]' if ci else '—'} |"

    lines = [f"scorer: task ({result['task']}): {result['n_prompts']} prompts × {result['samples_per_prompt']} "
             f"samples at temperature {result['temperature']:g}", "", f"| metric | value | {level}% CI |",
             "|---|---|---|", row("true score (graded)", result["score"], result["score_ci"]),
             row("exact match", result["exact_match"], result["exact_match_ci"])]
    lines += [row(f"pass@{k}", v, None) for k, v in result["pass_at_k"].items()]
    return "\n".join(lines)
