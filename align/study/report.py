"""``docs/results.md`` and the ``--output`` JSON of ``scripts/reproduce.py``."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any

HOW_CHOSEN = (
    "Hyper-parameters were fixed before any evaluation seed was run: the learning rates, batch sizes and Cringe's "
    "b/τ/α are those of the repository's tiny recipes (`recipes/*_tiny.yaml`, `recipes/grpo_rank_tiny.yaml`), β = 0.1 "
    "for every offline objective (DPO's and TRL's default), β_rank = 0.25 (He et al.), MMPO's γ = 1/T so that its "
    "soft target σ(γ·Δs) is the true preference probability (the setting most favourable to MMPO), and the sizes "
    "were set from the time budget. Seed 0 was never used for an arm; evaluation seeds start at 1. Nothing was "
    "re-run or changed after looking at a result.")


def environment() -> dict[str, Any]:
    """Machine, versions and date of the run."""
    import torch
    import transformers

    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{cpu}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl_version}


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _ci(ci: Any) -> str:
    return "— (fewer than 2 seeds)" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def claim_table(c: dict[str, Any]) -> str:
    """One claim as Markdown: each arm's mean, 95% interval and per-seed values, the difference, the verdict."""
    lines = [f"**Claim:** {c['claim']}  ", f"**Paper:** {c['paper']}  ", f"**Metric:** {c['metric']} "
             f"({c['direction']} is better)", "", "| arm | mean | 95% CI (t, over seeds) | per seed |",
             "|---|---|---|---|"]
    for name, a in c["arms"].items():
        lines.append(f"| {name} | {_f(a['mean'])} | {_ci(a['ci'])} | {', '.join(f'{x:.3f}' for x in a['values'])} |")
    d = c["difference"]
    lines.append(f"| **difference** {d['of']} | {_f(d['mean'])} | {_ci(d['ci'])} | "
                 f"{', '.join(f'{x:+.3f}' for x in d['values'])} |")
    lines += ["", f"**Verdict: {c['verdict']}**", ""]
    return "\n".join(lines)


def markdown(result: dict[str, Any], notes: str = "") -> str:
    """The whole results page."""
    env, s = result["environment"], result["settings"]
    head = [f"# Do the papers' claims hold? ({'quick run' if result['quick'] else 'full run'})", "",
            "Every claim is tested on the built-in sort task (`task:sort`, three digits 0–5, graded score = "
            "fraction of positions right), where the true reward of any response is known, and (Chen et al.) also "
            "on held-out HH-RLHF. Every trained policy is scored by sampling from it and applying the true rule "
            "(`align eval --scorer task`). Each arm is run once per seed; a seed redraws the training prompts, "
            "the sampled lists, the training order and the evaluation samples (arms of one seed share them). "
            "Intervals are 95% Student-t intervals over seeds; the difference is paired by seed. Verdict: "
            "*reproduced* when the difference's interval excludes 0 in the paper's direction, *reversed* when it "
            "excludes 0 the other way, otherwise *inconclusive*.", "",
            f"- command: `{result['command']}`",
            f"- machine: {env['machine']}" + (f", GPU {env['gpu']}" if env.get("gpu") else ""),
            f"- versions: Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
            f"trl {env['trl']}",
            f"- date: {env['date']}; wall time {result['wall_seconds'] / 60:.1f} min",
            f"- seeds: {', '.join(map(str, s['seeds']))}; SFT {s['sft_steps']} steps (shared by every arm and "
            f"seed); {s['list_prompts']} training prompts per seed; {s['steps']} steps × {s['batch_size']} lists "
            f"for every offline arm; evaluation: {s['eval_prompts']} prompts × {s['eval_samples']} samples",
            "", "**How hyper-parameters were chosen.** " + HOW_CHOSEN, "",
            "| # | claim | verdict | difference (95% CI) |", "|---|---|---|---|"]
    for i, c in enumerate(result["claims"], 1):
        d = c["difference"]
        head.append(f"| {i} | {c['claim']} | {c['verdict']} | {_f(d['mean'])} {_ci(d['ci'])} |")
    body = [f"## {i}. {c['claim']}\n\n{claim_table(c)}" for i, c in enumerate(result["claims"], 1)]
    tail = [notes] if notes else []
    return "\n".join(head) + "\n\n" + "\n".join(body) + ("\n" + "\n".join(tail) if tail else "") + "\n"
