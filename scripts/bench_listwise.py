"""LiPO-λ on whole ranked lists vs DPO on all K(K−1)/2 expanded pairs of the same lists.

Same model (the SFT'd embedded tiny model of recipes/lipo_tiny.yaml), same OASST train/held-out split, same
reference log-probs (the pairs reuse the lists' cache entries: a response's reference log-prob does not depend
on what it is paired with). Reports wall time per epoch and held-out ranking metrics of the implicit reward at
equal optimizer steps and at equal training time. Evaluation time is excluded from the training clock.

    python scripts/bench_listwise.py [--epochs 3] [--quick] [--output FILE.json] [--markdown docs/bench_listwise.md]

``--packing-sweep`` measures something else: LiPO-λ with the shared-prompt packed forward on vs off
(``packing=True/False``) on lists of K = 2, 4 and 8 responses: tokens fed to the model per list (padding included),
the padding share, and seconds per epoch (steady state: the first step is run but not timed, the rest scaled to the
epoch). OASST has few prompts with 4 or more replies (2 with 8), so a K-list is a prompt with its own best replies
and, where it has fewer than K, replies of the following prompts ranked below its own: the speed depends only on
the shapes (one prompt, K responses), and the values do not matter. Arms alternate (on, off, on, off) and each
configuration starts from the same weights.

    python scripts/bench_listwise.py --packing-sweep [--lists 48] [--reps 2] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainingArguments

from align.config import load_recipe
from align.data.collate import pad_values
from align.data.tokenize import TokenizedList
from align.evaluation import evaluate_policy
from align.models.loading import load_model, load_tokenizer, resolve_model_path
from align.pipeline import load_data, recipe_reference, run_sft
from align.sft import sft_rows
from align.trainers import DPOLossConfig, DPOTrainer, LiPOLossConfig, LiPOTrainer, ListDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when loaded from elsewhere

from benchlib.machine import header_lines, load_average, machine_info, versions  # noqa: E402
from benchlib.timing import steady_state, timer_callback  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def expand_pairs(lists: list[TokenizedList], refs: list[list[float]]) -> tuple[list[TokenizedList], list[list[float]]]:
    """Every (better, worse) pair of every list as its own two-response example, with its reference values."""
    out, out_refs = [], []
    for t, r in zip(lists, refs):
        for i in range(len(t.response_ids)):
            for j in range(len(t.response_ids)):
                if t.scores[i] > t.scores[j]:
                    out.append(TokenizedList(t.prompt_ids, (t.response_ids[i], t.response_ids[j]), (1.0, 0.0), t.row))
                    out_refs.append([r[i], r[j]])
    return out, out_refs


class EvalEvery(TrainerCallback):
    """Held-out metrics every ``every`` steps, with the training clock paused while evaluating."""

    def __init__(self, every, model, lists, ref_tensor, pad):
        self.every, self.model, self.lists, self.ref, self.pad = every, model, lists, ref_tensor, pad
        self.points, self.train_time, self._t = [], 0.0, None

    def _eval(self, step):
        m = evaluate_policy(self.model, self.lists, ref_logps=self.ref, batch_size=32, pad_token_id=self.pad,
                            progress=False)["by_scorer"]["implicit"]
        self.points.append({"step": step, "train_seconds": round(self.train_time, 2),
                            **{k: m[k] for k in ("pairwise_accuracy", "list_exact_match", "kendall_tau", "ndcg")}})

    def on_train_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.train_time += time.perf_counter() - self._t
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._eval(state.global_step)
        self._t = time.perf_counter()


def run(name, cls, config, train, refs, evl, eval_ref, model_dir, tok, batch, epochs, every, out):
    torch.manual_seed(0)
    model = load_model(model_dir)
    args = TrainingArguments(output_dir=str(out / name), per_device_train_batch_size=batch, num_train_epochs=epochs,
                             learning_rate=5e-4, warmup_steps=5, logging_steps=1000, save_strategy="no",
                             report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    cb = EvalEvery(every, model, evl, eval_ref, tok.pad_token_id)
    trainer = cls(model, args, config, ListDataset(train, refs), processing_class=tok, callbacks=[cb])
    cb._eval(0)
    trainer.train()
    steps = trainer.state.global_step
    return {"name": name, "examples": len(train), "sequences": sum(len(t.response_ids) for t in train),
            "steps": steps, "train_seconds": round(cb.train_time, 2),
            "seconds_per_epoch": round(cb.train_time / epochs, 2), "curve": cb.points}


def at_step(curve, step):
    return min(curve, key=lambda p: abs(p["step"] - step))


def at_time(curve, seconds):
    return min(curve, key=lambda p: abs(p["train_seconds"] - seconds))


def k_lists(lists: list[TokenizedList], k: int, n: int) -> list[TokenizedList]:
    """``n`` lists of exactly ``k`` responses: each prompt's own replies, best first, then replies of the following
    prompts (ranked below its own) where it has fewer than ``k``."""
    out = []
    for i, t in enumerate(lists[:n]):
        own = sorted(range(len(t.response_ids)), key=lambda j: -t.scores[j])
        responses = [t.response_ids[j] for j in own]
        j = i + 1
        while len(responses) < k:
            responses += lists[j % len(lists)].response_ids
            j += 1
        out.append(TokenizedList(t.prompt_ids, tuple(responses[:k]), tuple(float(-r) for r in range(k)), t.row))
    return out


def sweep_run(lists, refs, packing: bool, model_dir, tok, batch: int, out: Path) -> dict:
    """One epoch of LiPO-λ on ``lists``; steady-state seconds per epoch and the tokens fed."""
    torch.manual_seed(0)
    model = load_model(model_dir)
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, num_train_epochs=1,
                             learning_rate=5e-4, logging_steps=1000, save_strategy="no", report_to="none",
                             use_cpu=True, seed=0, disable_tqdm=True, dataloader_pin_memory=False)
    clock = timer_callback("cpu")
    trainer = LiPOTrainer(model, args, LiPOLossConfig(beta=0.05), ListDataset(lists, refs), processing_class=tok,
                          callbacks=[clock], packing=packing)
    trainer.train()
    steps = len(clock.step_ends)
    rate = steady_state(clock, steps, min(1, steps - 1))  # the first step runs untimed
    stats = trainer.token_stats("run")
    fed = stats["tokens_per_step"] * steps
    real = sum(len(t.prompt_ids) * len(t.response_ids) + sum(map(len, t.response_ids)) for t in lists)
    return {"packing": packing, "packed": trainer.packing.packed, "steps": steps,
            "seconds_per_epoch": steps / rate["steps_per_second"],
            "fed_tokens_per_list": fed / len(lists), "sequence_tokens_per_list": real / len(lists),
            "padding_fraction": stats["padding_fraction"]}


def packing_sweep(a) -> None:
    """LiPO-λ with the shared-prompt packed forward on vs off, K = 2, 4, 8 (see the module docstring)."""
    import statistics

    from align.data.loaders import load_examples
    from align.data.tokenize import tokenize_examples
    from align.forward import score_lists

    load_at_start = load_average()
    oasst = REPO.parent / "shared" / "data" / "oasst_en_trees.jsonl"
    model_dir = str(resolve_model_path("embedded:tiny"))
    tok = load_tokenizer(model_dir)
    examples, _ = load_examples(str(oasst))
    base, _ = tokenize_examples(examples, tok, max_prompt_length=a.max_prompt_length,
                                max_response_length=a.max_response_length)
    out = Path("/tmp/align_bench_listwise_sweep")
    rows, raw = [], {}
    for k in (2, 4, 8):
        lists = k_lists(base, k, a.lists)
        ref, _ = score_lists(load_model(model_dir), lists, batch_size=16)
        refs = [ref[i].tolist() for i in range(len(lists))]
        runs = {True: [], False: []}
        for rep in range(a.reps):
            for packing in (True, False) if rep % 2 == 0 else (False, True):
                runs[packing].append(sweep_run(lists, refs, packing, model_dir, tok, a.batch_lists,
                                               out / f"k{k}-{packing}-{rep}"))
                print(f"K={k} packing={packing} rep {rep}: {runs[packing][-1]}", flush=True)
        raw[k] = runs
        med = {p: {key: statistics.median(r[key] for r in runs[p]) for key in
                   ("seconds_per_epoch", "fed_tokens_per_list", "sequence_tokens_per_list", "padding_fraction")}
               for p in runs}
        rows.append((k, med[True], med[False], runs[True][0]["steps"]))
    machine = dict(machine_info("cpu"), load_average_at_start=load_at_start, load_average_at_end=load_average())
    lines = [f"## LiPO-λ with the shared-prompt forward on vs off ({date.today()})", "",
             *header_lines(machine, versions(), "cpu"),
             "Model: the embedded tiny Llama "
             f"(`embedded:tiny`), float32. Data: {a.lists} OASST prompts per K (lists built as the script's "
             f"docstring says), prompts ≤ {a.max_prompt_length} and responses ≤ {a.max_response_length} tokens, "
             f"{a.batch_lists} lists per step, one epoch, medians of {a.reps} alternating runs per arm.", "",
             "| K | steps/epoch | tokens/list (prompt + response per response) | fed tokens/list, on "
             "| fed tokens/list, off | padding on | padding off | s/epoch on | s/epoch off | speed-up |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, on, off, steps in rows:
        lines.append(f"| {k} | {steps} | {on['sequence_tokens_per_list']:.0f} | {on['fed_tokens_per_list']:.0f} | "
                     f"{off['fed_tokens_per_list']:.0f} | {on['padding_fraction']:.1%} | "
                     f"{off['padding_fraction']:.1%} | {on['seconds_per_epoch']:.2f} | "
                     f"{off['seconds_per_epoch']:.2f} | {off['seconds_per_epoch'] / on['seconds_per_epoch']:.2f}x |")
    table = "\n".join(lines)
    print(table)
    if a.output:
        Path(a.output).write_text(json.dumps({"machine": machine, "versions": versions(), "table": rows,
                                              "runs": {str(k): {str(p): v for p, v in r.items()}
                                                       for k, r in raw.items()}}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packing-sweep", action="store_true",
                    help="LiPO-λ with the shared-prompt forward on vs off on lists of K = 2, 4, 8")
    ap.add_argument("--lists", type=int, default=48, help="--packing-sweep: prompts per K")
    ap.add_argument("--reps", type=int, default=2, help="--packing-sweep: runs per arm")
    ap.add_argument("--batch-lists", type=int, default=4, help="--packing-sweep: lists per step")
    ap.add_argument("--max-prompt-length", type=int, default=96)
    ap.add_argument("--max-response-length", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 epoch on 24 lists")
    ap.add_argument("--output", help="write results as JSON")
    ap.add_argument("--markdown", help="write the table as markdown (e.g. docs/bench_listwise.md)")
    a = ap.parse_args()
    if a.packing_sweep:
        return packing_sweep(a)
    load_at_start = load_average()
    oasst = REPO.parent / "shared" / "data" / "oasst_en_trees.jsonl"
    recipe = load_recipe(REPO / "recipes/lipo_tiny.yaml", [f"data.train={oasst}"]
                         + (["data.max_train_examples=24", "sft.max_steps=5"] if a.quick else []))
    epochs = 1 if a.quick else a.epochs
    tok = load_tokenizer(recipe.model.name_or_path)
    data = load_data(recipe, tok)
    start = resolve_model_path(recipe.model.name_or_path)
    if recipe.sft.enabled:
        start = run_sft(start, sft_rows(data.train_examples), recipe)
    policy = load_model(start)
    cache = recipe_reference(recipe, policy, tok, data, progress=False)
    stats = cache.prefetch(data.train + data.eval)
    refs = cache.list_logps(data.train + data.eval)
    train_refs, eval_ref = refs[: len(data.train)], pad_values(refs[len(data.train):])
    pairs, pair_refs = expand_pairs(data.train, train_refs)
    del policy
    out = Path("/tmp/align_bench_listwise")
    # Equal sequences per step: 4 lists of ~3 responses vs 6 pairs (12 responses).
    lipo = run("LiPO-λ on lists", LiPOTrainer, LiPOLossConfig(beta=0.05), data.train, train_refs, data.eval,
               eval_ref, start, tok, 4, epochs, 5, out)
    dpo = run("DPO on expanded pairs", DPOTrainer, DPOLossConfig(beta=0.1), pairs, pair_refs, data.eval, eval_ref,
              start, tok, 6, epochs, 5, out)
    eq_step = at_step(dpo["curve"], lipo["steps"])
    eq_time = at_time(dpo["curve"], lipo["train_seconds"])
    final = lipo["curve"][-1]
    keys = ("pairwise_accuracy", "list_exact_match", "kendall_tau", "ndcg")
    rows = [
        ("LiPO-λ, end of training", lipo["steps"], lipo["train_seconds"], final),
        ("DPO pairs, at LiPO's step count", eq_step["step"], eq_step["train_seconds"], eq_step),
        ("DPO pairs, at LiPO's training time", eq_time["step"], eq_time["train_seconds"], eq_time),
        ("DPO pairs, end of training", dpo["steps"], dpo["train_seconds"], dpo["curve"][-1]),
        ("before training (both)", 0, 0.0, lipo["curve"][0]),
    ]
    lines = [
        f"# LiPO-λ on lists vs DPO on expanded pairs ({date.today()})", "",
        *header_lines(dict(machine_info("cpu"), load_average_at_start=load_at_start,
                           load_average_at_end=load_average()), versions(), "cpu"),
        f"Data: OASST ranked lists, {len(data.train)} train lists "
        f"({lipo['sequences']} responses) = {len(pairs)} expanded pairs ({dpo['sequences']} sequences); held-out "
        f"{len(data.eval)} lists. {epochs:g} epochs each, lr 5e-4, LiPO β 0.05 (paper), DPO β 0.1.", "",
        "| | LiPO-λ on lists | DPO on expanded pairs | ratio DPO/LiPO |", "|---|---|---|---|",
        f"| wall time per epoch (s) | {lipo['seconds_per_epoch']} | {dpo['seconds_per_epoch']} | "
        f"{dpo['seconds_per_epoch'] / max(lipo['seconds_per_epoch'], 1e-9):.2f} |",
        f"| optimizer steps per epoch | {lipo['steps'] / epochs:g} | {dpo['steps'] / epochs:g} | "
        f"{dpo['steps'] / max(lipo['steps'], 1):.2f} |", "",
        "Held-out ranking by the implicit reward β·(log π − log π_ref):", "",
        "| point | step | train s | pairwise acc | list exact match | Kendall τ | NDCG |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, step, secs, p in rows:
        lines.append(f"| {label} | {step} | {secs} | " + " | ".join(f"{p[k]:.3f}" for k in keys) + " |")
    table = "\n".join(lines)
    print(table)
    result = {"lipo": lipo, "dpo_pairs": dpo, "reference_cache": stats.to_dict(), "epochs": epochs,
              "equal_steps": {"lipo": final, "dpo": eq_step}, "equal_time": {"lipo": final, "dpo": eq_time},
              "ratios": {"dpo_vs_lipo_seconds_per_epoch": dpo["seconds_per_epoch"] / max(lipo["seconds_per_epoch"],
                                                                                      1e-9)}}
    if a.output:
        Path(a.output).write_text(json.dumps(result, indent=1))
    if a.markdown:
        Path(a.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(a.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
