"""GRPO training speed and memory: align's GRPOTrainer vs TRL's GRPOTrainer, on equal math.

Both trainers start from the same saved weights and tokenizer and train on the same 64 ``task:sort`` prompts (lists
of 50-190 digits: 63-203 tokens through the chat template), in the same order, rewarded by the same function
(``align.tasks.sort:reward_graded``), with G = 8 completions of at most 32 tokens per prompt, the ``dapo`` loss,
β 0 and 0.04, one optimizer step per generation, one CPU thread per process. Two models:

    tiny      align's embedded model (``embedded:tiny``, 4.0 M parameters), 4 prompts x 8 completions per step
    bigvocab  a 2-layer Llama body with Qwen2's 151,936-token vocabulary (~84 M parameters, random init, the
              embedded tokenizer; as scripts/bench_dpo.py), 2 prompts x 8 completions per step

Every configuration (align or TRL at one β) runs in its own process, so each has its own peak memory (``VmHWM``);
align and TRL at the same β take turns step by step (``benchlib.process.run_interleaved``: only one computes at a
time, so every step is timed on an otherwise idle machine, seconds from the other side's same step), and the β
values run one after another (two processes alive at a time: the large-vocabulary ones take several GB each).
Each side imports its libraries before any clock; the first ``--timing-warmup`` steps run untimed on both sides.

Per step: generation seconds (TRL: its ``_generate_single_turn``; align: the ``timing/generation_seconds`` it
logs), the reference pass (TRL: its reference model's log-prob pass; align: ``timing/reference_seconds`` where it
logs it, else its reference model's forwards timed by hooks), reward scoring (the same timed reward function on
both sides), training (the step's time less those), and the tokens the training forward was fed (TRL: its padded
``[B·G, P + C]`` batch; align: the ``input_ids`` its ``compute_loss`` receives, and its own ``tokens_per_step``
metric where it logs one, else null).

The objectives are checked on one fixed batch (``benchlib.grpo_agreement``): the same completions fed to both
trainers in place of their sampling, both policies perturbed alike so that the KL term is not zero, then each
side's first-step loss and gradients through its own training forward (``loss_agreement``).

Ratios (``ratios`` in the JSON; per β in ``ratios_by_beta``; the headline is the worse of the two β):
``tiny_speed_vs_trl`` and ``bigvocab_speed_vs_trl`` (TRL s/step ÷ align s/step), ``bigvocab_memory_vs_trl`` (align
peak ÷ TRL peak), ``generation_vs_trl`` (TRL generation s ÷ align generation s, over both models). The project's
targets (reported, not enforced): speed >= 2.5 (tiny) and >= 3 (bigvocab), memory <= 0.5, generation >= 1.3.

``--quick`` runs each model on 5 of its full run's batches (the full run's costliest as the one untimed warm-up
step, then the 4 whose mean real and padded tokens per step best match the full run's timed steps:
``benchlib.batches``), so that its ratios track the full run's.

    python scripts/bench_grpo.py --quick                      # both models, a few batches: < 12 minutes
    python scripts/bench_grpo.py --output bench_grpo.json     # the benchmark: one epoch of the 64 prompts
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when loaded from elsewhere

from benchlib import process  # noqa: E402
from benchlib.batches import pick  # noqa: E402
from benchlib.grpo_report import render_markdown, summarize  # noqa: E402
from benchlib.grpo_worker import config_name  # noqa: E402
from benchlib.machine import machine_info  # noqa: E402
from benchlib.report import run_and_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
PROMPTS = "task:sort?n=64&seed=0&min_len=50&max_len=190"
# model -> (shape in benchlib.models.SHAPES, or "embedded:tiny"; prompts per step)
MODELS = {"tiny": ("embedded:tiny", 4), "bigvocab": ("bigvocab", 2), "qwen2_0_5b": ("qwen2_0_5b", 2)}
BETAS = (0.0, 0.04)
DEFAULTS = {"full": {"reps": 1, "steps": None, "timing_warmup": 2},  # steps None: one epoch of the prompts
            "quick": {"reps": 1, "steps": 5, "timing_warmup": 1}}


def make_plan(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve the mode's defaults under the flags given: everything a run needs, JSON-serialisable."""
    mode = "quick" if args.quick else "full"
    d = dict(DEFAULTS[mode])
    for k in d:
        if getattr(args, k, None) is not None:
            d[k] = getattr(args, k)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise SystemExit(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    betas = [float(b) for b in args.betas.split(",")] if args.betas else list(BETAS)
    if any(b < 0 for b in betas) or not betas:
        raise SystemExit(f"--betas: non-negative numbers, got {args.betas!r}")
    return {"mode": mode, "quick": bool(args.quick), "models": models, "betas": betas, "prompts": args.prompts,
            "num_generations": args.num_generations, "max_completion_length": args.max_completion_length,
            "batch_prompts": {m: args.batch_prompts or MODELS[m][1] for m in models},
            "learning_rate": args.learning_rate, "seed": args.seed, "threads": args.threads,
            "device": args.device, "dtype": args.dtype, "max_prompt_length": 512, "output": args.output,
            "markdown": args.markdown, "select_batches": bool(args.quick), "sequential": bool(args.sequential),
            "agreement_prompts": args.agreement_prompts, **d}


def build_model(name: str, tokenizer, out: Path, plan: dict[str, Any]) -> tuple[Path, int]:
    """Save the model ``name`` (with the tokenizer) once: every worker loads these files."""
    from benchlib.models import SHAPES, build_model_dir

    from align.models.loading import load_model

    source = MODELS[name][0]
    if source.startswith("embedded:"):
        model = load_model(source, plan["dtype"])
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return out, sum(p.numel() for p in model.parameters())
    return build_model_dir(SHAPES[source], tokenizer, out, seed=plan["seed"], dtype=plan["dtype"],
                           max_length=plan["max_prompt_length"] + plan["max_completion_length"])


def prompt_order(plan: dict[str, Any], tokenizer, batch: int) -> tuple[list[int], dict[str, Any]]:
    """The prompts' order (indices into the task's rows) and the data facts: the full run takes them in order, one
    epoch; --quick picks a few of the full run's batches (benchlib.batches)."""
    from align.data.prompts import load_prompts, tokenize_prompts

    examples, _ = load_prompts(plan["prompts"])
    tokenized, truncated = tokenize_prompts(examples, tokenizer, max_prompt_length=plan["max_prompt_length"])
    lengths = [len(t.prompt_ids) for t in tokenized]
    g, c = plan["num_generations"], plan["max_completion_length"]
    n_batches = len(lengths) // batch
    if n_batches < 1:
        raise SystemExit(f"{len(lengths)} prompts, fewer than one batch of {batch}")
    costs = [(g * sum(p + c for p in lengths[k * batch:(k + 1) * batch]),
              batch * g * (max(lengths[k * batch:(k + 1) * batch]) + c)) for k in range(n_batches)]
    info: dict[str, Any] = {"source": plan["prompts"], "prompts": len(lengths), "prompt_tokens_min": min(lengths),
                            "prompt_tokens_max": max(lengths), "prompts_truncated": truncated}
    steps = plan["steps"] or n_batches
    if plan["select_batches"]:
        chosen, info["selected_from"] = pick(costs, steps, plan["timing_warmup"])
    else:
        chosen = [k % n_batches for k in range(steps)]
    order = [i for k in chosen for i in range(k * batch, (k + 1) * batch)]
    if len(set(order)) < len(order):
        raise SystemExit(f"{steps} steps of {batch} prompts need more than the {len(lengths)} prompts")
    return order, {**info, "steps": steps}


def run_model(name: str, plan: dict[str, Any], work: Path, *, in_process: bool, log) -> dict[str, Any]:
    """Every configuration of one model, ``reps`` times; its results and facts."""
    from benchlib.grpo_worker import run_worker

    from align.models.loading import load_tokenizer

    tokenizer = load_tokenizer("embedded:tiny")
    model_dir, n_params = build_model(name, tokenizer, work / name / "model", plan)
    batch = plan["batch_prompts"][name]
    order, data = prompt_order(plan, tokenizer, batch)
    log(f"{name}: {n_params / 1e6:.1f} M parameters, {data['steps']} steps of {batch} prompts x "
        f"{plan['num_generations']}")
    spec = {k: plan[k] for k in ("prompts", "max_prompt_length", "num_generations", "max_completion_length",
                                 "learning_rate", "seed", "threads", "device", "dtype", "timing_warmup", "betas")}
    spec.update(model=name, model_dir=str(model_dir), order=order, batch_prompts=batch, steps=data["steps"],
                run_dir=str(work / name / "runs"))
    groups = [[config_name(side, b) for side in ("align", "trl")] for b in plan["betas"]]
    configs = [c for group in groups for c in group]
    results: dict[str, list[dict]] = {c: [] for c in configs}
    for rep in range(plan["reps"]):
        t0 = time.perf_counter()
        # align and TRL at one β take turns; the β values one after another (two processes alive at once)
        got = process.run_configs(SCRIPT, groups, spec, work / name / f"spec-rep{rep}.json", work / name,
                                  f"rep{rep}", run_worker=run_worker, in_process=in_process,
                                  sequential=plan["sequential"], cwd=REPO)
        for c in configs:
            r = got[c]
            results[c].append(r)
            m = r["timed_mean"]
            log(f"{name} rep {rep + 1} {c}: {r['steps_per_second']:.3f} steps/s (generation "
                f"{m['generation_seconds'] or 0:.2f} s/step), peak RSS {r['peak_rss_mb']:.0f} MB")
        log(f"{name} rep {rep + 1}: {time.perf_counter() - t0:.1f} s")
    return {"parameters": n_params, "batch_prompts": batch, "data": data, "results": results, "spec": spec}


def agreement(plan: dict[str, Any], work: Path, *, in_process: bool) -> dict[str, Any]:
    """The fixed-batch loss agreement on the tiny model (benchlib.grpo_agreement), in a process of its own."""
    from benchlib.grpo_agreement import loss_agreement

    from align.models.loading import load_tokenizer

    tokenizer = load_tokenizer("embedded:tiny")
    model_dir, _ = build_model("tiny", tokenizer, work / "agreement" / "model", plan)
    spec = {k: plan[k] for k in ("prompts", "max_prompt_length", "num_generations", "max_completion_length",
                                 "learning_rate", "seed", "threads", "device", "dtype", "betas")}
    spec.update(model_dir=str(model_dir), order=list(range(plan["agreement_prompts"])), timing_warmup=0, steps=1,
                batch_prompts=plan["agreement_prompts"], run_dir=str(work / "agreement" / "runs"))
    if in_process:
        return loss_agreement(spec, work / "agreement")
    spec_file = work / "agreement" / "spec.json"
    spec_file.write_text(json.dumps(spec))
    return process.spawn_worker(SCRIPT, "agreement", spec_file, work / "agreement" / "result.json",
                                work / "agreement" / "log.txt", cwd=REPO)


def run_benchmark(plan: dict[str, Any], work: Path, *, in_process: bool = False, log=print) -> dict[str, Any]:
    """The loss agreement, then every model's configurations; the summary."""
    machine = machine_info(plan["device"])
    if plan.get("threads"):
        os.environ["OMP_NUM_THREADS"] = str(plan["threads"])  # the workers' thread pools, set before their imports
    t0 = time.perf_counter()
    agreed = agreement(plan, work, in_process=in_process)
    log(f"loss agreement: max |Δloss| {agreed['max_abs_diff']:.2e}, max |Δgrad| {agreed['grad_max_abs_diff']:.2e} "
        f"({time.perf_counter() - t0:.1f} s)")
    models = {m: run_model(m, plan, work, in_process=in_process, log=log) for m in plan["models"]}
    return summarize(plan, models, agreed, machine)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("mode and output")
    g.add_argument("--quick", action="store_true", help="each model on 5 of its full run's batches (1 untimed: "
                   "its costliest; 4 timed, matching its mean tokens per step): < 12 minutes")
    g.add_argument("--output", metavar="FILE.json", help="write every measurement, ratios and the loss agreement")
    g.add_argument("--markdown", metavar="PATH", help="also write the table as markdown to PATH")
    g.add_argument("--compare-to", metavar="FULL.json", help="compare this run's ratios with another run's JSON "
                   "(e.g. --quick against the full run) under `compared_to`")
    g.add_argument("--models", default="tiny,bigvocab", help=f"models, in order (default tiny,bigvocab; from "
                   f"{','.join(MODELS)})")
    g.add_argument("--betas", help="KL weights β, comma-separated (default 0,0.04)")
    g.add_argument("--workdir", metavar="DIR", help="where the models, specs and logs go (default: a temporary "
                   "directory, removed afterwards)")
    g.add_argument("--keep-workdir", action="store_true", help="keep the work directory (worker logs)")
    g.add_argument("--sequential", action="store_true", help="run the configurations one after another instead of "
                   "taking turns step by step")
    g.add_argument("--in-process", action="store_true", help="run every configuration in this process (debugging "
                   "only: peak memory is then not per configuration)")
    r = ap.add_argument_group("run settings")
    r.add_argument("--reps", type=int, help="repetitions of each model's configurations (1)")
    r.add_argument("--steps", type=int, help="optimizer steps per run, warm-up included (full: one epoch of the "
                   "prompts; --quick: 5)")
    r.add_argument("--timing-warmup", type=int, help="first steps run but not timed, on both sides (2; --quick: 1)")
    r.add_argument("--batch-prompts", type=int, help="prompts per step for every model (default: tiny 4, "
                   "bigvocab 2)")
    r.add_argument("--num-generations", type=int, default=8, help="G, completions per prompt (8)")
    r.add_argument("--max-completion-length", type=int, default=32, help="completion token limit (32)")
    r.add_argument("--prompts", default=PROMPTS, help=f"prompt source (default {PROMPTS})")
    r.add_argument("--agreement-prompts", type=int, default=4, help="prompts in the fixed loss-agreement batch (4)")
    r.add_argument("--learning-rate", type=float, default=1e-5, help="AdamW learning rate, linear decay (1e-5)")
    r.add_argument("--seed", type=int, default=0, help="seed of the model init, the trainers and the fixed batch")
    r.add_argument("--threads", type=int, default=1, help="torch threads per process (1)")
    r.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device (cpu)")
    r.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="model dtype (float32)")
    w = ap.add_argument_group("internal")
    w.add_argument("--worker", help="run one configuration (or 'agreement') from --spec and write --result")
    w.add_argument("--spec", help="worker spec: a JSON file")
    w.add_argument("--result", help="worker result JSON file")
    w.add_argument("--turns", metavar="R,W", help="file descriptors of the coordinator's turn pipes")
    return ap


def worker_main(args: argparse.Namespace) -> dict[str, Any]:
    """``--worker``: one configuration (or the loss agreement) in this process; its JSON to ``--result``."""
    process.set_turns(args.turns)
    spec = json.loads(Path(args.spec).read_text())
    if args.worker == "agreement":
        from benchlib.grpo_agreement import loss_agreement

        result = loss_agreement(spec, Path(spec["run_dir"]))
    else:
        from benchlib.grpo_worker import run_worker

        result = run_worker(args.worker, spec)
    Path(args.result).write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker_main(args)
    plan = make_plan(args)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here")
    return run_and_report("bench_grpo", plan, args, argv, run_benchmark, render_markdown, repo=REPO,
                          markdown_is_default=False)


if __name__ == "__main__":
    main()
