"""Forward(+backward) speed and memory of the three list layouts, on real OASST lists and HH pairs.

Layouts (all give the same log-probs; tests/test_packed_forward.py checks it):

    padded          today's policy_forward: one right-padded row prompt + response per response, full logits
    packed          packed_forward(chunked=False): each prompt once, lists packed into rows, block mask,
                    head only at the scored positions ([T, V] logits)
    packed_chunked  packed_forward(chunked=True): as packed, log-probs from the hidden states in chunks of
                    --chunk-size tokens ([c, V] logits at a time, recomputed in backward)
    kv_cache        (scoring only) the prompts run once with use_cache, the cache is expanded to one copy per
                    response (DynamicCache.batch_select_indices), the responses run on it, right-padded

Modes: ``train`` times forward + backward of sum(logps) (the model in train mode, grads zeroed each step);
``score`` times a no-grad forward in eval mode. Models, randomly initialised from a fixed seed, with the
embedded tokenizer (align.models.tiny, 4096 BPE tokens trained on the shipped data):

    small     Llama, hidden 512, 8 layers, 8 heads / 4 KV heads, MLP 1536, vocab 4096, tied: ~27 M parameters
    bigvocab  the same body with 2 layers and a 151,936-token vocabulary (Qwen2's), tied: ~83 M parameters

Each (data, model, mode, layout) runs in a fresh subprocess (``--worker``): peak RSS is its own ``VmHWM`` from
/proc/self/status. Every run sees the same batches (lists shuffled with a fixed seed; --oasst-lists lists or
--hh-pairs pairs each); its first --warmup batches are untimed, the next --steps timed. The whole sweep is
repeated --reps times, layouts in reversed order on odd sweeps, so slow drifts in machine load hit every layout
alike. tokens/s counts the tokens of the unshared sequences (sum over responses of len(prompt) + len(response)),
the same numerator for every layout, over all timed batches; "fed" is what the model actually ran (padding
included; for kv_cache the prompt rectangle plus the response rectangle).

    python scripts/bench_forward.py --output bench_forward.json        # markdown table on stdout
    python scripts/bench_forward.py --quick                             # 1 warm-up + 1 timed batch, smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("ALIGN_DATA_DIR", str(REPO.parent / "shared" / "data"))  # embedded:tiny's tokenizer corpus

MODELS = {
    "small": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=None),
    "bigvocab": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=2, num_attention_heads=8,
                     num_key_value_heads=4, vocab_size=151_936),
}  # fmt: skip
LAYOUTS = {"train": ("padded", "packed", "packed_chunked"), "score": ("padded", "packed_chunked", "kv_cache")}


def load_lists(data: str, tokenizer, args) -> list:
    """Tokenized lists of one source, K <= 8, shuffled with a fixed seed."""
    import random

    from align.data.loaders import load_examples
    from align.data.tokenize import tokenize_examples
    from align.models.tiny import corpus_files

    source = next(p for p in corpus_files() if p.name.startswith("oasst" if data == "oasst" else "hh"))
    examples, _ = load_examples(str(source), max_rows=None if data == "oasst" else 400)
    lists, _ = tokenize_examples(examples, tokenizer, max_prompt_length=args.max_prompt,
                                 max_response_length=args.max_response)
    lists = [t for t in lists if len(t.response_ids) <= 8]
    random.Random(0).shuffle(lists)
    return lists


def kv_cache_logps(model, items, pad_id: int):
    """No-grad summed log-probs ``[B, K]``: prompts once (left-padded, cache kept), responses on the expanded cache."""
    import torch

    from align.data.collate import list_layout

    lists = [it["list"] for it in items]
    P = max(len(t.prompt_ids) for t in lists)
    prompt = torch.full((len(lists), P), pad_id)
    pmask = torch.zeros((len(lists), P), dtype=torch.long)
    for b, t in enumerate(lists):
        prompt[b, P - len(t.prompt_ids) :] = torch.tensor(t.prompt_ids)
        pmask[b, P - len(t.prompt_ids) :] = 1
    ppos = (pmask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=prompt, attention_mask=pmask, position_ids=ppos, use_cache=True, logits_to_keep=1)
    owner = torch.tensor([b for b, t in enumerate(lists) for _ in t.response_ids])
    resps = [r for t in lists for r in t.response_ids]
    R = max(len(r) for r in resps)
    ids = torch.full((len(resps), R), pad_id)
    rmask = torch.zeros((len(resps), R), dtype=torch.long)
    for n, r in enumerate(resps):
        ids[n, : len(r)] = torch.tensor(r)
        rmask[n, : len(r)] = 1
    cache = out.cache
    cache.batch_select_indices(owner)  # one copy of its prompt's keys/values per response
    out2 = model(input_ids=ids, attention_mask=torch.cat([pmask[owner], rmask], 1),
                 position_ids=ppos[owner, -1:] + 1 + torch.arange(R), cache=cache)
    logits = torch.cat([out.logits[owner], out2.logits[:, :-1]], 1)  # [N, R, V]: position j predicts ids[:, j]
    tok = -torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), ids, reduction="none") * rmask
    layout = list_layout(items)
    sums = torch.zeros(layout["list_mask"].shape)
    sums[owner, torch.tensor([k for t in lists for k in range(len(t.response_ids))])] = tok.sum(1)
    return sums


def worker(spec: dict) -> dict:
    """Run one configuration and return its measurements."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from align.data.collate import ListCollator
    from align.data.packing import PackedListCollator
    from align.forward import packed_forward, policy_forward

    torch.manual_seed(0)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(spec["tokenizer"])
    shape = dict(MODELS[spec["model"]])
    shape["vocab_size"] = shape["vocab_size"] or len(tokenizer)
    model = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                                         attn_implementation="sdpa"))
    lists = load_lists(spec["data"], tokenizer, argparse.Namespace(**spec["args"]))
    B, n = spec["lists_per_batch"], spec["warmup"] + spec["steps"]
    batches = [[{"list": t} for t in lists[i * B : (i + 1) * B]] for i in range(n)]
    pad = tokenizer.pad_token_id
    layout, train = spec["layout"], spec["mode"] == "train"
    model.train(train)
    seconds, tokens, fed, padding, logps = [], [], [], [], []
    for step, items in enumerate(batches):
        if layout == "padded":
            batch = ListCollator(pad)(items)
            fed_tokens, pad_tokens = batch["input_ids"].numel(), int((batch["attention_mask"] == 0).sum())
        elif layout != "kv_cache":
            batch = PackedListCollator(pad, max_row_tokens=spec["max_row_tokens"])(items)
            fed_tokens, pad_tokens = batch["input_ids"].numel(), int(batch["num_pad_tokens"])
        else:  # prompts [B, P_max] once, responses [N, R_max]
            lists = [it["list"] for it in items]
            prompts = [len(t.prompt_ids) for t in lists]
            resps = [len(r) for t in lists for r in t.response_ids]
            fed_tokens = len(prompts) * max(prompts) + len(resps) * max(resps)
            pad_tokens = fed_tokens - sum(prompts) - sum(resps)
        real = sum(len(it["list"].prompt_ids) + len(r) for it in items for r in it["list"].response_ids)
        start = time.perf_counter()
        with torch.set_grad_enabled(train):
            if layout == "padded":
                out = policy_forward(model, batch).logps
            elif layout == "kv_cache":
                out = kv_cache_logps(model, items, pad)
            else:
                out = packed_forward(model, batch, chunked=layout == "packed_chunked",
                                     chunk_size=spec["chunk_size"]).logps
            if train:
                out.sum().backward()
                model.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        if step >= spec["warmup"]:
            seconds.append(elapsed)
            tokens.append(real)
            fed.append(fed_tokens)
            padding.append(pad_tokens)
        logps.append(out.detach()[torch.isfinite(out.detach())].sum().item())
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    return {
        **{k: spec[k] for k in ("data", "model", "mode", "layout")},
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "seconds": seconds, "tokens": tokens, "fed": fed, "padding": padding,
        "peak_rss_mb": round(hwm_kb / 1024, 1),
        "logps_checksum": sum(logps),  # equal across layouts up to float error
    }


def aggregate(runs: list[dict]) -> dict:
    """One configuration over its repetitions: throughput over every timed batch, the largest peak RSS."""
    seconds = [x for r in runs for x in r["seconds"]]
    fed, padding = sum(x for r in runs for x in r["fed"]), sum(x for r in runs for x in r["padding"])
    return {
        **{k: runs[0][k] for k in ("data", "model", "mode", "layout", "params_m", "logps_checksum")},
        "timed_batches": len(seconds),
        "seconds_per_batch": sum(seconds) / len(seconds),
        "seconds_per_batch_by_rep": [sum(r["seconds"]) / len(r["seconds"]) for r in runs],
        "tokens_per_s": sum(x for r in runs for x in r["tokens"]) / sum(seconds),
        "fed_tokens_per_batch": fed / len(seconds),
        "pad_fraction": padding / fed,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", type=Path, help="write the results as JSON here")
    ap.add_argument("--data", default="oasst,hh")
    ap.add_argument("--models", default="small,bigvocab")
    ap.add_argument("--modes", default="train,score")
    ap.add_argument("--reps", type=int, default=2, help="sweeps over all configurations, interleaved")
    ap.add_argument("--steps", type=int, default=2, help="timed batches per run")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--oasst-lists", type=int, default=3, help="OASST lists per batch")
    ap.add_argument("--hh-pairs", type=int, default=8, help="HH pairs per batch")
    ap.add_argument("--max-prompt", type=int, default=256)
    ap.add_argument("--max-response", type=int, default=256)
    ap.add_argument("--max-row-tokens", type=int, default=None, help="packed row capacity (default: longest list)")
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--quick", action="store_true", help="1 warm-up + 1 timed batch")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.quick:
        args.steps, args.warmup, args.reps = 1, 1, 1
    from align.models.tiny import build_tokenizer, corpus_files

    runs: dict[tuple, list[dict]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        build_tokenizer(corpus_files(), 4096).save_pretrained(tmp)
        for rep in range(args.reps):  # whole sweeps, layouts in reversed order on odd sweeps: drift cancels out
            for data in args.data.split(","):
                for model in args.models.split(","):
                    for mode in args.modes.split(","):
                        for layout in LAYOUTS[mode][:: -1 if rep % 2 else 1]:
                            spec = {"data": data, "model": model, "mode": mode, "layout": layout, "tokenizer": tmp,
                                    "lists_per_batch": args.oasst_lists if data == "oasst" else args.hh_pairs,
                                    "steps": args.steps, "warmup": args.warmup, "chunk_size": args.chunk_size,
                                    "max_row_tokens": args.max_row_tokens,
                                    "args": {"max_prompt": args.max_prompt, "max_response": args.max_response}}
                            name = f"{data}/{model}/{mode}/{layout}"
                            proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                                                  capture_output=True, text=True)
                            if proc.returncode != 0:
                                print(f"{name} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                                continue
                            runs.setdefault((data, model, mode, layout), []).append(
                                json.loads(proc.stdout.strip().splitlines()[-1]))
                            print(f"rep {rep + 1}/{args.reps} {name}", file=sys.stderr, flush=True)
    results = [aggregate(rs) for rs in runs.values()]
    print("| data | model | mode | layout | s/batch | tokens/s | speed-up | fed tokens/batch | padding | peak RSS MB |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        base = next(x for x in results if (x["data"], x["model"], x["mode"]) == (r["data"], r["model"], r["mode"]))
        pad, fed = f"{r['pad_fraction']:.1%}", f"{r['fed_tokens_per_batch']:.0f}"
        print(f"| {r['data']} | {r['model']} | {r['mode']} | {r['layout']} | {r['seconds_per_batch']:.2f} | "
              f"{r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f}x | {fed} | {pad} | "
              f"{r['peak_rss_mb']:.0f} |")
    if args.output:
        meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                **{k: getattr(args, k) for k in ("reps", "steps", "warmup", "oasst_lists", "hh_pairs", "max_prompt",
                                                 "max_response", "chunk_size", "max_row_tokens")}}
        args.output.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
