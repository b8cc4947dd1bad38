"""``docs/results.md`` and the ``--output`` JSON of ``scripts/reproduce.py``."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any

HOW_CHOSEN = (
    "They were fixed before any evaluation seed of the full run was trained, from the repository's tiny recipes "
    "and the papers, without a sweep: learning rate 5e-4 and 8 lists per step for every offline arm and every "
    "iterative round (`recipes/dpo_tiny.yaml`), GRPO's learning rate, loss and group size from "
    "`recipes/grpo_rank_tiny.yaml`, Cringe's b = 2, τ = 1, α = 1 (`recipes/iterate_cringe_tiny.yaml`), β = 0.1 for "
    "every offline objective (DPO's and TRL's default; LiPO's paper uses 0.05), β_rank = 0.25 (He et al.), and MMPO's "
    "γ = 1/T so that its soft target σ(γ·Δs) equals the true preference probability (the setting most favourable to "
    "MMPO). Sizes (steps, prompts, samples) were set from the time budget; they were reduced once, from the timings "
    "of a first quick run, before any full-run seed. That quick run also showed that an ECE taking both "
    "orientations of a pair lets an uninformative σ(β·h) = 0.5 cancel its own error, so ECE is measured with the "
    "truly better response first (`align.evaluation.calibration.ece_against`). Seed 0 is not used; nothing was "
    "changed after a full-run result was seen.")


METHOD = (
    "Each arm is run once per seed; a seed redraws the training prompts, the sampled lists, the training order and "
    "the evaluation samples (arms of one seed share them). Every comparison is paired twice: by seed and by "
    "evaluation item (prompt, held-out list or held-out pair) within a seed. Intervals are 95% hierarchical "
    "bootstrap intervals over seeds and items together (resample seeds, then items within each drawn seed; "
    "mean ± t_{0.975, S−1}·ŝe with ŝe from 2000 resamples, rescaled by √(S/(S−1)); "
    "`align.study.stats.hierarchical_bootstrap`); an ECE is one number per seed, so its interval is over seeds "
    "only. Each claim declares before the run the smallest effect δ that matters (graded score 0.02, pass@k 0.02, "
    "ECE 0.01, ranking accuracy 0.02; reasons in `align/study/claims.py`). Verdict: *equivalent* when the "
    "difference's whole interval lies within ±δ (no effect as large as δ at this scale; checked first), "
    "*reproduced* when it excludes 0 in the paper's direction, *reversed* when it excludes 0 the other way, "
    "otherwise *undecided*, with the seeds a paired power calculation asks for: n = ⌈((z_{0.975} + z_{0.8})·σ_d/δ)²⌉, "
    "σ_d the standard deviation of the seed-level paired differences (never below a seed's own evaluation noise), "
    "at least one more seed than used, at most 100. With `--until-decided --max-seeds N` seeds are added one at a "
    "time to the undecided claims only (finished runs are reused) until every claim is decided or has N seeds; "
    "*seeds* is how many seeds each verdict used. Stopping rule, the same for every offline and GRPO arm "
    "(`align.study.stats.stopping_step`): the step budget is cut into equal windows; an arm stops after `patience` "
    "windows in a row whose mean training loss (GRPO: mean training reward) does not beat its best window by "
    "`min_improvement`, and is scored at the end of its best window (the budget when still improving); the "
    "iterative arms keep their two rounds and the HH DPO policies their fixed steps. Each arm's distance from the "
    "SFT model it starts from is the change of the true reward (arm − SFT, paired by seed and prompt).")


SETUP = """## Setup of each comparison

- **Task.** `task:sort`, three digits 0–5 (`min_len=3&max_len=3&max_digit=5`, as `recipes/grpo_rank_tiny.yaml`): the
  prompt `Sort: 3 1 2`, the answer `1 2 3`; graded score = fraction of positions right (0 when unparseable), exact =
  score 1. There are only 216 distinct inputs, so evaluation prompts (a fixed draw, seed 99991) also occur among
  training prompts: the study measures how good a policy becomes, not generalisation to unseen inputs.
- **Model.** The embedded tiny Llama (~3.4 M parameters), SFT on correct answers once (its weights shared by every
  arm and seed; it is also every offline arm's reference π_ref).
- **Preference lists** (`align/tasks/preferences.py`). Per seed, fresh prompts; K samples of each from the SFT model
  at temperature 1, repeated texts kept once, ranked by the true graded score; prompts whose samples all score
  the same are left out. The K = 4 lists are the first 4 of the samples the K = 8 lists rank. True preference
  probability of a pair: σ((s_a − s_b)/T), T = the stated `preference_temperature`.
- **LiPO** (Liu et al. 2024). LiPO-λ (`labels: scores`) on the whole lists; DPO on each list's best and worst
  response; DPO on every pair of the same lists (ties excluded). Same lists, steps, batch (lists per step),
  learning rate and β.
- **MMPO** (Kim et al. 2024). MMPO (`margins: scores`, γ = 1/T) vs DPO, both on all pairs of the same K-lists.
  Calibration: on a held-out set of K = 4 lists (fixed prompts and samples), every pair oriented truly-better first,
  predicted σ(β·h) with h the policy's implicit reward margin (log π − log π_ref summed over tokens) against the
  true σ((s_a − s_b)/T); ECE over 10 equal-width bins.
- **Chen et al. 2024.** The DPO (all pairs, smallest K) policies: observed ranking accuracy (does π_θ give the
  better response the higher likelihood, ties counted correct) vs the idealized accuracy R*(β) of the exact DPO
  optimum from the same π_ref, on the held-out task lists; and the same for `recipes/dpo_tiny.yaml` policies
  (DPO on HH-RLHF harmless-base, shortened) on HH's held-out split, as `align eval` reports them.
- **He et al. 2025.** GRPO (`dapo` loss, group-scaled advantages, no KL, graded reward) from the SFT model, with
  and without the unlikeliness reward (β_rank 0.25), same prompts and steps; pass@k of the exact rule from the
  evaluation samples (unbiased estimator).
- **Xu et al. 2023.** `align iterate`, two rounds each, from the SFT model: 4 samples per prompt, best vs worst by
  the graded score, then Pairwise Cringe (b, τ, α of `recipes/iterate_cringe_tiny.yaml`) or DPO (β) on those pairs,
  the same steps per round; the second round samples from the first round's policy. Exploratory, since the
  paper's own b and τ are not checked here: Pairwise Cringe at (b, τ) ∈ {1, 4} × {0.5, 2} (declared before the run,
  `Settings.cringe_sweep`), each against the same iterative DPO runs; these claims are marked *Exploratory* and
  read as a sensitivity check, not as a test of the paper.
- **Evaluation.** `align eval --scorer task`: the fixed evaluation prompts, `eval_samples` completions each at
  temperature 1, sampling seed = the run's seed (the arms of a seed see the same random stream).
"""


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
             f"({c['direction']} is better)", "", "| arm | mean | 95% CI (seeds × items) | per seed |",
             "|---|---|---|---|"]
    for name, a in c["arms"].items():
        lines.append(f"| {name} | {_f(a['mean'])} | {_ci(a['ci'])} | {', '.join(f'{x:.3f}' for x in a['values'])} |")
    d = c["difference"]
    lines.append(f"| **difference** {d['of']} | {_f(d['mean'])} | {_ci(d['ci'])} | "
                 f"{', '.join(f'{x:+.3f}' for x in d['values'])} |")
    lines += ["", f"**Verdict: {c['verdict']}** (δ = {c['smallest_effect']:g}, {c['seeds']} seeds"
              + (f"; about {c['seeds_needed']} seeds would decide it" if c.get("seeds_needed") else "") + ")", ""]
    return "\n".join(lines)


def markdown(result: dict[str, Any], notes: str = "") -> str:
    """The whole results page."""
    env, s = result["environment"], result["settings"]
    head = [f"# Do the papers' claims hold? ({'quick run' if result['quick'] else 'full run'})", "",
            "Every claim is tested on the built-in sort task (`task:sort`, three digits 0–5, graded score = "
            "fraction of positions right), where the true reward of any response is known, and (Chen et al.) also "
            "on held-out HH-RLHF. Every trained policy is scored by sampling from it and applying the true rule "
            "(`align eval --scorer task`). " + METHOD, "",
            f"- command: `{result['command']}`",
            f"- machine: {env['machine']}" + (f", GPU {env['gpu']}" if env.get("gpu") else ""),
            f"- versions: Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
            f"trl {env['trl']}",
            f"- date: {env['date']}; wall time {result['wall_seconds'] / 60:.1f} min (summed over the invocations "
            "that built the work folder)",
            f"- seeds: {', '.join(map(str, s['seeds']))}; SFT {s['sft_steps']} steps (shared by every arm and "
            f"seed); {s['list_prompts']} training prompts per seed; a budget of {s['steps']} steps × "
            f"{s['batch_size']} lists for every offline arm and {s.get('grpo_steps')} for GRPO; stopping rule: "
            f"{s.get('windows')} windows, patience {s.get('patience')}, min_improvement {s.get('min_improvement')}; "
            f"evaluation: {s['eval_prompts']} prompts × {s['eval_samples']} samples",
            "", "**How hyper-parameters were chosen.** " + HOW_CHOSEN, "",
            "| # | claim | verdict | δ | seeds | difference (95% CI) | seeds needed |", "|---|---|---|---|---|---|---|"]
    sft = result.get("context") or {}
    if sft:
        head[-2:-2] = ["The shared SFT model, before any preference training (the same evaluation): " + "; ".join(
            f"{k} {_f(m['mean'])} {_ci(m['ci'])}" for k, m in sft.items()) + ".", ""]
    for i, c in enumerate(result["claims"], 1):
        d = c["difference"]
        head.append(f"| {i} | {c['claim']} | {c['verdict']} | {c['smallest_effect']:g} | {c['seeds']} | "
                    f"{_f(d['mean'])} {_ci(d['ci'])} | {c.get('seeds_needed') or '—'} |")
    dist = result.get("distance_from_sft") or {}
    if dist:
        head += ["", "Distance of each arm from the SFT model (change of the true reward, arm − SFT):", "",
                 "| arm | change (95% CI) | per seed |", "|---|---|---|"]
        head += [f"| {arm} | {_f(m['mean'])} {_ci(m['ci'])} | {', '.join(f'{x:+.3f}' for x in m['values'])} |"
                 for arm, m in dist.items()]
    stops = result.get("stopped_at") or {}
    if stops:
        head += ["", f"Step at which the stopping rule scored each run (budget {s['steps']} offline, "
                 f"{s.get('grpo_steps')} GRPO), by seed: " + "; ".join(
                     f"{run} {', '.join(str(x) for x in by.values())}" for run, by in stops.items()) + "."]
    body = [f"## {i}. {c['claim']}\n\n{claim_table(c)}" for i, c in enumerate(result["claims"], 1)]
    head += ["", "Settings: " + ", ".join(f"`{k}={v}`" for k, v in s.items() if k != "seeds")]
    tail = [SETUP] + ([notes] if notes else [])
    return "\n".join(head) + "\n\n" + "\n".join(body) + ("\n" + "\n".join(tail) if tail else "") + "\n"
