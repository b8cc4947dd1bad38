"""``align`` command line: train, cache, eval."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

if not os.path.exists("/dev/nvidia0"):  # deepspeed (imported by transformers/trl) warns on every start without it
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")




def _user_errors() -> tuple[type[Exception], ...]:
    from align.config import ConfigError
    from align.data.example import DataError
    from align.reference import CacheError

    return (ConfigError, DataError, CacheError, FileNotFoundError, ValueError, OSError)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def results_table(summary: dict[str, Any]) -> str:
    """Markdown table of held-out ranking accuracy before and after training."""
    before, after = summary.get("eval_before") or {}, summary.get("eval") or {}
    by_b, by_a = before.get("by_scorer", {}), after.get("by_scorer", {})
    n = after.get("n_pairs") or before.get("n_pairs")
    lines = [f"| held-out pairwise accuracy ({n} pairs) | before | after {summary['algorithm']} |", "|---|---|---|"]
    rows = [("summed log-prob", "logprob"), ("mean log-prob (length-normalised)", "logprob_mean"),
            ("implicit reward log π − log π_ref", "implicit")]
    for label, key in rows:
        b = (by_b.get(key) or {}).get("pairwise_accuracy")
        a = (by_a.get(key) or {}).get("pairwise_accuracy")
        if key == "implicit":
            if a is None:
                continue  # no reference model (e.g. Cringe): no implicit reward
            b = None  # before training π = π_ref: every implicit reward is 0
        lines.append(f"| {label} | {_fmt(b)} | {_fmt(a)} |")
    lists = after.get("n_lists") or before.get("n_lists")
    if n and lists and n > lists:  # ranked lists (more pairs than lists): list metrics too, per scorer
        for scorer, name in (("logprob", "summed log-prob"), ("implicit", "implicit reward")):
            for label, key in (("exact match", "list_exact_match"), ("Kendall τ", "kendall_tau"), ("NDCG", "ndcg")):
                b = None if scorer == "implicit" else (by_b.get(scorer) or {}).get(key)
                a = (by_a.get(scorer) or {}).get(key)
                if a is not None or b is not None:
                    lines.append(f"| {name}: list {label} ({lists} lists) | {_fmt(b)} | {_fmt(a)} |")
    rc = summary["reference_cache"]
    lines += ["", f"steps {summary['steps']}, loss {_fmt(summary['train_loss_first'])} → "
              f"{_fmt(summary['train_loss_last'])}, {summary['tokens_per_second']} tokens/s, "
              f"peak memory {summary['peak_memory_mb']:.0f} MB",
              f"reference cache {rc.get('key') or '—'}: {rc.get('hits', 0)} hits, {rc.get('computed', 0)} computed "
              f"({rc.get('seconds', 0):.1f} s); data: {summary['data']['rows_read']} rows, "
              f"{summary['data']['examples']} lists, skipped {summary['data']['skipped'] or 'none'}"]
    return "\n".join(lines)


def cmd_train(a: argparse.Namespace) -> int:
    from align.config import load_recipe
    from align.pipeline import run_training

    recipe = load_recipe(a.recipe, a.overrides)
    summary = run_training(recipe, a.output_dir, resume=a.resume, recipe_path=a.recipe)
    out = Path(a.output_dir or recipe.output_dir)
    print("\n" + results_table(summary))
    print(f"\nwrote {out / 'summary.json'} and the model in {summary['model_dir']}")
    return 0


def cmd_cache(a: argparse.Namespace) -> int:
    from align.config import load_recipe
    from align.pipeline import build_reference, json_text, prepare_policy

    recipe = load_recipe(a.recipe, a.overrides)
    tokenizer, data, _, policy, _ = prepare_policy(recipe, Path(a.recipe).resolve().parent.parent)
    _, stats = build_reference(recipe, policy, tokenizer, data.train + data.eval)
    print(json_text({"reference_cache": stats.to_dict(), "data": data.to_dict()}))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from align.config import ReferenceConfig
    from align.data.loaders import load_examples
    from align.data.tokenize import tokenize_examples
    from align.evaluation import evaluate_policy
    from align.models.loading import load_model, load_tokenizer
    from align.pipeline import json_text, pad_lists, reference_logps

    examples, report = load_examples(a.data, format=a.format, strict=a.strict, max_rows=a.max_rows)
    tokenizer = load_tokenizer(a.model)
    lists, trunc = tokenize_examples(examples, tokenizer, max_prompt_length=a.max_prompt_length,
                                     max_response_length=a.max_response_length)
    data = {**report.to_dict(), "lists": len(lists), "truncation": trunc.to_dict()}
    result: dict[str, Any] = {"model": a.model, "reference": a.reference}
    if not lists:
        result.update({"pairwise_accuracy": None, "pairwise_accuracy_ties_correct": None, "n_pairs": 0,
                       "reference_cache": None})
    else:
        ref = None
        if a.reference:
            settings = {"max_prompt_length": a.max_prompt_length, "max_response_length": a.max_response_length,
                        "truncation": "truncate"}  # as the training pipeline keys the same data
            ref_model = load_model(a.reference)
            cache, stats = reference_logps(ref_model, tokenizer, lists, ReferenceConfig(batch_size=a.batch_size),
                                           settings)
            del ref_model  # loaded once, freed before the policy is
            ref = pad_lists([cache.logps(i) for i in range(len(lists))])
            result["reference_cache"] = stats.to_dict()
        result.update(evaluate_policy(load_model(a.model), lists, ref_logps=ref, batch_size=a.batch_size,
                                      pad_token_id=tokenizer.pad_token_id or 0))
    result["data"] = data
    text = json_text(result)
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(text)
    by = result.get("by_scorer", {})
    print("| scorer | pairwise accuracy (strict) | ties correct | pairs |\n|---|---|---|---|")
    for name, m in by.items():
        print(f"| {name} | {_fmt(m['pairwise_accuracy'])} | {_fmt(m['pairwise_accuracy_ties_correct'])} | "
              f"{m['n_pairs']} |")
    print(f"data: {report.rows_read} rows, {len(lists)} lists, skipped {dict(report.skipped) or 'none'}")
    if a.output:
        print(f"wrote {a.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="align", description="Fine-tune language models on ranked responses.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  align train recipes/dpo_tiny.yaml\n"
                                       "  align train recipes/dpo_tiny.yaml loss.beta=0.2 train.max_steps=50\n"
                                       "  align eval --model runs/dpo/model --data data.jsonl --output eval.json")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a recipe", description="Run a recipe: data, optional SFT, reference "
                       "cache, training, evaluation. Writes OUTPUT_DIR/summary.json and OUTPUT_DIR/model.")
    t.add_argument("recipe", help="YAML recipe (see recipes/)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.max_steps=20")
    t.add_argument("--output-dir", help="where the run goes (default: the recipe's output_dir)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output dir")
    t.set_defaults(fn=cmd_train)

    c = sub.add_parser("cache", help="build the reference log-prob cache of a recipe",
                       description="Compute (or verify and reuse) the reference log-probs of a recipe's data.")
    c.add_argument("recipe")
    c.add_argument("overrides", nargs="*", metavar="key=value")
    c.set_defaults(fn=cmd_cache)

    e = sub.add_parser("eval", help="ranking accuracy of a model on held-out lists",
                       description="Rank every response of DATA by the model's summed log-prob, or by its implicit "
                       "reward log π − log π_ref with --reference, and report pairwise accuracy.")
    e.add_argument("--model", required=True, help="model directory or hub id")
    e.add_argument("--data", required=True, help="any file the data layer reads (HH, TRL, ranked, OASST) or a hub name")
    e.add_argument("--reference", help="reference model: score by implicit reward (uses the shared cache)")
    e.add_argument("--output", help="write the results as JSON here")
    e.add_argument("--format", default="auto", choices=["auto", "hh", "trl", "ranked", "oasst"])
    e.add_argument("--strict", action="store_true", help="stop at the first bad row instead of skipping it")
    e.add_argument("--max-rows", type=int)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--max-prompt-length", type=int, default=512)
    e.add_argument("--max-response-length", type=int, default=512)
    e.set_defaults(fn=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``align`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "DeepSpeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.fn(args)
    except _user_errors() as e:
        print(f"align {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
