"""scripts/bench_dpo.py's summary (medians, ratios, targets, loss agreement) and its markdown table."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from benchlib.dpo_worker import CONFIGS
from benchlib.machine import header_lines, load_average, machine_info, versions
from benchlib.report import check_targets, finish_table, fmt, median, ratio

LABELS = {"trl_live": "TRL live reference", "trl_precompute": "TRL precompute_ref_log_probs",
          "align_cold": "align, cold cache (build + train)", "align_warm": "align, warm cache"}
# ratio key -> (comparison, target)
TARGETS = {"align_warm_vs_trl_live": (">=", 1.6), "align_warm_vs_trl_precompute": (">=", 1.3),
           "peak_memory_vs_trl_live": ("<=", 0.65), "cache_build_vs_bare_forward": ("<=", 0.8)}
BIGVOCAB_MEMORY_TARGET = 0.5  # peak_memory_vs_trl_live on the large-vocabulary model


def summarize(plan: dict[str, Any], results: dict[str, list[dict]], data_info: dict[str, Any],
              n_params: int, machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """Medians per configuration, the four ratios, targets and the loss agreement."""
    machine = dict(machine or machine_info(plan["device"]))
    machine["load_average_at_end"] = load_average()
    mem_key = "peak_gpu_mb" if plan["device"] == "cuda" else "peak_rss_mb"
    configs = {}
    for name, runs in results.items():
        if not runs:
            continue
        med = {k: median(runs, k) for k in ("steps_per_second", "steps_per_second_after_first", "tokens_per_second",
                                              "peak_rss_mb", "peak_gpu_mb", "setup_seconds", "train_seconds",
                                              "init_seconds", "rss_after_imports_mb", "rss_after_model_load_mb",
                                              "peak_rss_above_imports_mb", "bare_forward_seconds",
                                              "steps_per_second_all", "timed_seconds")}
        med["cache_build_seconds"] = median([{"v": r["cache"]["ensure_seconds"]} for r in runs if "cache" in r],
                                             "v")
        med["setup_plus_train_seconds"] = median(
            [{"v": r["setup_seconds"] + r["train_seconds"]} for r in runs], "v")
        if plan["device"] == "cuda":
            peak = plan["peak_tflops"] * 1e12
            med["mfu"] = median([{"v": 6 * n_params * r["tokens"] / r["train_seconds"] / peak} for r in runs], "v")
        configs[name] = {"median": med, "runs": runs}

    def med(name, key):
        return configs[name]["median"].get(key) if name in configs else None

    warm = med("align_warm", "steps_per_second")
    ratios = {
        "align_warm_vs_trl_live": ratio(warm, med("trl_live", "steps_per_second")),
        "align_warm_vs_trl_precompute": ratio(warm, med("trl_precompute", "steps_per_second")),
        "peak_memory_vs_trl_live": ratio(med("align_warm", mem_key), med("trl_live", mem_key)),
        "cache_build_vs_bare_forward": ratio(med("align_cold", "cache_build_seconds"),
                                              med("align_cold", "bare_forward_seconds")),
    }
    # Not targets, context for them: RSS above the interpreter + libraries baseline of each process
    # (what training itself takes), and the setup + train time of the cold run against TRL's runs.
    extra = {
        "peak_rss_above_imports_vs_trl_live": ratio(med("align_warm", "peak_rss_above_imports_mb"),
                                                     med("trl_live", "peak_rss_above_imports_mb")),
        "align_cold_setup_plus_train_vs_trl_live": ratio(med("trl_live", "setup_plus_train_seconds"),
                                                          med("align_cold", "setup_plus_train_seconds")),
        "align_cold_setup_plus_train_vs_trl_precompute": ratio(med("trl_precompute", "setup_plus_train_seconds"),
                                                                med("align_cold", "setup_plus_train_seconds")),
        "cache_build_vs_trl_precompute": ratio(med("align_cold", "setup_seconds"),
                                                med("trl_precompute", "setup_seconds")),
        "cache_setup_with_fingerprint_vs_bare_forward": ratio(med("align_cold", "setup_seconds"),
                                                               med("align_cold", "bare_forward_seconds")),
        "align_warm_vs_trl_live_whole_loop": ratio(med("align_warm", "steps_per_second_all"),
                                                    med("trl_live", "steps_per_second_all")),
    }
    goals = dict(TARGETS)
    if plan.get("model_shape") == "bigvocab":
        goals["peak_memory_vs_trl_live"] = ("<=", BIGVOCAB_MEMORY_TARGET)
    targets = check_targets(ratios, goals)
    for name in configs:  # per-row ratios for the table
        sps = med(name, "steps_per_second")
        configs[name]["median"]["vs_trl_live"] = ratio(sps, med("trl_live", "steps_per_second"))
        configs[name]["median"]["vs_trl_precompute"] = ratio(sps, med("trl_precompute", "steps_per_second"))

    # Loss agreement: every TRL run against every align run (all reps), over the first N steps.
    n = min(plan["loss_steps"], plan["steps"])
    trl_runs = [(c, r) for c in ("trl_live", "trl_precompute") for r in results.get(c, [])]
    align_runs = [(c, r) for c in ("align_warm", "align_cold") for r in results.get(c, [])]
    agreement: dict[str, Any] = {"steps": n, "max_abs_diff": None, "trl": None, "align": None}
    if trl_runs and align_runs:
        worst, compared = 0.0, []
        for tc, tr in trl_runs:
            for ac, ar in align_runs:
                a, b = tr["losses"][:n], ar["losses"][:n]
                if len(a) < n or len(b) < n:
                    worst = math.inf
                    continue
                d = max(abs(x - y) for x, y in zip(a, b))
                compared.append(f"{tc} vs {ac}")
                worst = max(worst, d)
        agreement.update(max_abs_diff=worst, trl=trl_runs[0][1]["losses"][:n], align=align_runs[0][1]["losses"][:n],
                         compared=sorted(set(compared)), trl_config=trl_runs[0][0], align_config=align_runs[0][0])
    ids = [r["identical_ids"] for c in ("trl_live", "trl_precompute") for r in results.get(c, [])]
    data_info = dict(data_info)
    if ids:
        data_info["trl_identical_ids"] = {"rows": ids[0]["rows"], "identical": min(i["identical"] for i in ids)}
    real, padded = trained_tokens_from_runs(results)
    return {
        "benchmark": "dpo", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": plan["quick"], "machine": machine, "versions": versions(),
        "settings": {k: plan[k] for k in ("mode", "device", "dtype", "reps", "steps", "batch_size", "ref_batch_size",
                                          "max_prompt_length", "max_response_length", "rows", "learning_rate", "beta",
                                          "seed", "gradient_checkpointing", "context_dialogues", "configs",
                                          "peak_tflops", "timing_warmup", "model_shape", "align_layout",
                                          "chunked_logprobs", "sequential")},
        "model": {**plan["model"], "parameters": n_params},
        "data": {**data_info, "tokens_trained": real, "padded_tokens_trained": padded},
        "memory_measure": mem_key,
        "configs": configs,
        "ratios": ratios,
        "targets": targets,
        "extra_ratios": extra,
        "loss_agreement": agreement,
    }



def trained_tokens_from_runs(results: dict[str, list[dict]]) -> tuple[int | None, int | None]:
    for runs in results.values():
        for r in runs:
            return r["tokens"], r["padded_tokens"]
    return None, None



def render_markdown(summary: dict[str, Any], command: str = "") -> str:
    s, m, d, v = summary["settings"], summary["model"], summary["data"], summary["versions"]
    mach = summary["machine"]
    mem = "peak GPU MB" if summary["memory_measure"] == "peak_gpu_mb" else "peak RSS MB"
    lines = [f"# DPO training: align vs TRL {v['trl']} ({summary['date'][:10]})", ""]
    if summary["quick"]:
        sel = d.get("selected_from")
        picked = (f" (batches {sel['picked']} of the full run's {sel['batches']}: real / padded tokens per timed "
                  f"step {sel['picked_tokens_per_timed_step']:.0f} / {sel['picked_padded_tokens_per_timed_step']:.0f} "
                  f"against the full run's {sel['full_tokens_per_timed_step']:.0f} / "
                  f"{sel['full_padded_tokens_per_timed_step']:.0f})") if sel else ""
        lines += ["**Quick smoke run: the full run's model and batch size on a few of its batches" + picked
                  + ", one repetition; its ratios track the full run's, its absolute numbers rest on few steps.**", ""]
    arch = "Qwen2" if m["arch"] == "qwen2" else "Llama"
    lines += [
        *header_lines(mach, v, s["device"]),
        f"Model: {arch}-shaped, random init, {m['parameters'] / 1e6:.1f} M parameters (hidden {m['hidden_size']}, "
        f"{m['num_hidden_layers']} layers, {m['num_attention_heads']} heads / {m['num_key_value_heads']} KV, "
        f"intermediate {m['intermediate_size']}"
        + (f", vocabulary {m['vocab_size']:,}" if m.get("vocab_size") else "")
        + f"), {s['dtype']}, tokenizer: align's embedded BPE.",
        f"align's forward: layout {s.get('align_layout', 'packed')}, chunked log-probs "
        f"{'on' if s.get('chunked_logprobs', True) else 'off'} (see the script's docstring). steps/s is steady "
        f"state: the first {s.get('timing_warmup', 0)} steps of every run are not timed, on both sides.",
        f"Data: HH-RLHF harmless slice, {d['pairs']} pairs (pairs over {s['max_prompt_length']} prompt / "
        f"{s['max_response_length']} response tokens left out"
        + (f", {s['context_dialogues'] - 1} earlier dialogues prefixed to each prompt" if s["context_dialogues"] > 1
           else "")
        + f"), {d['mean_tokens_per_sequence']} tokens per sequence on average; "
        f"{s['steps']} steps of {s['batch_size']} pairs in the same sequential order on both sides, lr "
        f"{s['learning_rate']:g}, β {s['beta']:g}, seed {s['seed']}, gradient checkpointing "
        f"{'on' if s['gradient_checkpointing'] else 'off'}; reference pass batch {s['ref_batch_size']}. "
        f"Medians over {s['reps']} repetition(s), each configuration in its own process, "
        + ("run one after another." if s.get("sequential") else "taking turns step by step (only one computes at a "
           "time; see the script's docstring)."),
    ]
    if "trl_identical_ids" in d:
        t = d["trl_identical_ids"]
        lines.append(f"Token ids: TRL's own tokenization of the conversational rows equals align's on "
                     f"{t['identical']} of {t['rows']} pairs.")
    lines += ["", f"| configuration | steps/s | tokens/s | {mem} | setup s (cache build / precompute) | "
              "vs TRL live | vs TRL precompute | setup + train s |", "|---|---|---|---|---|---|---|---|"]
    mem_key = summary["memory_measure"]
    for name in CONFIGS:
        if name not in summary["configs"]:
            continue
        x = summary["configs"][name]["median"]
        setup = "—" if name == "trl_live" else fmt(x["setup_seconds"])
        lines.append(f"| {LABELS[name]} | {fmt(x['steps_per_second'], '.3f')} | {fmt(x['tokens_per_second'], '.0f')} "
                     f"| {fmt(x[mem_key], '.0f')} | {setup} | {fmt(x['vs_trl_live'])}× | "
                     f"{fmt(x['vs_trl_precompute'])}× | {fmt(x['setup_plus_train_seconds'])} |")
    if s["device"] == "cuda":
        lines += ["", "MFU (6·N·tokens / train seconds / peak, peak "
                  f"{s['peak_tflops']:g} TFLOP/s): "
                  + ", ".join(f"{LABELS[n]} {fmt(summary['configs'][n]['median'].get('mfu'), '.1%')}"
                              for n in CONFIGS if n in summary["configs"])]
    lines += ["", "Ratios (the project's targets; reported, not enforced):", ""]
    names = {"align_warm_vs_trl_live": "align warm steps/s ÷ TRL live steps/s",
             "align_warm_vs_trl_precompute": "align warm steps/s ÷ TRL precompute steps/s",
             "peak_memory_vs_trl_live": f"align warm {mem} ÷ TRL live {mem}",
             "cache_build_vs_bare_forward": "align cache build scoring s ÷ one bare no-grad padded reference "
                                            "forward s"}
    for k, label in names.items():
        t = summary["targets"][k]
        met = "—" if t["met"] is None else ("met" if t["met"] else "not met")
        lines.append(f"- {label}: **{fmt(summary['ratios'][k])}** (target {t['target']}: {met})")
    e = summary["extra_ratios"]
    lines += ["", "Context (not targets): align warm peak RSS above its process's import baseline ÷ the same for TRL "
              f"live: {fmt(e['peak_rss_above_imports_vs_trl_live'])}; align cache build s ÷ TRL precompute s: "
              f"{fmt(e['cache_build_vs_trl_precompute'])}; end to end (setup + train), align cold is "
              f"{fmt(e['align_cold_setup_plus_train_vs_trl_live'])}× as fast as TRL live and "
              f"{fmt(e['align_cold_setup_plus_train_vs_trl_precompute'])}× as fast as TRL precompute."]
    la = summary["loss_agreement"]
    if la["max_abs_diff"] is not None:
        lines += ["", f"Loss agreement (same init, data and order): max |Δloss| over the first {la['steps']} steps = "
                  f"**{la['max_abs_diff']:.2e}** across {', '.join(la['compared'])}. {la['trl_config']}: "
                  + ", ".join(f"{x:.5f}" for x in la["trl"]) + f"; {la['align_config']}: "
                  + ", ".join(f"{x:.5f}" for x in la["align"]) + "."]
        if s["dtype"] != "float32":
            lines.append(f"In {s['dtype']} the two sides round differently (TRL's tiled fused LM head vs align's "
                         "log-softmax in float32), so expect agreement at that precision "
                         "(~1e-3), not float32's ~1e-6.")
    lines += ["", "steps/s times the training loop only, after the untimed warm-up steps (from the end of the last "
              "warm-up step to the end of the last step); setup is the "
              "reference pass: align's cache build (cold) or cache load and verify (warm), TRL's "
              "precompute_ref_log_probs pass; tokens/s counts non-padding tokens through the policy. Peak memory "
              "is each configuration's own process (its VmHWM on CPU, torch.cuda.max_memory_allocated on GPU)."]
    return finish_table(lines, summary, command)
