"""scripts/bench_grpo.py's summary (medians, ratios, targets) and its markdown table."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from benchlib.grpo_worker import config_name
from benchlib.machine import header_lines, load_average, versions
from benchlib.report import check_targets, finish_table, fmt, median, ratio

# ratio key -> (comparison, target): the project's targets for GRPO against TRL (reported, not enforced)
TARGETS = {"tiny_speed_vs_trl": (">=", 2.5), "bigvocab_speed_vs_trl": (">=", 3.0),
           "bigvocab_memory_vs_trl": ("<=", 0.5), "generation_vs_trl": (">=", 1.3)}
PHASES = ("step_seconds", "generation_seconds", "reference_seconds", "scoring_seconds", "training_seconds",
          "fed_tokens", "logged_tokens_per_step")
TOP = ("steps_per_second", "peak_rss_mb", "peak_gpu_mb", "init_seconds", "rss_after_imports_mb",
       "peak_rss_above_imports_mb", "timed_seconds")


def _medians(runs: list[dict]) -> dict[str, Any]:
    med = {k: median(runs, k) for k in TOP}
    med.update({k: median([r["timed_mean"] for r in runs], k) for k in PHASES})
    return med


def _worst(values: list[float | None], larger_is_better: bool = True) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return min(vals) if larger_is_better else max(vals)


def summarize(plan: dict[str, Any], models: dict[str, dict], agreed: dict[str, Any],
              machine: dict[str, Any]) -> dict[str, Any]:
    """Medians per configuration, ratios per model and β, the headline ratios (the worse β), targets."""
    machine = dict(machine, load_average_at_end=load_average())
    mem = "peak_gpu_mb" if plan["device"] == "cuda" else "peak_rss_mb"
    out_models, by_beta = {}, {}
    for name, m in models.items():
        configs = {c: {"median": _medians(runs), "runs": runs} for c, runs in m["results"].items() if runs}
        checks = {c: {"order_same_as_trl": all(r.get("order", {}).get("same_as_trl", True) for r in v["runs"]),
                      "identical_prompt_ids": v["runs"][0].get("identical_prompt_ids")} for c, v in configs.items()}
        out_models[name] = {"parameters": m["parameters"], "batch_prompts": m["batch_prompts"], "data": m["data"],
                            "checks": checks, "configs": configs}
        by_beta[name] = {}
        for beta in plan["betas"]:
            a = configs.get(config_name("align", beta), {}).get("median", {})
            t = configs.get(config_name("trl", beta), {}).get("median", {})
            by_beta[name][f"{beta:g}"] = {
                "speed_vs_trl": ratio(a.get("steps_per_second"), t.get("steps_per_second")),
                "memory_vs_trl": ratio(a.get(mem), t.get(mem)),
                "generation_vs_trl": ratio(t.get("generation_seconds"), a.get("generation_seconds")),
                "reference_vs_trl": ratio(t.get("reference_seconds"), a.get("reference_seconds")),
                "training_vs_trl": ratio(t.get("training_seconds"), a.get("training_seconds")),
                "fed_tokens_vs_trl": ratio(a.get("fed_tokens"), t.get("fed_tokens")),
            }

    def over(model: str | None, key: str, larger_is_better: bool = True) -> float | None:
        names = [model] if model else list(by_beta)
        return _worst([v[key] for n in names if n in by_beta for v in by_beta[n].values()], larger_is_better)

    ratios = {"tiny_speed_vs_trl": over("tiny", "speed_vs_trl"),
              "bigvocab_speed_vs_trl": over("bigvocab", "speed_vs_trl"),
              "bigvocab_memory_vs_trl": over("bigvocab", "memory_vs_trl", larger_is_better=False),
              "generation_vs_trl": over(None, "generation_vs_trl"),
              "loss_agreement": {"max_abs_diff": agreed.get("max_abs_diff")}}
    return {
        "benchmark": "grpo", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": plan["quick"], "machine": machine, "versions": versions(),
        "settings": {k: plan[k] for k in ("mode", "models", "betas", "prompts", "num_generations",
                                          "max_completion_length", "batch_prompts", "learning_rate", "seed",
                                          "threads", "device", "dtype", "reps", "steps", "timing_warmup",
                                          "sequential", "agreement_prompts")},
        "memory_measure": mem, "models": out_models, "ratios": ratios, "ratios_by_beta": by_beta,
        "targets": check_targets(ratios, TARGETS), "loss_agreement": agreed,
    }


LABELS = {"step_seconds": "s/step", "generation_seconds": "generation s", "reference_seconds": "reference s",
          "scoring_seconds": "scoring s", "training_seconds": "training s", "fed_tokens": "tokens fed/step"}


def render_markdown(summary: dict[str, Any], command: str = "") -> str:
    s, v = summary["settings"], summary["versions"]
    mem = "peak GPU MB" if summary["memory_measure"] == "peak_gpu_mb" else "peak RSS MB"
    lines = [f"## GRPO: align vs TRL {v['trl']} GRPOTrainer ({summary['date'][:10]})", ""]
    if summary["quick"]:
        lines += ["**Quick run: a few of each model's full-run batches, picked to match its mean tokens per step; "
                  "its ratios track the full run's, its absolute numbers rest on few steps.**", ""]
    lines += [*header_lines(summary["machine"], v, s["device"]),
              f"Prompts: `{s['prompts']}`; G = {s['num_generations']}, completions ≤ {s['max_completion_length']} "
              f"tokens, dapo, β {', '.join(f'{b:g}' for b in s['betas'])}, lr {s['learning_rate']:g}, "
              f"{s['threads']} thread(s) per process, {s['dtype']}; the first {s['timing_warmup']} steps untimed on "
              f"both sides; configurations in their own processes, "
              + ("one after another." if s["sequential"] else "taking turns step by step."), ""]
    cols = ["s/step", "generation s", "reference s", "scoring s", "training s", "tokens fed/step", mem]
    for name, m in summary["models"].items():
        d = m["data"]
        lines += [f"**{name}** ({m['parameters'] / 1e6:.1f} M parameters, {m['batch_prompts']} prompts × "
                  f"{s['num_generations']} per step, {d['steps']} steps, prompts of {d['prompt_tokens_min']}–"
                  f"{d['prompt_tokens_max']} tokens):", "",
                  "| configuration | " + " | ".join(cols) + " | TRL s/step ÷ align s/step |",
                  "|---|" + "---:|" * (len(cols) + 1)]
        for c, x in m["configs"].items():
            med = x["median"]
            beta = f"{x['runs'][0]['beta']:g}"
            speed = summary["ratios_by_beta"][name][beta]["speed_vs_trl"] if c.startswith("align") else None
            cells = [fmt(med[k], ".0f" if k == "fed_tokens" else ".3f") for k in LABELS]
            cells += [fmt(med[summary["memory_measure"]], ".0f"), f"{fmt(speed)}×" if speed is not None else ""]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        ids = [ck["identical_prompt_ids"] for ck in m["checks"].values() if ck["identical_prompt_ids"]]
        lines += ["", f"Same prompt order on both sides: "
                  f"{'yes' if all(ck['order_same_as_trl'] for ck in m['checks'].values()) else 'NO'}"
                  + (f"; TRL's own chat rendering gives align's prompt ids on {ids[0]['identical']} of "
                     f"{ids[0]['prompts']} prompts." if ids else "."), ""]
    lines += ["Ratios (the worse of the β values; the project's targets, reported, not enforced):", ""]
    for k, t in summary["targets"].items():
        met = "—" if t["met"] is None else ("met" if t["met"] else "not met")
        lines.append(f"- `{k}`: **{fmt(summary['ratios'][k])}** (target {t['target']}: {met})")
    la = summary["loss_agreement"]
    lines += ["", f"Loss agreement (one fixed batch of {la['completions']} completions fed to both trainers, both "
              f"policies perturbed alike): max |Δloss| **{la['max_abs_diff']:.2e}**, max |Δgradient| "
              f"{la['grad_max_abs_diff']:.2e}; "
              + "; ".join(f"β {b}: TRL {x['trl']:.6f}, align {x['align']:.6f}" for b, x in la["by_beta"].items())
              + ".", "", "Training s is the step's time less generation, reference and scoring (a phase a side does "
              "not report, shown —, stays in it). Tokens fed: what the training forward received, padding "
              "included."]
    return finish_table(lines, summary, command)
