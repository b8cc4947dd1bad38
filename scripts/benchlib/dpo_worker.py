"""scripts/bench_dpo.py's data preparation and its worker: one configuration in this process."""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchlib import process
from benchlib.batches import Cost, pick, tokens_over
from benchlib.memory import maxrss_mb, ru_maxrss_mb
from benchlib.models import load_measured_policy
from benchlib.timing import quiet, steady_state, sync, timer_callback, timing_warmup

CONFIGS = ("trl_live", "trl_precompute", "align_cold", "align_warm")


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
        chosen, picked = pick(batch_costs(items, b), plan["steps"], plan["timing_warmup"])
        info["selected_from"] = {"pairs": len(items), **picked}
        items = [items[i] for k in chosen for i in range(k * b, (k + 1) * b)]
        trl_rows = [trl_rows[i] for k in chosen for i in range(k * b, (k + 1) * b)]
        info["pairs"] = len(items)
    seq = [len(it["prompt_ids"]) + len(x) for it in items for x in it["response_ids"]]
    info.update(mean_tokens_per_sequence=round(statistics.mean(seq), 1), max_tokens_per_sequence=max(seq))
    return {"items": items, "trl_rows": trl_rows, "info": info}


def batch_costs(items: list[dict], batch: int) -> list[Cost]:
    """(non-padding tokens, padded tokens in the one-row-per-sequence layout) of each sequential batch."""
    out = []
    for k in range(len(items) // batch):
        lengths = [len(it["prompt_ids"]) + len(r) for it in items[k * batch : (k + 1) * batch]
                   for r in it["response_ids"]]
        out.append((sum(lengths), max(lengths) * len(lengths)))
    return out


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


def _loop_result(trainer, timer, spec: dict[str, Any], items: list[dict]) -> dict[str, Any]:
    """Steady-state rates (:func:`benchlib.timing.steady_state`, the same on both sides), tokens and losses."""
    steps = trainer.state.global_step
    out = steady_state(timer, steps, timing_warmup(spec, steps))
    real, padded = tokens_over(batch_costs(items, spec["batch_size"]), steps, first=out["warmup_steps"])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    return {**out, "tokens": real, "padded_tokens": padded, "tokens_per_second": real / out["timed_seconds"],
            "losses": losses, "token_stats": trainer.token_stats("run") if hasattr(trainer, "token_stats") else None}


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
            sync(device)
            t0 = time.perf_counter()
            for idx in batches:
                batch = collate([{"list": lists[i]} for i in idx])
                model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                      use_cache=False)
            sync(device)
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
    sync(device)
    t0 = time.perf_counter()
    cache = reference()
    stats = cache.prefetch(lists)
    refs = cache.list_logps(lists)
    sync(device)
    out["setup_seconds"] = time.perf_counter() - t0  # fingerprints + compute (cold) or load and verify (warm)
    out["cache"] = {"computed": stats.computed, "hits": stats.hits, "ensure_seconds": stats.seconds}
    if cold and stats.computed != n_entries or not cold and stats.hits != n_entries:
        raise RuntimeError(f"expected a {'cold' if cold else 'warm'} cache, got {stats.to_dict()}")

    timer = timer_callback(device)
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
    quiet(trainer)
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
            sync(device)
            t = time.perf_counter()
            try:
                return super()._precompute_ref_logps(*a, **kw)
            finally:
                sync(device)
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
    timer = timer_callback(device)
    t0 = time.perf_counter()
    trainer = TimedDPOTrainer(model=policy, ref_model=ref, args=config, train_dataset=datasets.Dataset.from_list(
        trl_rows), processing_class=tokenizer, callbacks=[timer])
    out["init_seconds"] = time.perf_counter() - t0  # includes TRL's tokenization (and its precompute)
    quiet(trainer)
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

    from align.models.loading import load_tokenizer

    hf_logging.set_verbosity_error()
    if config not in CONFIGS:
        raise ValueError(f"unknown configuration {config!r}")
    process.start_worker(config.startswith("trl"), ("align.pipeline", "align.trainers"), spec.get("threads"))
    device = spec["device"]
    out: dict[str, Any] = {"config": config, "rss_after_imports_mb": maxrss_mb()}
    data = json.loads(Path(spec["data_file"]).read_text())
    items, trl_rows = data["items"], data["trl_rows"]
    tokenizer = load_tokenizer(spec["model_dir"])
    policy = load_measured_policy(spec, out)
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
    out["waited_for_turns_seconds"] = process.TURNS.waited
    out["turns"] = process.TURNS.finish()
    return out


