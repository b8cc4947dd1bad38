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
import dataclasses
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
HH = REPO.parent / "shared" / "data" / "hh_rlhf_harmless_base.jsonl.gz"  # as tests/conftest.py
DEFAULT_MARKDOWN = "docs/benchmarks.md"
CONFIGS = ("trl_live", "trl_precompute", "align_cold", "align_warm")
LABELS = {"trl_live": "TRL live reference", "trl_precompute": "TRL precompute_ref_log_probs",
          "align_cold": "align, cold cache (build + train)", "align_warm": "align, warm cache"}
# ratio key -> (comparison, target)
TARGETS = {"align_warm_vs_trl_live": (">=", 1.6), "align_warm_vs_trl_precompute": (">=", 1.3),
           "peak_memory_vs_trl_live": ("<=", 0.65), "cache_build_vs_bare_forward": ("<=", 0.8)}
BIGVOCAB_MEMORY_TARGET = 0.5  # peak_memory_vs_trl_live on the large-vocabulary model
ALIGN_LAYOUTS = ("packed", "per_list", "padded")

# Model shapes. cpu (and quick, so that its ratios are the full run's): a Llama of ~27 M parameters with the
# embedded 4096-token tokenizer (compute dominates on CPU); bigvocab: a 2-layer body with Qwen2's vocabulary;
# cuda: Qwen2-0.5B's dimensions (its 151,936-row embedding included).
MODELS = {
    "cpu": {"arch": "llama", "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
            "num_attention_heads": 8, "num_key_value_heads": 8},
    "quick": {"arch": "llama", "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 8},
    "bigvocab": {"arch": "llama", "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 2,
                 "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 151936},
    "cuda": {"arch": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "rope_theta": 1e6,
             "rms_norm_eps": 1e-6, "max_position_embeddings": 4096},
}
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


def model_config(plan: dict[str, Any], tokenizer):
    """The transformers config of the benchmark model (vocabulary from the tokenizer unless the shape fixes it)."""
    from transformers import LlamaConfig, Qwen2Config

    m = dict(plan["model"])
    arch = m.pop("arch")
    vocab = max(m.pop("vocab_size", 0), len(tokenizer))
    common = {"vocab_size": vocab, "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
              "bos_token_id": None, "tie_word_embeddings": True}
    if arch == "qwen2":
        return Qwen2Config(**m, **common)
    length = plan["max_prompt_length"] + plan["max_response_length"]
    return LlamaConfig(**m, max_position_embeddings=max(1024, length), **common)


def count_params(config) -> int:
    """Parameters of ``config``'s causal LM, counted on the meta device (nothing allocated)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def build_model_dir(plan: dict[str, Any], tokenizer, out: Path) -> tuple[Path, int]:
    """Build the random model once (seeded) and save it with the tokenizer: every run loads these weights."""
    from transformers import AutoModelForCausalLM

    from align.models.tiny import TinySpec, build_model

    m = plan["model"]
    if m["arch"] == "llama" and not m.get("vocab_size"):  # align's own embedded-model builder, at this size
        spec = TinySpec(vocab_size=len(tokenizer), hidden_size=m["hidden_size"],
                        intermediate_size=m["intermediate_size"], num_hidden_layers=m["num_hidden_layers"],
                        num_attention_heads=m["num_attention_heads"], num_key_value_heads=m["num_key_value_heads"],
                        max_position_embeddings=max(1024, plan["max_prompt_length"] + plan["max_response_length"]),
                        seed=plan["seed"])
        model = build_model(tokenizer, spec)
    else:  # a fixed vocabulary (bigvocab: Qwen2's, larger than the tokenizer's; the extra rows are never fed)
        torch.manual_seed(plan["seed"])
        model = AutoModelForCausalLM.from_config(model_config(plan, tokenizer))
    if plan["dtype"] != "float32":
        model = model.to(getattr(torch, plan["dtype"]))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, sum(p.numel() for p in model.parameters())


def _with_context(examples: list, k: int) -> list:
    """Each conversational example with the k-1 HH dialogues before it prefixed as earlier turns (each closed by
    its preferred answer), to reach long sequences; k=1 returns the examples unchanged."""
    from align.data.example import RankedExample

    if k <= 1:
        return examples
    out = []
    for i, ex in enumerate(examples):
        turns: list[dict[str, str]] = []
        for prev in examples[max(0, i - k + 1) : i]:
            best = max(range(len(prev.scores)), key=lambda j: prev.scores[j])
            turns += list(prev.prompt) + [{"role": "assistant", "content": prev.responses[best]}]
        out.append(RankedExample(turns + list(ex.prompt), ex.responses, ex.scores, ex.label_kind, ex.row, ex.meta))
    return out


def prepare_data(plan: dict[str, Any], tokenizer) -> dict[str, Any]:
    """The first ``rows`` usable HH pairs: align's token ids, the same pairs as TRL conversational rows, and the
    expected (prompt, chosen, rejected) ids TRL's own tokenization must reproduce."""
    from align.data.loaders import load_examples
    from align.data.tokenize import tokenize_examples

    examples, report = load_examples(plan["data"])
    examples = [e for e in examples if isinstance(e.prompt, list) and len(e.responses) == 2
                and e.scores[0] != e.scores[1]]
    examples = _with_context(examples, plan["context_dialogues"])
    lists, dropped = [], 0
    chunk = max(4 * plan["rows"], 64)
    for start in range(0, len(examples), chunk):  # tokenize only as much as needed
        got, trunc = tokenize_examples(examples[start : start + chunk], tokenizer,
                                       max_prompt_length=plan["max_prompt_length"],
                                       max_response_length=plan["max_response_length"], truncation="drop")
        dropped += sum(trunc.dropped.values())
        lists += got
        if len(lists) >= plan["rows"]:
            break
    lists = lists[: plan["rows"]]
    if not lists:
        raise SystemExit(f"no usable pairs in {plan['data']} within the length limits")
    by_row = {e.row: e for e in examples}
    items, trl_rows = [], []
    for t in lists:
        ex = by_row[t.row]
        c, r = (0, 1) if t.scores[0] > t.scores[1] else (1, 0)
        items.append({"prompt_ids": list(t.prompt_ids), "response_ids": [list(x) for x in t.response_ids],
                      "scores": list(t.scores), "row": t.row, "chosen": c})
        trl_rows.append({"prompt": ex.prompt, "chosen": [{"role": "assistant", "content": ex.responses[c]}],
                         "rejected": [{"role": "assistant", "content": ex.responses[r]}]})
    info = {"source": plan["data"], "rows_read": report.rows_read, "pairs": len(lists),
            "dropped_over_length": dropped, "context_dialogues": plan["context_dialogues"]}
    if plan.get("select_batches"):
        b = plan["batch_size"]
        chosen = representative_batches(items, b, plan["steps"], plan["timing_warmup"])
        info["selected_from"] = {"pairs": len(items), "batches": len(items) // b, "picked": chosen,
                                 **batch_profile(items, b, plan["timing_warmup"], prefix="full_")}
        items = [items[i] for k in chosen for i in range(k * b, (k + 1) * b)]
        trl_rows = [trl_rows[i] for k in chosen for i in range(k * b, (k + 1) * b)]
        info["selected_from"].update(batch_profile(items, b, timing_warmup({"timing_warmup": plan["timing_warmup"]},
                                                                         plan["steps"]), prefix="picked_"))
        info["pairs"] = len(items)
    seq = [len(it["prompt_ids"]) + len(x) for it in items for x in it["response_ids"]]
    info.update(mean_tokens_per_sequence=round(statistics.mean(seq), 1), max_tokens_per_sequence=max(seq))
    return {"items": items, "trl_rows": trl_rows, "info": info}


def _batch_costs(items: list[dict], batch: int) -> list[tuple[int, int]]:
    """(non-padding tokens, padded tokens in the one-row-per-sequence layout) of each sequential batch."""
    out = []
    for k in range(len(items) // batch):
        lengths = [len(it["prompt_ids"]) + len(r) for it in items[k * batch : (k + 1) * batch]
                   for r in it["response_ids"]]
        out.append((sum(lengths), max(lengths) * len(lengths)))
    return out


def batch_profile(items: list[dict], batch: int, warmup: int, prefix: str = "") -> dict[str, float]:
    """Mean tokens per timed step (after ``warmup`` batches) and the longest padded batch, of sequential batches."""
    costs = _batch_costs(items, batch)
    timed = costs[warmup:] or costs
    return {f"{prefix}tokens_per_timed_step": round(statistics.mean(c[0] for c in timed), 1),
            f"{prefix}padded_tokens_per_timed_step": round(statistics.mean(c[1] for c in timed), 1),
            f"{prefix}max_padded_tokens_per_step": max(c[1] for c in costs)}


def representative_batches(items: list[dict], batch: int, steps: int, warmup: int) -> list[int]:
    """Indices of ``steps`` of the full run's sequential batches for a short run whose ratios should be the full
    run's. What a step costs depends on its batch (TRL pads every row to the batch's longest sequence, align feeds
    the real tokens), and peak memory on the costliest batch. So the untimed warm-up steps are the full run's first
    batch(es) and then its costliest one (after the first optimizer step, as in the full run, where Adam's state
    is already allocated when the longest batch comes), and the timed steps are the set of the full run's timed
    batches whose mean real and mean padded tokens per step are both closest (relative error, the larger of the
    two) to the full run's timed means, in their original order. No batch is used twice."""
    from itertools import combinations

    costs = _batch_costs(items, batch)
    n = len(costs)
    if steps > n:
        raise SystemExit(f"--quick picks {steps} of the full run's {n} batches; ask for fewer steps")
    w = max(0, min(warmup, steps - 1))
    costliest = max(range(n), key=lambda k: (costs[k][1], costs[k][0]))
    head = [k for k in range(n) if k != costliest][: max(w - 1, 0)] + [costliest] if w else []
    full_timed = list(range(min(warmup, n - 1), n))
    target = [statistics.mean(costs[k][j] for k in full_timed) for j in (0, 1)]
    pool = [k for k in full_timed if k not in head]
    m = steps - w
    if len(pool) < m:
        pool = [k for k in range(n) if k not in head]

    def error(ks) -> float:
        return max(abs(statistics.mean(costs[k][j] for k in ks) - target[j]) / target[j] for j in (0, 1))

    if math.comb(len(pool), m) <= 200_000:
        timed = min(combinations(pool, m), key=error)
    else:  # too many subsets to try: evenly spaced quantiles of the padded size
        by_size = sorted(pool, key=lambda k: (costs[k][1], k))
        timed = sorted({by_size[int((i + 0.5) * len(by_size) / m)] for i in range(m)})
    return head + list(timed)


def trained_tokens(items: list[dict], steps: int, batch: int, first: int = 0) -> tuple[int, int]:
    """(non-padding tokens, padded tokens) of the one-row-per-sequence layout over steps ``first..steps-1`` of the
    sequential, drop-last batches."""
    costs = _batch_costs(items, batch)
    timed = [costs[s % len(costs)] for s in range(first, steps)]
    return sum(c[0] for c in timed), sum(c[1] for c in timed)


# ---------------------------------------------------------------------------------------------------------------
# Worker: one configuration in this process
# ---------------------------------------------------------------------------------------------------------------


def ru_maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MiB (Linux reports KiB). In a child started by a large parent this is
    at least the parent's peak: Linux carries the RSS high-water mark across fork/vfork + exec."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def maxrss_mb() -> float:
    """This process's own peak resident set size so far: ``VmHWM`` of /proc/self/status (the high-water mark of
    this exec's address space only), else ``ru_maxrss`` where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return ru_maxrss_mb()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _training_kwargs(spec: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """TrainingArguments fields shared verbatim by both sides."""
    cuda = spec["device"] == "cuda"
    return {"output_dir": output_dir, "per_device_train_batch_size": spec["batch_size"], "max_steps": spec["steps"],
            "learning_rate": spec["learning_rate"], "lr_scheduler_type": "linear", "warmup_steps": 0,
            "weight_decay": 0.0, "max_grad_norm": 1.0, "gradient_accumulation_steps": 1, "logging_steps": 1,
            "save_strategy": "no", "eval_strategy": "no", "report_to": "none", "seed": spec["seed"],
            "data_seed": spec["seed"], "use_cpu": not cuda, "bf16": spec["dtype"] == "bfloat16", "fp16": False,
            "gradient_checkpointing": spec["gradient_checkpointing"], "dataloader_drop_last": True,
            "dataloader_num_workers": 0, "train_sampling_strategy": "sequential", "disable_tqdm": True}


class Turns:
    """This worker's side of the interleaving: the coordinator (``run_interleaved``) gives one worker at a time the
    turn, so no two configurations ever compute at once and each step of each one is timed on an otherwise idle
    machine, a few seconds from the others' same step (a slow minute of a shared machine then hits every
    configuration alike instead of whichever ran during it). A worker starts when it is handed the turn, hands it
    back at the start of every optimizer step (``wait``) and keeps it from its last step to its exit. Without file
    descriptors (in-process runs) there is nobody to wait for."""

    def __init__(self, fds: str | None = None):
        self.read_fd, self.write_fd = (int(x) for x in fds.split(",")) if fds else (None, None)
        self.waited = 0.0
        self.intervals: list[tuple[float, float]] = []  # (start, end) of each turn, time.monotonic()
        self._since = time.monotonic()

    def _take(self) -> None:
        if self.read_fd is not None and not os.read(self.read_fd, 1):
            raise SystemExit("the benchmark's coordinator is gone")
        self._since = time.monotonic()

    def start(self) -> None:
        """Block until the first turn."""
        self._take()

    def wait(self) -> float:
        """Hand the turn back, block until it comes again; returns (and adds up) the seconds spent waiting."""
        if self.read_fd is None:
            return 0.0
        t = time.perf_counter()
        self.intervals.append((self._since, time.monotonic()))
        os.write(self.write_fd, b"y")
        self._take()
        waited = time.perf_counter() - t
        self.waited += waited
        return waited

    def finish(self) -> list[tuple[float, float]]:
        """The turns taken, the last one (to now) included."""
        return [*self.intervals, (self._since, time.monotonic())] if self.read_fd is not None else []


TURNS = Turns()


def _timer_callback(device: str):
    from transformers import TrainerCallback

    class LoopTimer(TrainerCallback):
        """Wall time of the training loop and of each optimizer step's end, on a clock that stops while this worker
        waits for its turn (``TURNS``, at each step's start: the step's own work, its logging included, is timed)."""

        def __init__(self):
            self.begin = self.end = None
            self.step_ends: list[float] = []
            self.paused = 0.0

        def clock(self) -> float:
            return time.perf_counter() - self.paused

        def on_train_begin(self, args, state, control, **kw):
            _sync(device)
            self.begin = self.clock()

        def on_step_begin(self, args, state, control, **kw):
            _sync(device)
            self.paused += TURNS.wait()

        def on_step_end(self, args, state, control, **kw):
            _sync(device)
            self.step_ends.append(self.clock())

        def on_train_end(self, args, state, control, **kw):
            _sync(device)
            self.end = self.clock()

    return LoopTimer()


def _quiet(trainer) -> None:
    """No per-step printing of the logs (disable_tqdm installs a PrinterCallback), on both sides alike."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def timing_warmup(spec: dict[str, Any], steps: int) -> int:
    """Untimed warm-up steps: ``timing_warmup``, leaving at least one timed step."""
    return max(0, min(spec.get("timing_warmup", 0), steps - 1))


def _loop_result(trainer, timer, spec: dict[str, Any], items: list[dict]) -> dict[str, Any]:
    """Steady-state rates: steps after the warm-up, from the end of the last warm-up step (the loop's start when
    there is none) to the end of the last step; the same on both sides."""
    steps = trainer.state.global_step
    seconds = timer.end - timer.begin
    w = timing_warmup(spec, steps)
    start = timer.step_ends[w - 1] if w else timer.begin
    timed = timer.step_ends[-1] - start
    real, padded = trained_tokens(items, steps, spec["batch_size"], first=w)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    after_first = (steps - 1) / (timer.end - timer.step_ends[0]) if steps > 1 else None
    return {"steps": steps, "timed_steps": steps - w, "warmup_steps": w, "train_seconds": seconds,
            "timed_seconds": timed, "steps_per_second": (steps - w) / timed, "steps_per_second_all": steps / seconds,
            "steps_per_second_after_first": after_first, "tokens": real, "padded_tokens": padded,
            "tokens_per_second": real / timed, "step_seconds": [b - a for a, b in zip(
                [timer.begin, *timer.step_ends[:-1]], timer.step_ends)], "losses": losses,
            "token_stats": trainer.token_stats("run") if hasattr(trainer, "token_stats") else None}


def _bare_forward_seconds(model, lists, batch_size: int, pad_token_id: int, device: str) -> float:
    """One no-grad forward of ``model`` over ``lists`` in the cache build's batches (longest first, as
    ``align.forward.score_lists``), logits only: the floor a reference pass cannot beat."""
    from align.data.collate import ListCollator

    collate = ListCollator(pad_token_id)
    order = sorted(range(len(lists)), key=lambda i: -lists[i].num_tokens)
    batches = [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            first = collate([{"list": lists[i]} for i in batches[0]])  # untimed warm-up batch
            model(input_ids=first["input_ids"].to(device), attention_mask=first["attention_mask"].to(device),
                  use_cache=False)
            _sync(device)
            t0 = time.perf_counter()
            for idx in batches:
                batch = collate([{"list": lists[i]} for i in idx])
                model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                      use_cache=False)
            _sync(device)
            return time.perf_counter() - t0
    finally:
        model.train(was_training)


def _run_align(cold: bool, spec, policy, tokenizer, items, out: dict[str, Any]) -> None:
    from transformers import TrainingArguments

    from align.data.tokenize import TokenizedList
    from align.reference import reference_for
    from align.trainers import DPOLossConfig, DPOTrainer, ListDataset

    device = spec["device"]
    lists = [TokenizedList(tuple(it["prompt_ids"]), tuple(tuple(r) for r in it["response_ids"]),
                           tuple(it["scores"]), it["row"]) for it in items]

    layout = spec.get("align_layout", "packed")

    def reference():
        return reference_for(policy, tokenizer, cache_dir=spec["cache_dir"], batch_size=spec["ref_batch_size"],
                             progress=False, packing=layout != "padded")

    n_entries = sum(len(t.response_ids) for t in lists)
    if cold:
        if Path(spec["cache_dir"]).exists() and any(Path(spec["cache_dir"]).iterdir()):
            raise RuntimeError(f"cold run, but {spec['cache_dir']} is not empty")
        out["bare_forward_seconds"] = _bare_forward_seconds(policy, lists, spec["ref_batch_size"],
                                                            tokenizer.pad_token_id or 0, device)
    elif not (Path(spec["cache_dir"]).exists() and any(Path(spec["cache_dir"]).iterdir())):
        reference().prefetch(lists)  # run alone: fill first
        out["prefilled_cache"] = True
    _sync(device)
    t0 = time.perf_counter()
    cache = reference()
    stats = cache.prefetch(lists)
    refs = cache.list_logps(lists)
    _sync(device)
    out["setup_seconds"] = time.perf_counter() - t0  # fingerprints + compute (cold) or load and verify (warm)
    out["cache"] = {"computed": stats.computed, "hits": stats.hits, "ensure_seconds": stats.seconds}
    if cold and stats.computed != n_entries or not cold and stats.hits != n_entries:
        raise RuntimeError(f"expected a {'cold' if cold else 'warm'} cache, got {stats.to_dict()}")

    timer = _timer_callback(device)
    t0 = time.perf_counter()
    args = TrainingArguments(**_training_kwargs(spec, str(Path(spec["run_dir"]) / "align")))
    trainer = DPOTrainer(policy, args, DPOLossConfig(beta=spec["beta"]), ListDataset(lists, refs),
                         processing_class=tokenizer, callbacks=[timer], packing=layout != "padded")
    if layout == "per_list":  # the prompt once, but one pair per row (padded rows, no packing of pairs)
        trainer.data_collator = dataclasses.replace(trainer.data_collator, max_row_tokens=1)
    if not spec.get("chunked_logprobs", True):
        trainer.packing = dataclasses.replace(trainer.packing, chunked=False)
    out["forward"] = {"layout": layout, "packed": trainer.packing.packed, "chunked": trainer.packing.chunked,
                      "reason": trainer.packing.reason}
    _quiet(trainer)
    out["init_seconds"] = time.perf_counter() - t0
    trainer.train()
    out.update(_loop_result(trainer, timer, spec, items))


def _run_trl(precompute: bool, spec, policy, tokenizer, items, trl_rows, out: dict[str, Any]) -> None:
    import datasets
    from trl import DPOConfig, DPOTrainer

    from align.models.loading import load_model

    datasets.disable_progress_bars()
    device = spec["device"]

    class TimedDPOTrainer(DPOTrainer):
        """TRL's trainer, unchanged except that its reference precompute (run inside __init__) is timed."""

        precompute_seconds = 0.0

        def _precompute_ref_logps(self, *a, **kw):
            _sync(device)
            t = time.perf_counter()
            try:
                return super()._precompute_ref_logps(*a, **kw)
            finally:
                _sync(device)
                self.precompute_seconds += time.perf_counter() - t

    if not hasattr(DPOTrainer, "_precompute_ref_logps"):
        raise RuntimeError("this TRL has no DPOTrainer._precompute_ref_logps; update the precompute timing")
    ref = None
    if not precompute:  # a second copy of the same weights; with precompute TRL uses the policy itself, then none
        ref = load_model(spec["model_dir"], spec["dtype"]).to(device)
        out["rss_after_ref_load_mb"] = maxrss_mb()
    config = DPOConfig(**_training_kwargs(spec, str(Path(spec["run_dir"]) / "trl")), beta=spec["beta"],
                       loss_type=["sigmoid"], max_length=None, pad_to_multiple_of=None, disable_dropout=True,
                       precompute_ref_log_probs=precompute, precompute_ref_batch_size=spec["ref_batch_size"])
    timer = _timer_callback(device)
    t0 = time.perf_counter()
    trainer = TimedDPOTrainer(model=policy, ref_model=ref, args=config, train_dataset=datasets.Dataset.from_list(
        trl_rows), processing_class=tokenizer, callbacks=[timer])
    out["init_seconds"] = time.perf_counter() - t0  # includes TRL's tokenization (and its precompute)
    _quiet(trainer)
    out["setup_seconds"] = trainer.precompute_seconds if precompute else 0.0
    # TRL tokenized the text itself: are its ids exactly align's?
    ds = trainer.train_dataset
    same = 0
    for i, it in enumerate(items):
        row = ds[i]
        c = it["chosen"]
        same += (row["prompt_ids"] == it["prompt_ids"] and row["chosen_ids"] == it["response_ids"][c]
                 and row["rejected_ids"] == it["response_ids"][1 - c])
    out["identical_ids"] = {"rows": len(items), "identical": same, "trl_rows": len(ds)}
    trainer.train()
    out.update(_loop_result(trainer, timer, spec, items))


def run_worker(config: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this process and return its measurements (peak RSS is this process's)."""
    from transformers.utils import logging as hf_logging

    from align.models.loading import load_model, load_tokenizer

    hf_logging.set_verbosity_error()
    if config not in CONFIGS:
        raise ValueError(f"unknown configuration {config!r}")
    TURNS.start()
    if config.startswith("trl"):  # each side's own imports before the baseline
        import datasets  # noqa: F401
        import trl  # noqa: F401
    else:
        import align.pipeline  # noqa: F401
        import align.trainers  # noqa: F401
    one_time_init()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = spec["device"]
    out: dict[str, Any] = {"config": config, "rss_after_imports_mb": maxrss_mb()}
    data = json.loads(Path(spec["data_file"]).read_text())
    items, trl_rows = data["items"], data["trl_rows"]
    tokenizer = load_tokenizer(spec["model_dir"])
    torch.manual_seed(spec["seed"])
    policy = load_model(spec["model_dir"], spec["dtype"]).to(device)
    _sync(device)
    out["rss_after_model_load_mb"] = maxrss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if config.startswith("trl"):
        _run_trl(config == "trl_precompute", spec, policy, tokenizer, items, trl_rows, out)
    else:
        _run_align(config == "align_cold", spec, policy, tokenizer, items, out)
    out["worker_seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = maxrss_mb()
    out["ru_maxrss_mb"] = ru_maxrss_mb()
    out["peak_rss_above_imports_mb"] = out["peak_rss_mb"] - out["rss_after_imports_mb"]
    out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    out["waited_for_turns_seconds"] = TURNS.waited
    out["turns"] = TURNS.finish()
    return out


def one_time_init() -> None:
    """What either side would otherwise do lazily inside its first step, done before any clock, on both sides:
    importing the Trainer's optional back-ends and DeepSpeed's accelerator detection."""
    import transformers.trainer  # noqa: F401

    try:
        from deepspeed.accelerator import get_accelerator
    except ImportError:
        return
    get_accelerator()


WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
              "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}


def _worker_cmd(config: str, spec_file: Path, result_file: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", config, "--spec", str(spec_file),
            "--result", str(result_file)]


def _worker_result(config: str, returncode: int | None, result_file: Path, log_file: Path) -> dict[str, Any]:
    if returncode != 0 or not result_file.exists():
        tail = log_file.read_text()[-3000:] if log_file.exists() else ""
        raise RuntimeError(f"worker {config} failed (exit {returncode}); end of {log_file}:\n{tail}")
    return json.loads(result_file.read_text())


def spawn_worker(config: str, spec_file: Path, result_file: Path, log_file: Path,
                 timeout: float | None = None) -> dict[str, Any]:
    """``run_worker`` alone in a fresh interpreter (its own peak RSS); its output goes to ``log_file``."""
    with open(log_file, "w") as log:
        proc = subprocess.run(_worker_cmd(config, spec_file, result_file), cwd=REPO, env={**os.environ, **WORKER_ENV},
                              stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    return _worker_result(config, proc.returncode, result_file, log_file)


def run_interleaved(configs: list[str], spec_file: Path, work: Path, tag: str) -> dict[str, dict[str, Any]]:
    """Run one worker per configuration, each in its own interpreter (its own peak memory), taking turns: the
    first worker gets the turn and keeps it through its imports and setup (reference pass included) to the start
    of its first step, then the next worker is started the same way; then each worker in turn runs one optimizer
    step; a worker keeps the turn from its last step to its exit. Only one ever computes, so every timed phase of
    every configuration runs on an otherwise idle machine, and the configurations' steps alternate a few seconds
    apart instead of minutes apart."""
    running: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}

    def turn(w: dict[str, Any]) -> bool:
        """Give ``w`` the turn until it hands it back (True) or exits (False)."""
        os.write(w["go"], b"g")
        if os.read(w["ready"], 1):
            return True
        w["proc"].wait()
        w["log"].close()
        os.close(w["go"])
        os.close(w["ready"])
        results[w["config"]] = _worker_result(w["config"], w["proc"].returncode, w["result"], w["log_file"])
        return False

    try:
        for config in configs:
            go_r, go_w = os.pipe()
            ready_r, ready_w = os.pipe()
            result, log_file = work / f"result-{config}-{tag}.json", work / f"log-{config}-{tag}.txt"
            log = open(log_file, "w")
            proc = subprocess.Popen(_worker_cmd(config, spec_file, result) + ["--turns", f"{go_r},{ready_w}"],
                                    cwd=REPO, env={**os.environ, **WORKER_ENV}, stdout=log,
                                    stderr=subprocess.STDOUT, pass_fds=(go_r, ready_w))
            os.close(go_r)
            os.close(ready_w)
            w = {"config": config, "proc": proc, "go": go_w, "ready": ready_r, "result": result, "log": log,
                 "log_file": log_file}
            if turn(w):
                running.append(w)
        while running:
            running = [w for w in running if turn(w)]
    finally:
        for w in running:
            w["proc"].kill()
            w["proc"].wait()
            w["log"].close()
        for w in running:
            os.close(w["go"])
            os.close(w["ready"])
    return results


# ---------------------------------------------------------------------------------------------------------------
# Summary, table
# ---------------------------------------------------------------------------------------------------------------


def _median(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def load_average() -> list[str] | None:
    """1, 5 and 15-minute load averages: other work on the machine skews every timing here."""
    try:
        return [f"{x:.2f}" for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: str) -> dict[str, Any]:
    info = {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
            "load_average_at_start": load_average()}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "trl", "datasets", "accelerate", "align"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


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
        med = {k: _median(runs, k) for k in ("steps_per_second", "steps_per_second_after_first", "tokens_per_second",
                                              "peak_rss_mb", "peak_gpu_mb", "setup_seconds", "train_seconds",
                                              "init_seconds", "rss_after_imports_mb", "rss_after_model_load_mb",
                                              "peak_rss_above_imports_mb", "bare_forward_seconds",
                                              "steps_per_second_all", "timed_seconds")}
        med["cache_build_seconds"] = _median([{"v": r["cache"]["ensure_seconds"]} for r in runs if "cache" in r],
                                             "v")
        med["setup_plus_train_seconds"] = _median(
            [{"v": r["setup_seconds"] + r["train_seconds"]} for r in runs], "v")
        if plan["device"] == "cuda":
            peak = plan["peak_tflops"] * 1e12
            med["mfu"] = _median([{"v": 6 * n_params * r["tokens"] / r["train_seconds"] / peak} for r in runs], "v")
        configs[name] = {"median": med, "runs": runs}

    def med(name, key):
        return configs[name]["median"].get(key) if name in configs else None

    warm = med("align_warm", "steps_per_second")
    ratios = {
        "align_warm_vs_trl_live": _ratio(warm, med("trl_live", "steps_per_second")),
        "align_warm_vs_trl_precompute": _ratio(warm, med("trl_precompute", "steps_per_second")),
        "peak_memory_vs_trl_live": _ratio(med("align_warm", mem_key), med("trl_live", mem_key)),
        "cache_build_vs_bare_forward": _ratio(med("align_cold", "cache_build_seconds"),
                                              med("align_cold", "bare_forward_seconds")),
    }
    # Not the issue's ratios, context for them: RSS above the interpreter + libraries baseline of each process
    # (what training itself takes), and the setup + train time of the cold run against TRL's runs.
    extra = {
        "peak_rss_above_imports_vs_trl_live": _ratio(med("align_warm", "peak_rss_above_imports_mb"),
                                                     med("trl_live", "peak_rss_above_imports_mb")),
        "align_cold_setup_plus_train_vs_trl_live": _ratio(med("trl_live", "setup_plus_train_seconds"),
                                                          med("align_cold", "setup_plus_train_seconds")),
        "align_cold_setup_plus_train_vs_trl_precompute": _ratio(med("trl_precompute", "setup_plus_train_seconds"),
                                                                med("align_cold", "setup_plus_train_seconds")),
        "cache_build_vs_trl_precompute": _ratio(med("align_cold", "setup_seconds"),
                                                med("trl_precompute", "setup_seconds")),
        "cache_setup_with_fingerprint_vs_bare_forward": _ratio(med("align_cold", "setup_seconds"),
                                                               med("align_cold", "bare_forward_seconds")),
        "align_warm_vs_trl_live_whole_loop": _ratio(med("align_warm", "steps_per_second_all"),
                                                    med("trl_live", "steps_per_second_all")),
    }
    targets = {}
    goals = dict(TARGETS)
    if plan.get("model_shape") == "bigvocab":
        goals["peak_memory_vs_trl_live"] = ("<=", BIGVOCAB_MEMORY_TARGET)
    for k, (op, goal) in goals.items():
        v = ratios[k]
        targets[k] = {"target": f"{op} {goal}", "met": None if v is None else (v >= goal if op == ">=" else v <= goal)}
    for name in configs:  # per-row ratios for the table
        sps = med(name, "steps_per_second")
        configs[name]["median"]["vs_trl_live"] = _ratio(sps, med("trl_live", "steps_per_second"))
        configs[name]["median"]["vs_trl_precompute"] = _ratio(sps, med("trl_precompute", "steps_per_second"))

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


QUICK_TOLERANCE = 0.15  # --quick's ratios should be within 15% of the full run's


def compare_ratios(summary: dict[str, Any], other: dict[str, Any], source: str) -> dict[str, Any]:
    """Each ratio of this run against the same key of another run's JSON (typically --quick against the full
    run): relative difference and whether it is within ``QUICK_TOLERANCE``."""
    out: dict[str, Any] = {"file": source, "tolerance": QUICK_TOLERANCE, "ratios": {}}
    for key, value in summary["ratios"].items():
        ref = other.get("ratios", {}).get(key)
        rel = None if value is None or not ref else value / ref - 1
        out["ratios"][key] = {"this": value, "other": ref, "relative_difference": rel,
                              "within_tolerance": None if rel is None else abs(rel) <= QUICK_TOLERANCE}
    return out


def trained_tokens_from_runs(results: dict[str, list[dict]]) -> tuple[int | None, int | None]:
    for runs in results.values():
        for r in runs:
            return r["tokens"], r["padded_tokens"]
    return None, None


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


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
        f"Machine: {mach['platform']}, {mach['cpu_count']} CPUs (torch threads {mach['torch_threads']})"
        + (f", GPU {mach['gpu']}" if mach.get("gpu") else "")
        + (f", load average {' '.join(mach['load_average_at_start'])} at start, "
           f"{' '.join(mach['load_average_at_end'])} at end" if mach.get("load_average_at_end") else "")
        + f"; device {s['device']}.",
        f"Versions: python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, trl {v['trl']}, "
        f"datasets {v['datasets']}, accelerate {v['accelerate']}, align {v['align']}.",
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
        setup = "—" if name == "trl_live" else _fmt(x["setup_seconds"])
        lines.append(f"| {LABELS[name]} | {_fmt(x['steps_per_second'], '.3f')} | {_fmt(x['tokens_per_second'], '.0f')} "
                     f"| {_fmt(x[mem_key], '.0f')} | {setup} | {_fmt(x['vs_trl_live'])}× | "
                     f"{_fmt(x['vs_trl_precompute'])}× | {_fmt(x['setup_plus_train_seconds'])} |")
    if s["device"] == "cuda":
        lines += ["", "MFU (6·N·tokens / train seconds / peak, peak "
                  f"{s['peak_tflops']:g} TFLOP/s): "
                  + ", ".join(f"{LABELS[n]} {_fmt(summary['configs'][n]['median'].get('mfu'), '.1%')}"
                              for n in CONFIGS if n in summary["configs"])]
    lines += ["", "Ratios (targets are the issue's; reported, not enforced):", ""]
    names = {"align_warm_vs_trl_live": "align warm steps/s ÷ TRL live steps/s",
             "align_warm_vs_trl_precompute": "align warm steps/s ÷ TRL precompute steps/s",
             "peak_memory_vs_trl_live": f"align warm {mem} ÷ TRL live {mem}",
             "cache_build_vs_bare_forward": "align cache build scoring s ÷ one bare no-grad padded reference "
                                            "forward s"}
    for k, label in names.items():
        t = summary["targets"][k]
        met = "—" if t["met"] is None else ("met" if t["met"] else "not met")
        lines.append(f"- {label}: **{_fmt(summary['ratios'][k])}** (target {t['target']}: {met})")
    e = summary["extra_ratios"]
    lines += ["", "Context (not targets): align warm peak RSS above its process's import baseline ÷ the same for TRL "
              f"live: {_fmt(e['peak_rss_above_imports_vs_trl_live'])}; align cache build s ÷ TRL precompute s: "
              f"{_fmt(e['cache_build_vs_trl_precompute'])}; end to end (setup + train), align cold is "
              f"{_fmt(e['align_cold_setup_plus_train_vs_trl_live'])}× as fast as TRL live and "
              f"{_fmt(e['align_cold_setup_plus_train_vs_trl_precompute'])}× as fast as TRL precompute."]
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
    cmp = summary.get("compared_to")
    if cmp:
        lines += ["", f"Against `{Path(cmp['file']).name}` (within {cmp['tolerance']:.0%}?):", "",
                  "| ratio | this run | that run | difference | within |", "|---|---:|---:|---:|---|"]
        for key, c in cmp["ratios"].items():
            rel = c["relative_difference"]
            lines.append(f"| `{key}` | {_fmt(c['this'])} | {_fmt(c['other'])} | "
                         f"{'—' if rel is None else format(rel, '+.1%')} | "
                         f"{'—' if c['within_tolerance'] is None else ('yes' if c['within_tolerance'] else 'no')} |")
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def run_benchmark(plan: dict[str, Any], work: Path, *, in_process: bool = False, log=print) -> dict[str, Any]:
    """Build the model, prepare the data and run every configuration ``reps`` times (alternating)."""
    from align.models.loading import load_tokenizer

    machine = machine_info(plan["device"])
    tokenizer = load_tokenizer(plan["tokenizer"])
    model_dir, n_params = build_model_dir(plan, tokenizer, work / "model")
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
        spec_file = work / f"spec-rep{rep}.json"
        spec_file.write_text(json.dumps(spec))
        t0 = time.perf_counter()
        if in_process:
            got = {c: run_worker(c, spec) for c in plan["configs"]}
        elif plan.get("sequential"):
            got = {c: spawn_worker(c, spec_file, work / f"result-{c}-rep{rep}.json", work / f"log-{c}-rep{rep}.txt")
                   for c in plan["configs"]}
        else:
            got = run_interleaved(plan["configs"], spec_file, work, f"rep{rep}")
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
        global TURNS
        TURNS = Turns(args.turns)
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
        config = model_config(plan, tokenizer)
        plan["model_config"] = config.to_dict()
        plan["parameters"] = count_params(config)
        print(json.dumps(plan, indent=1, default=str))
        print(f"\nplan: {plan['mode']} mode, {type(config).__name__} with {plan['parameters'] / 1e6:.1f} M parameters; "
              f"{plan['reps']} x {plan['configs']} x {plan['steps']} steps of {plan['batch_size']} pairs. Not run "
              "(--dry-run).")
        return plan
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (try --dry-run)")

    from align.io import json_text

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_dpo-", dir=args.workdir))
    try:
        summary = run_benchmark(plan, work, in_process=args.in_process,
                                log=lambda msg: print(msg, file=sys.stderr, flush=True))
    finally:
        if not args.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}", file=sys.stderr)
    summary["wall_seconds"] = time.perf_counter() - t_start
    if args.compare_to:
        summary["compared_to"] = compare_ratios(summary, json.loads(Path(args.compare_to).read_text()),
                                                str(args.compare_to))
    command = "python scripts/bench_dpo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = render_markdown(summary, command.strip())
    print(table)
    if plan["output"]:
        Path(plan["output"]).write_text(json_text(summary) + "\n")
    if plan["markdown"]:
        path = Path(plan["markdown"])
        if args.markdown is None:  # the default lives in this repository, wherever we were started from
            path = REPO / path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table)
    print(f"wall time {summary['wall_seconds']:.1f} s", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
