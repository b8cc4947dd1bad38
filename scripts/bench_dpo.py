"""DPO training speed and memory: align (reference log-prob cache) vs TRL's DPOTrainer, on equal math.

Four configurations train the same randomly initialised Llama-shaped model (saved once, loaded by every run) on
the same HH-RLHF pairs, with the same batch size, sequence lengths, steps, learning rate, seed and data order:

    trl_live         TRL DPOTrainer with a live reference model (a second copy, one no-grad forward per step)
    trl_precompute   TRL DPOTrainer with precompute_ref_log_probs=True (reference pass inside its __init__)
    align_cold       align DPOTrainer; the reference cache is built first (empty cache dir), then training
    align_warm       align DPOTrainer on the cache align_cold just filled (a cache hit: load and verify)

Each configuration runs in its own subprocess (``--worker``), so its peak RSS is its own: ``VmHWM`` of
/proc/self/status, read at the end. (``getrusage(RUSAGE_SELF).ru_maxrss`` is in the JSON too, as
``ru_maxrss_mb``, but in a child it is at least the parent's peak: Linux carries the RSS high-water mark across
fork/vfork + exec, so every worker would read at least what the parent process that built the model held.) The
configurations take turns (``run_interleaved``): only one process computes at a time, each setup runs alone, then
each configuration runs one optimizer step in turn, so the steps that are compared ran seconds apart on an
otherwise idle machine (``--sequential`` runs them one after another instead); the report takes medians over
repetitions. steps/s is steady state, measured the same way on both sides: the first
``--timing-warmup`` optimizer steps (one-time costs: lazy initialisation, allocator growth, first-call kernel
selection) are run but not timed, and the clock runs from the end of the last warm-up step to the end of the last
step (``on_step_end`` callbacks); the whole loop's rate is kept as ``steps_per_second_all``. Before any clock
both sides import their libraries and run the one-time DeepSpeed accelerator detection (which transformers
otherwise triggers lazily inside the first step). The reference pass is timed on its own: align's cache build
(or warm load), TRL's precompute (``DPOTrainer._precompute_ref_logps``). The cold run also times one bare no-grad
forward of the reference over the same data in the same batches as the cache build (one padded row per sequence,
logits only, after one untimed warm-up batch, which the cache build then also benefits from);
``cache_build_vs_bare_forward`` compares the build's scoring time (``cache.ensure_seconds``: the forwards and
log-probs, not the one-time weight fingerprint, which is in ``setup_seconds``) with it.

align's forward is switchable (``--align-layout``): ``packed`` (default: each pair's prompt once, several pairs per
row, no padding between them), ``per_list`` (the prompt once, one pair per row: padded rows) or ``padded`` (one
padded row per sequence, as TRL); ``--no-chunked-logprobs`` takes the packed layout's log-probs from the model's
full logits instead of the chunked head. ``--model-shape bigvocab`` swaps in the large-vocabulary model (the
same body with 2 layers and Qwen2's 151,936-token vocabulary, as scripts/bench_forward.py).

Same data: HH rows are loaded with ``align.data.loaders.load_examples`` and tokenized once with
``align.data.tokenize.tokenize_examples`` (``truncation="drop"``: pairs over the prompt/response limits are left
out instead of cut, because TRL cuts differently). align trains on those token ids. TRL is given the same pairs as
conversational rows (prompt messages, chosen and rejected assistant turns) and tokenizes them itself through its
own ``_prepare_dataset``; each TRL run then compares its ``prompt_ids``/``chosen_ids``/``rejected_ids`` with
align's, row by row, and the JSON reports how many were identical (``data.trl_identical_ids``). TRL 1.16 has no
way to take pre-tokenized rows (its ``_prepare_dataset`` always re-tokenizes the text).

Same order: ``train_sampling_strategy="sequential"`` and ``dataloader_drop_last=True`` on both sides, so step s
of every run sees the same pairs (TRL stacks a batch as [chosen..., rejected...], align as [c0, r0, c1, ...]:
the same rows, the same padded width). Same math: sigmoid DPO, β, AdamW, linear schedule without warmup,
gradient clipping 1.0, no dropout, gradient checkpointing off on both (``--gradient-checkpointing`` turns it on
for both). The per-step training losses of TRL and align are compared over the first N steps
(``loss_agreement``); the model is a random init, so the policy equals the reference at step 1 (loss = ln 2) and
the agreement after that is what says the updates are the same.

Targets (reported, not enforced): align warm >= 1.6x TRL live and >= 1.3x TRL precompute in steps/s, peak memory
<= 0.65x TRL live (<= 0.5x on the large-vocabulary model), cache build <= 0.8x one bare reference forward.

``--quick`` runs the full run's model and batch size on 6 of the full run's 16 batches, one repetition: the first
batch and the costliest one (the longest padded sequence, so peak memory is the full run's) as the 2 untimed warm-up
steps, then the 4 timed batches whose mean real and padded tokens per step best match the full run's timed steps
(``representative_batches``; the picks and both means are in the JSON under ``data.selected_from``). A plain
prefix of the data would time other batches than the full run does, and its ratios would differ for that reason.

GPU mode (``--device cuda``): a Qwen2-0.5B-shaped random model in bfloat16, HH prompts lengthened to ~1-2k tokens
by prefixing the preceding HH dialogues as earlier turns (``--context-dialogues``), peak memory from
``torch.cuda.max_memory_allocated``, and MFU = 6 * N * tokens / seconds / (``--peak-tflops`` * 1e12).

    python scripts/bench_dpo.py --quick                         # 6 of the full run's batches: < 3 minutes
    python scripts/bench_dpo.py --output bench_dpo.json         # the benchmark: table to docs/benchmarks.md
    python scripts/bench_dpo.py --device cuda --dry-run         # print the GPU plan without running it
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when loaded from elsewhere

from benchlib import process  # noqa: E402
from benchlib.dpo_report import render_markdown, summarize  # noqa: E402
from benchlib.dpo_worker import CONFIGS, prepare_data, run_worker  # noqa: E402
from benchlib.machine import machine_info  # noqa: E402
from benchlib.models import SHAPES, build_model_dir, count_params, model_config  # noqa: E402
from benchlib.report import run_and_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
HH = REPO.parent / "shared" / "data" / "hh_rlhf_harmless_base.jsonl.gz"  # as tests/conftest.py
DEFAULT_MARKDOWN = "docs/benchmarks.md"
ALIGN_LAYOUTS = ("packed", "per_list", "padded")

# Model per mode (cpu and quick alike, so that quick's ratios are the full run's; see benchlib.models).
MODELS = {"cpu": SHAPES["small"], "quick": SHAPES["small"], "bigvocab": SHAPES["bigvocab"],
          "cuda": SHAPES["qwen2_0_5b"]}
# Run settings per mode; any flag given on the command line wins.
DEFAULTS = {
    "cpu": {"reps": 3, "steps": 16, "batch_size": 8, "max_prompt_length": 128, "max_response_length": 128,
            "context_dialogues": 1, "learning_rate": 1e-4, "dtype": "float32", "loss_steps": 10,
            "timing_warmup": 2},
    "quick": {"reps": 1, "steps": 6, "batch_size": 8, "max_prompt_length": 128, "max_response_length": 128,
              "context_dialogues": 1, "learning_rate": 1e-4, "dtype": "float32", "loss_steps": 6,
              "timing_warmup": 2},
    "cuda": {"reps": 3, "steps": 30, "batch_size": 4, "max_prompt_length": 1792, "max_response_length": 256,
             "context_dialogues": 8, "learning_rate": 1e-5, "dtype": "bfloat16", "loss_steps": 10,
             "timing_warmup": 3},
}


# ---------------------------------------------------------------------------------------------------------------
# Plan: settings, model, data
# ---------------------------------------------------------------------------------------------------------------


def make_plan(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve the mode's defaults under the flags given: everything a run needs, JSON-serialisable."""
    mode = "cuda" if args.device == "cuda" else ("quick" if args.quick else "cpu")
    d = dict(DEFAULTS[mode])
    if args.quick and mode == "cuda":  # a short GPU smoke run: the real model, few steps
        d.update(reps=1, steps=4, loss_steps=4)
    for k in d:
        if getattr(args, k, None) is not None:
            d[k] = getattr(args, k)
    model = dict(MODELS["bigvocab" if args.model_shape == "bigvocab" else mode])
    if args.model_layers is not None:
        model["num_hidden_layers"] = args.model_layers
    if args.model_hidden is not None:
        model["hidden_size"] = args.model_hidden
        model["intermediate_size"] = args.model_intermediate or int(args.model_hidden * 2.6875)
    elif args.model_intermediate is not None:
        model["intermediate_size"] = args.model_intermediate
    # quick: the full run's pairs, from which a few of its batches are picked (select_batches)
    source_steps = DEFAULTS["cpu"]["steps"] if mode == "quick" else d["steps"]
    rows = args.rows if args.rows is not None else source_steps * d["batch_size"]
    markdown = args.markdown if args.markdown is not None else (None if args.quick else DEFAULT_MARKDOWN)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()] if args.configs else list(CONFIGS)
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        raise SystemExit(f"unknown configuration(s) {bad}; choose from {list(CONFIGS)}")
    if "align_warm" in configs and "align_cold" in configs and configs.index("align_warm") < configs.index(
            "align_cold"):
        raise SystemExit("align_warm must come after align_cold (it reuses the cache align_cold builds)")
    return {
        "mode": mode, "quick": bool(args.quick), "device": args.device, "model": model, "rows": rows,
        "ref_batch_size": args.ref_batch_size or d["batch_size"], "beta": args.beta, "seed": args.seed,
        "gradient_checkpointing": bool(args.gradient_checkpointing), "threads": args.threads,
        "data": str(args.data), "tokenizer": args.tokenizer, "configs": configs, "markdown": markdown,
        "output": args.output, "peak_tflops": args.peak_tflops, "model_shape": args.model_shape,
        "align_layout": args.align_layout, "chunked_logprobs": not args.no_chunked_logprobs,
        "select_batches": mode == "quick", "sequential": bool(args.sequential), **d,
    }



# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def _max_length(plan: dict[str, Any]) -> int:
    return plan["max_prompt_length"] + plan["max_response_length"]


def run_benchmark(plan: dict[str, Any], work: Path, *, in_process: bool = False, log=print) -> dict[str, Any]:
    """Build the model, prepare the data and run every configuration ``reps`` times (alternating)."""
    from align.models.loading import load_tokenizer

    machine = machine_info(plan["device"])
    tokenizer = load_tokenizer(plan["tokenizer"])
    model_dir, n_params = build_model_dir(plan["model"], tokenizer, work / "model", seed=plan["seed"],
                                          max_length=_max_length(plan), dtype=plan["dtype"])
    log(f"model: {n_params / 1e6:.2f} M parameters in {model_dir}")
    data = prepare_data(plan, tokenizer)
    pairs = data["info"]["pairs"]
    if pairs < plan["batch_size"]:
        raise SystemExit(f"only {pairs} usable pairs within the length limits, fewer than one batch")
    if pairs < plan["rows"] and not plan.get("select_batches"):
        log(f"warning: {plan['rows']} pairs asked for, {pairs} usable within the length limits; the runs cycle "
            "through them")
    data_file = work / "data.json"
    data_file.write_text(json.dumps({"items": data["items"], "trl_rows": data["trl_rows"]}))
    log(f"data: {data['info']}")
    results: dict[str, list[dict]] = {c: [] for c in plan["configs"]}
    base = {k: plan[k] for k in ("device", "dtype", "steps", "batch_size", "ref_batch_size", "learning_rate", "beta",
                                 "seed", "gradient_checkpointing", "threads", "max_prompt_length",
                                 "max_response_length", "timing_warmup", "align_layout", "chunked_logprobs")}
    for rep in range(plan["reps"]):
        spec = {**base, "model_dir": str(model_dir), "data_file": str(data_file),
                "cache_dir": str(work / f"cache-rep{rep}"), "run_dir": str(work / f"runs-rep{rep}")}
        t0 = time.perf_counter()
        got = process.run_configs(SCRIPT, [plan["configs"]], spec, work / f"spec-rep{rep}.json", work, f"rep{rep}",
                                  run_worker=run_worker, in_process=in_process, sequential=plan.get("sequential"),
                                  cwd=REPO)
        for config in plan["configs"]:
            r = got[config]
            results[config].append(r)
            log(f"rep {rep + 1}/{plan['reps']} {config}: {r['steps_per_second']:.3f} steps/s, "
                f"setup {r['setup_seconds']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB, loss "
                f"{r['losses'][0]:.5f} → {r['losses'][-1]:.5f}")
        log(f"rep {rep + 1}/{plan['reps']}: {time.perf_counter() - t0:.1f} s")
    return summarize(plan, results, data["info"], n_params, machine)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("mode and output")
    g.add_argument("--quick", action="store_true",
                   help="short run: the full run's model and batch size on 6 of its 16 batches (2 untimed: its "
                        "first and its costliest; 4 timed, matching its mean tokens per step), 1 repetition (< 3 "
                        "minutes on 2 idle cores); does not write docs/benchmarks.md unless --markdown is given")
    g.add_argument("--model-shape", choices=["default", "bigvocab"], default="default",
                   help="bigvocab: a 2-layer Llama body with Qwen2's 151,936-token vocabulary (CPU)")
    g.add_argument("--align-layout", choices=ALIGN_LAYOUTS, default="packed",
                   help="align's forward: packed (shared prompt, pairs packed per row; default), per_list (shared "
                        "prompt, one pair per row) or padded (one padded row per sequence)")
    g.add_argument("--no-chunked-logprobs", action="store_true",
                   help="packed layouts: log-probs from the model's full logits instead of the chunked head")
    g.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu (default): a ~27 M-parameter Llama, float32. cuda: a Qwen2-0.5B-shaped model in "
                        "bfloat16, ~1-2k tokens per sequence, MFU reported")
    g.add_argument("--output", metavar="FILE.json", help="write every measurement, medians, ratios and the loss "
                   "agreement as JSON")
    g.add_argument("--markdown", metavar="PATH",
                   help=f"write the table as markdown (default {DEFAULT_MARKDOWN}; with --quick only if given)")
    g.add_argument("--dry-run", action="store_true", help="print the resolved plan (settings, model config and "
                   "parameter count, built on the meta device) and exit without running anything")
    g.add_argument("--configs", metavar="A,B", help=f"run only these configurations, in this order (default: "
                   f"{','.join(CONFIGS)}); align_warm needs align_cold before it in the same repetition")
    g.add_argument("--workdir", metavar="DIR", help="where the temporary model, data, caches and logs go "
                   "(default: a new temporary directory, removed afterwards)")
    g.add_argument("--keep-workdir", action="store_true", help="keep the work directory (worker logs, caches)")
    g.add_argument("--compare-to", metavar="FULL.json", help="compare this run's ratios with another run's JSON "
                   "(e.g. --quick against the full run): relative differences in the table and under "
                   "`compared_to` in the JSON")
    g.add_argument("--sequential", action="store_true", help="run the configurations one after another, each "
                   "alone, instead of alternating their steps (four processes alive at once; use this where four "
                   "copies do not fit in memory)")
    g.add_argument("--in-process", action="store_true", help="run the configurations in this process instead of "
                   "one subprocess each (debugging only: peak RSS is then not per configuration)")
    r = ap.add_argument_group("run settings (defaults depend on the mode: cpu / --quick / cuda)")
    r.add_argument("--reps", type=int, help="repetitions of the four configurations (3 / 1 / 3)")
    r.add_argument("--steps", type=int, help="optimizer steps per run, warm-up included (16 / 6 / 30)")
    r.add_argument("--timing-warmup", type=int, help="first steps run but not timed, on both sides (2 / 2 / 3)")
    r.add_argument("--batch-size", type=int, help="pairs per step, both trainers (8 / 8 / 4)")
    r.add_argument("--ref-batch-size", type=int, help="pairs per batch of the reference pass: align's cache build, "
                   "TRL's precompute and the bare forward (default: --batch-size)")
    r.add_argument("--max-prompt-length", type=int, help="prompt token limit; longer pairs are left out (128 / 128 / "
                   "1792)")
    r.add_argument("--max-response-length", type=int, help="response token limit; longer pairs are left out (128 / "
                   "128 / 256)")
    r.add_argument("--rows", type=int, help="HH pairs used (the first usable ones; default steps x batch size, each "
                   "pair seen once). The reference pass covers all of them")
    r.add_argument("--context-dialogues", type=int, help="prefix each HH prompt with the preceding k-1 dialogues as "
                   "earlier turns, for long sequences (1 / 1 / 8)")
    r.add_argument("--learning-rate", type=float, help="AdamW learning rate, linear decay, no warmup (1e-4 / 1e-4 "
                   "/ 1e-5)")
    r.add_argument("--beta", type=float, default=0.1, help="DPO β (default 0.1)")
    r.add_argument("--seed", type=int, default=0, help="seed of the model init and of both trainers (default 0)")
    r.add_argument("--dtype", choices=["float32", "bfloat16"], help="model dtype (float32 on cpu, bfloat16 on cuda)")
    r.add_argument("--loss-steps", type=int, help="N: compare TRL's and align's losses over the first N steps "
                   "(10 / 6 / 10)")
    r.add_argument("--gradient-checkpointing", action="store_true", help="turn gradient checkpointing on for both "
                   "trainers (default off for both; TRL's own default is on)")
    r.add_argument("--threads", type=int, help="torch threads in each worker (default: torch's default)")
    r.add_argument("--peak-tflops", type=float, default=989.0, help="peak dense TFLOP/s of the device for MFU "
                   "(default 989: H100 SXM bf16)")
    r.add_argument("--data", default=str(HH), help="the HH-RLHF jsonl(.gz) (default ../shared/data/"
                   "hh_rlhf_harmless_base.jsonl.gz beside the repository)")
    r.add_argument("--tokenizer", default="embedded:tiny", help="tokenizer to build the model around (default: "
                   "align's embedded BPE, embedded:tiny)")
    r.add_argument("--model-layers", type=int, help="override the model's layer count")
    r.add_argument("--model-hidden", type=int, help="override the model's hidden size")
    r.add_argument("--model-intermediate", type=int, help="override the model's MLP size")
    w = ap.add_argument_group("internal")
    w.add_argument("--worker", choices=CONFIGS, help="run one configuration from --spec and write --result")
    w.add_argument("--spec", help="worker spec: a JSON file, or inline JSON")
    w.add_argument("--result", help="worker result JSON file (default: print to stdout)")
    w.add_argument("--turns", metavar="R,W", help="file descriptors of the coordinator's turn pipes")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = build_parser().parse_args(argv)
    if args.worker:
        process.set_turns(args.turns)
        spec = json.loads(args.spec) if args.spec.lstrip().startswith("{") else json.loads(Path(args.spec).read_text())
        result = run_worker(args.worker, spec)
        text = json.dumps(result)
        if args.result:
            Path(args.result).write_text(text)
        else:
            print(text)
        return result

    plan = make_plan(args)
    if args.dry_run:
        from align.models.loading import load_tokenizer

        tokenizer = load_tokenizer(plan["tokenizer"])
        config = model_config(plan["model"], tokenizer, _max_length(plan))
        plan["model_config"] = config.to_dict()
        plan["parameters"] = count_params(config)
        print(json.dumps(plan, indent=1, default=str))
        print(f"\nplan: {plan['mode']} mode, {type(config).__name__} with {plan['parameters'] / 1e6:.1f} M parameters; "
              f"{plan['reps']} x {plan['configs']} x {plan['steps']} steps of {plan['batch_size']} pairs. Not run "
              "(--dry-run).")
        return plan
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (try --dry-run)")

    return run_and_report("bench_dpo", plan, args, argv, run_benchmark, render_markdown, repo=REPO,
                          markdown_is_default=args.markdown is None)


if __name__ == "__main__":
    main()
