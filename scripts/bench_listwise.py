"""LiPO-λ on whole ranked lists vs DPO on all K(K−1)/2 expanded pairs of the same lists.

Same model (the SFT'd embedded tiny model of recipes/lipo_tiny.yaml), same OASST train/held-out split, same
reference log-probs (the pairs reuse the lists' cache entries: a response's reference log-prob does not depend
on what it is paired with). Reports wall time per epoch and held-out ranking metrics of the implicit reward at
equal optimizer steps and at equal training time. Evaluation time is excluded from the training clock.

    python scripts/bench_listwise.py [--epochs 3] [--quick] [--output FILE.json] [--markdown docs/bench_listwise.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch
import transformers
from transformers import TrainerCallback, TrainingArguments

from align.config import load_recipe
from align.data.collate import pad_values
from align.data.tokenize import TokenizedList
from align.evaluation import evaluate_policy
from align.models.loading import load_model, load_tokenizer, resolve_model_path
from align.pipeline import load_data, recipe_reference, run_sft
from align.sft import sft_rows
from align.trainers import DPOLossConfig, DPOTrainer, LiPOLossConfig, LiPOTrainer, ListDataset

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 epoch on 24 lists")
    ap.add_argument("--output", help="write results as JSON")
    ap.add_argument("--markdown", help="write the table as markdown (e.g. docs/bench_listwise.md)")
    a = ap.parse_args()
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
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"transformers {transformers.__version__}. Data: OASST ranked lists, {len(data.train)} train lists "
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
