"""Markdown sections that describe a finished run from its ``summary.json`` and ``recipe.json``.

Shared by the model card (:mod:`align.modelcard`) and ``align report`` (:mod:`align.run_report`). Every function takes
the plain dicts a run writes and tolerates missing keys: reward models (no reference), runs without evaluation,
Cringe (no reference, no implicit reward), GRPO runs (reward curves instead of ranking metrics).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml

SCORER_LABELS: dict[str, str] = {
    "implicit": "implicit reward log π − log π_ref",
    "logprob": "summed log-prob",
    "logprob_mean": "mean log-prob per token",
    "implicit_mean": "implicit reward per token (log π − log π_ref) / |y|",
    "reward-model": "reward model score",
}
METRIC_LABELS: dict[str, str] = {
    "pairwise_accuracy": "pairwise accuracy",
    "list_exact_match": "list exact match",
    "top1_accuracy": "top-1 accuracy",
    "kendall_tau": "Kendall τ",
    "ndcg": "NDCG",
}
LIST_METRICS: tuple[str, ...] = ("list_exact_match", "top1_accuracy", "kendall_tau", "ndcg")


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table: ``—`` for missing or non-finite, fixed decimals for floats."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def fmt_ci(value: Any, ci: Any) -> str:
    """``0.620 [0.550, 0.690]``, or the value alone when there is no interval."""
    if value is None:
        return "—"
    if ci and len(ci) == 2 and ci[0] is not None and ci[1] is not None:
        return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"
    return fmt(value)


def ci_level(summary: dict[str, Any]) -> int:
    """The CI level of the run's evaluation in percent (95 unless the evaluation recorded another)."""
    ev = summary.get("eval") or summary.get("eval_before") or {}
    return int(round(100 * ((ev.get("confidence") or {}).get("level") or 0.95)))


def is_ranked(summary: dict[str, Any]) -> bool:
    """Whether the held-out data has lists longer than pairs (then list metrics are worth a row)."""
    ev = summary.get("eval") or summary.get("eval_before") or {}
    n_pairs, n_lists = ev.get("n_pairs"), ev.get("n_lists")
    return bool(n_pairs and n_lists and n_pairs > n_lists)


def eval_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (scorer, metric) of the held-out evaluation: ``scorer``, ``metric``, ``before``,
    ``before_ci``, ``after``, ``after_ci`` (``None`` where not measured). Pairwise accuracy for every scorer;
    list metrics too when the lists are longer than pairs."""
    before = (summary.get("eval_before") or {}).get("by_scorer") or {}
    after = (summary.get("eval") or {}).get("by_scorer") or {}
    metrics = ("pairwise_accuracy", *LIST_METRICS) if is_ranked(summary) else ("pairwise_accuracy",)
    scorers = list(after) + [s for s in before if s not in after]
    rows = []
    for scorer in scorers:
        b, a = before.get(scorer) or {}, after.get(scorer) or {}
        for m in metrics:
            if b.get(m) is None and a.get(m) is None:
                continue
            rows.append({"scorer": scorer, "metric": m, "before": b.get(m), "before_ci": (b.get("ci") or {}).get(m),
                         "after": a.get(m), "after_ci": (a.get("ci") or {}).get(m)})
    return rows


def eval_table(summary: dict[str, Any]) -> str:
    """Markdown table of the held-out evaluation before and after training, with bootstrap CIs; a sentence
    when the run has no evaluation."""
    rows = eval_rows(summary)
    if not rows:
        return "No held-out evaluation was run (`eval.enabled` false, or no held-out lists)."
    ev = summary.get("eval") or summary.get("eval_before") or {}
    level = ci_level(summary)
    algo = summary.get("algorithm", "training")
    lines = [f"Held-out set: {ev.get('n_pairs', '?')} pairs in {ev.get('n_lists', '?')} lists; "
             f"in brackets the {level}% bootstrap interval over lists; headline scorer `{ev.get('scorer', '?')}`.", "",
             f"| scorer | metric | before | after {algo} |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {SCORER_LABELS.get(r['scorer'], r['scorer'])} | {METRIC_LABELS.get(r['metric'], r['metric'])}"
                     f" | {fmt_ci(r['before'], r['before_ci'])} | {fmt_ci(r['after'], r['after_ci'])} |")
    notes = []
    if "implicit" in (summary.get("eval") or {}).get("by_scorer", {}):
        notes.append("Before training π = π_ref, so every implicit reward is 0: that row has no 'before'.")
    if "reward-model" in (summary.get("eval_before") or {}).get("by_scorer", {}):
        notes.append("A reward model's 'before' is its randomly initialised score head: a chance-level baseline.")
    return "\n".join(lines + ([""] + notes if notes else []))


def data_table(summary: dict[str, Any], recipe: dict[str, Any] | None = None) -> str:
    """Markdown table of the data: sources, rows read, lists kept, train/eval split, skips by reason, truncation."""
    d, rd = summary.get("data") or {}, (recipe or {}).get("data") or {}
    rows: list[tuple[str, Any]] = []
    if rd.get("train"):
        rows.append(("train source", f"`{rd['train']}` (format {rd.get('format', 'auto')}, split "
                     f"{rd.get('split', 'train')})"))
    if rd.get("eval"):
        rows.append(("eval source", f"`{rd['eval']}`"))
    elif rd:
        rows.append(("eval source", f"held-out {fmt(rd.get('eval_fraction'), 2)} of train, split by prompt hash"))
    rows += [("rows read", d.get("rows_read")), ("lists (examples)", d.get("examples")),
             ("train lists", d.get("train_lists")), ("eval lists", d.get("eval_lists"))]
    skipped = d.get("skipped") or {}
    rows.append(("rows skipped", ", ".join(f"{k}: {v}" for k, v in skipped.items()) if skipped else "none"))
    trunc = d.get("truncation") or {}
    if trunc:
        dropped = trunc.get("dropped") or {}
        rows.append(("truncated", f"{trunc.get('prompts_truncated', 0)} prompts, "
                     f"{trunc.get('responses_truncated', 0)} responses"
                     + (f"; dropped {', '.join(f'{k}: {v}' for k, v in dropped.items())}" if dropped else "")))
    if rd:
        rows.append(("max lengths", f"prompt {rd.get('max_prompt_length')}, response {rd.get('max_response_length')} "
                     f"tokens ({rd.get('truncation', 'truncate')})"))
    return _table(rows)


def reference_description(summary: dict[str, Any], recipe: dict[str, Any] | None = None) -> str:
    """Which reference the run used: a named model, the starting weights (after SFT), the PEFT base, or none."""
    r = recipe or {}
    rc = summary.get("reference_cache") or {}
    if not rc.get("key") and not rc.get("hits") and not rc.get("computed"):
        return "none (this algorithm uses no reference model)"
    named = (r.get("model") or {}).get("reference")
    if named:
        return f"`{named}`"
    if (r.get("peft") or {}).get("enabled"):
        return "the base model with the LoRA adapter disabled"
    sft = " after the SFT stage" if (r.get("sft") or {}).get("enabled") else ""
    return f"the policy's starting weights{sft} (`{summary.get('start_model', '?')}`)"


def cache_table(summary: dict[str, Any]) -> str:
    """Markdown table of the reference log-prob cache statistics (or a sentence when no cache was used)."""
    rc = summary.get("reference_cache") or {}
    if not rc.get("key") and not rc.get("hits") and not rc.get("computed"):
        return "No reference cache (the algorithm uses no reference model)."
    return _table([("key", f"`{rc.get('key')}`"), ("hits (lists reused)", rc.get("hits")),
                   ("computed (lists scored)", rc.get("computed")), ("seconds", fmt(rc.get("seconds"), 1)),
                   ("corrupted shards recomputed", rc.get("corrupted_shards", 0))])


def training_table(summary: dict[str, Any]) -> str:
    """Markdown table of steps, losses (or GRPO rewards), throughput, memory and the time of each stage."""
    s = summary
    rows: list[tuple[str, Any]] = [("optimizer steps", s.get("steps"))]
    if s.get("train_loss_first") is not None or s.get("train_loss_last") is not None:
        rows.append(("train loss first → last", f"{fmt(s.get('train_loss_first'), 4)} → "
                     f"{fmt(s.get('train_loss_last'), 4)}"))
    if s.get("reward_mean_first") is not None or s.get("reward_mean_last") is not None:
        rows.append(("mean reward first → last", f"{fmt(s.get('reward_mean_first'), 4)} → "
                     f"{fmt(s.get('reward_mean_last'), 4)}"))
    rows += [("tokens / s (training)", s.get("tokens_per_second")),
             ("peak memory (MB)", fmt(s.get("peak_memory_mb"), 0) if s.get("peak_memory_mb") is not None else None)]
    for key, label in (("sft_seconds", "SFT stage"), ("train_seconds", "training"), ("wall_seconds", "whole run")):
        if s.get(key) is not None and not (key == "sft_seconds" and not s[key]):
            rows.append((f"time: {label} (s)", fmt(float(s[key]), 1)))
    return _table(rows)


def loss_settings(recipe: dict[str, Any] | None) -> str:
    """The algorithm's ``loss:`` section as ``key=value`` pairs (``defaults`` when empty)."""
    loss = (recipe or {}).get("loss") or {}
    return ", ".join(f"`{k}={v}`" for k, v in loss.items()) or "defaults"


def recipe_yaml(recipe: dict[str, Any]) -> str:
    """The recipe as YAML that ``align train`` reads back into the same recipe."""
    return yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True).rstrip()


def reproduce_section(recipe: dict[str, Any] | None, command: str | None) -> str:
    """The exact command (when known) and the complete recipe that reproduce the run."""
    lines = []
    if command:
        lines += ["The run was started with:", "", "```bash", command, "```", ""]
    if recipe:
        lines += ["The complete recipe, with every default and override resolved (save it as `recipe.yaml` and run "
                  "`align train recipe.yaml`; the data paths are the training machine's):", "", "```yaml",
                  recipe_yaml(recipe), "```"]
    return "\n".join(lines) or "The recipe of this run was not recorded."


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {'—' if v is None else v} |" for k, v in rows]
    return "\n".join(lines)


def relpath(path: Path, start: Path) -> str:
    """``path`` relative to the directory ``start`` with forward slashes (for Markdown links)."""
    return Path(os.path.relpath(path, start)).as_posix()
