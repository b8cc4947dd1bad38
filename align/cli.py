"""``align`` command line: train, cache, eval, report."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

if not os.path.exists("/dev/nvidia0"):  # deepspeed (imported by transformers/trl) warns on every start without it
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# torch's own collectives (used inside DeepSpeed ZeRO) warn about their renamed functions at every call
warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)




def _user_errors() -> tuple[type[Exception], ...]:
    """What the command line prints as one line: the project's own error types (:mod:`align.errors`) and the
    reference cache's. Anything else is a bug and keeps its traceback."""
    from align.errors import AlignError
    from align.reference import CacheError

    return (AlignError, CacheError)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def sampling_table(summary: dict[str, Any]) -> str:
    """Markdown table of held-out rewards (by sampling) before and after an online run (GRPO)."""
    before, after = summary.get("eval_before") or {}, summary.get("eval") or {}
    gain = summary.get("eval_gain") or {}
    lines = [f"| held-out, {after.get('n_prompts')} prompts × {after.get('samples_per_prompt')} samples | before | "
             f"after {summary['algorithm']} (95% CI) | change (95% CI, paired) |", "|---|---|---|---|"]
    for name, value in (after.get("reward") or {}).items():
        ci = (after.get("reward_ci") or {}).get(name)
        b = (before.get("reward") or {}).get(name)
        interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        g = gain.get(name) or {}
        change = (f"{g['mean']:+.3f}" + (f" [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]" if g.get("ci") else "")
                  if "mean" in g else "—")
        lines.append(f"| mean reward: {name} | {_fmt(b)} | {_fmt(value)}{interval} | {change} |")
    for name, by_k in (after.get("pass_at_k") or {}).items():
        for k, value in by_k.items():
            b = ((before.get("pass_at_k") or {}).get(name) or {}).get(k)
            lines.append(f"| pass@{k}: {name} | {_fmt(b)} | {_fmt(value)} | |")
    t = summary.get("timing") or {}
    lines += ["", f"steps {summary['steps']}, training reward {_fmt(summary.get('reward_mean_first'))} → "
              f"{_fmt(summary.get('reward_mean_last'))}; per step: generation "
              f"{_fmt(t.get('generation_seconds_per_step'))} s, reference "
              f"{_fmt(t.get('reference_seconds_per_step'))} s, training {_fmt(t.get('training_seconds_per_step'))} s; "
              f"{summary['tokens_per_second']} tokens/s, "
              f"peak memory {summary['peak_memory_mb']:.0f} MB"]
    return "\n".join(lines)


def results_table(summary: dict[str, Any]) -> str:
    """Markdown table of held-out ranking accuracy before and after training."""
    if "reward_curve" in summary:
        return sampling_table(summary)
    before, after = summary.get("eval_before") or {}, summary.get("eval") or {}
    by_b, by_a = before.get("by_scorer", {}), after.get("by_scorer", {})
    n = after.get("n_pairs") or before.get("n_pairs")
    lines = [f"| held-out pairwise accuracy ({n} pairs) | before | after {summary['algorithm']} (95% CI) |",
             "|---|---|---|"]
    rows = [("summed log-prob", "logprob"), ("mean log-prob (length-normalised)", "logprob_mean"),
            ("implicit reward log π − log π_ref", "implicit"),
            ("implicit reward per token (length-normalised)", "implicit_mean"),
            ("reward model (before: random head)", "reward-model")]
    for label, key in rows:
        b = (by_b.get(key) or {}).get("pairwise_accuracy")
        a = (by_a.get(key) or {}).get("pairwise_accuracy")
        if key in ("implicit", "implicit_mean"):
            b = None  # before training π = π_ref: every implicit reward is 0
        if key not in by_a and key not in by_b:
            continue  # e.g. no reference model (Cringe): no implicit reward; a policy has no reward head
        ci = (after.get("ci") or {}).get("pairwise_accuracy") if key == after.get("scorer") else None
        lines.append(f"| {label} | {_fmt(b)} | {_fmt(a)}{f' [{ci[0]:.3f}, {ci[1]:.3f}]' if ci else ''} |")
    lists = after.get("n_lists") or before.get("n_lists")
    if n and lists and n > lists:  # ranked lists (more pairs than lists): list metrics too, per scorer
        for scorer, name in (("logprob", "summed log-prob"), ("implicit", "implicit reward"),
                             ("reward-model", "reward model")):
            for label, key in (("exact match", "list_exact_match"), ("Kendall τ", "kendall_tau"), ("NDCG", "ndcg")):
                b = None if scorer == "implicit" else (by_b.get(scorer) or {}).get(key)
                a = (by_a.get(scorer) or {}).get(key)
                if a is not None or b is not None:
                    lines.append(f"| {name}: list {label} ({lists} lists) | {_fmt(b)} | {_fmt(a)} |")
    rc = summary["reference_cache"]
    lines += ["", f"steps {summary['steps']}, loss {_fmt(summary['train_loss_first'])} (first logged) → "
              f"{_fmt(summary['train_loss_last'])} (last logged), mean over the run "
              f"{_fmt(summary.get('train_loss_mean'))}, {summary['tokens_per_second']} tokens/s, "
              f"peak memory {summary['peak_memory_mb']:.0f} MB",
              f"reference cache {rc.get('key') or '—'}: {rc.get('hits', 0)} hits, {rc.get('computed', 0)} computed "
              f"({rc.get('seconds', 0):.1f} s); data: {summary['data']['rows_read']} rows, "
              f"{summary['data']['examples']} lists, skipped {summary['data']['skipped'] or 'none'}"]
    return "\n".join(lines)


def _search_dirs(recipe_path: str) -> list[Path]:
    """Where a recipe's relative data paths are looked up: the recipe's own folder, then the working directory."""
    return [Path(recipe_path).resolve().parent, Path.cwd()]


def cmd_train(a: argparse.Namespace) -> int:
    from align.config import load_recipe
    from align.distributed import is_main
    from align.pipeline import run_training

    recipe = load_recipe(a.recipe, a.overrides)
    summary = run_training(recipe, a.output_dir, resume=a.resume, overwrite=a.overwrite,
                           search_dirs=_search_dirs(a.recipe),
                           command=shlex.join(["align", *a.argv]))
    if is_main():
        out = Path(a.output_dir or recipe.output_dir)
        print("\n" + results_table(summary))
        print(f"\nwrote {out / 'summary.json'} and the model in {summary['model_dir']}")
    return 0


def cmd_iterate(a: argparse.Namespace) -> int:
    from align.config import load_recipe
    from align.iterate import run_iterate

    recipe = load_recipe(a.recipe, a.overrides)
    summary = run_iterate(recipe, a.output_dir, resume=a.resume, search_dirs=_search_dirs(a.recipe))
    from align.distributed import is_main

    if not is_main():  # under a launcher: the main process reports
        return 0
    out = Path(a.output_dir or recipe.output_dir)
    lines = ["| round | lists | sample reward (mean) | train loss first → last | held-out reward |",
             "|---|---|---|---|---|"]
    for r in summary["rounds"]:
        ev = (r.get("eval") or {}).get("reward") or {}
        lines.append(f"| {r['round']} | {r['samples']['lists']} | {_fmt(r['samples']['reward_mean'])} | "
                     f"{_fmt(r['train']['train_loss_first'])} → {_fmt(r['train']['train_loss_last'])} | "
                     f"{', '.join(f'{k} {_fmt(v)}' for k, v in ev.items()) or '—'} |")
    print("\n".join(lines))
    print(f"\nwrote {out / 'summary.json'}; the last round's model is {summary['final_model']}")
    return 0


def cmd_cache(a: argparse.Namespace) -> int:
    if a.recipe in ("list", "prune", "verify") and not Path(a.recipe).is_file():
        return {"list": cmd_cache_list, "prune": cmd_cache_prune, "verify": cmd_cache_verify}[a.recipe](a)
    from align.config import load_recipe, preflight
    from align.distributed import is_main
    from align.errors import ConfigError
    from align.io import json_text
    from align.pipeline import prepare_policy, recipe_reference
    from align.trainers import ALGORITHMS

    recipe = load_recipe(a.recipe, a.overrides)
    preflight(recipe, training=False)
    if not ALGORITHMS[recipe.algorithm].needs_reference:
        raise ConfigError(f"algorithm {recipe.algorithm!r} uses no reference model: there is no cache to build")
    tokenizer, data, _, policy, _ = prepare_policy(recipe, _search_dirs(a.recipe))
    reference = recipe_reference(recipe, policy, tokenizer, data)
    stats = reference.prefetch(data.train + data.eval) if reference.live is not None else reference.stats
    reference.store.close()  # this run no longer uses the cache (prune may remove it)
    if is_main():
        print(json_text({"reference_cache": stats.to_dict(), "data": data.to_dict()}))
    return 0


def _cache_root(a: argparse.Namespace) -> Path:
    from align.reference import default_cache_root

    return Path(a.cache_dir) if a.cache_dir else default_cache_root()


def _when(t: float | None) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "—"


def cmd_cache_list(a: argparse.Namespace) -> int:
    from align.io import json_text
    from align.reference import describe

    root = _cache_root(a)
    entries = [describe(d) for d in sorted(root.iterdir()) if d.is_dir()] if root.is_dir() else []
    if a.json:
        print(json_text({"root": str(root), "caches": entries}))
        return 0
    print(f"reference caches in {root}: {len(entries)}")
    if entries:
        print("| key | model | data | entries | size | created | last used |\n|---|---|---|---|---|---|---|")
        for e in entries:
            print(f"| {e['key']} | {e['model'] or '—'} | {', '.join(e['sources']) or '—'} | {e['entries']} | "
                  f"{e['bytes'] / 2**20:.1f} MB | {_when(e['created'])} | {_when(e['last_used'])} |")
    for e in entries:
        for m in e["malformed"]:
            print(f"{e['key']}: shard {m['shard']}: malformed sidecar ({m['problem']})")
        if e["manifest_problem"]:
            print(f"{e['key']}: {e['manifest_problem']}")
    return 0


def cmd_cache_verify(a: argparse.Namespace) -> int:
    from align.errors import ConfigError
    from align.io import json_text
    from align.reference.maintenance import verify_cache

    root = _cache_root(a)
    keys = [k for k in a.overrides if "=" not in k]
    every = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    dirs = [root / k for k in keys] if keys else every
    missing = [d.name for d in dirs if not d.is_dir()]
    if missing:
        raise ConfigError(f"align cache verify: no cache {', '.join(missing)} in {root}")
    results = [verify_cache(root, d) for d in dirs]
    if a.json:
        print(json_text({"root": str(root), "caches": results}))
    else:
        for r in results:
            state = r["problem"] or (f"{r['ok']}/{r['shards']} shards verified" +
                                     (f", {len(r['bad'])} bad" if r["bad"] else ""))
            print(f"{r['key']}: {state}")
            for b in r["bad"]:
                print(f"  shard {b['shard']}: {b['problem']}")
    return 1 if any(r["bad"] or r["problem"] for r in results) else 0


def cmd_cache_prune(a: argparse.Namespace) -> int:
    import shutil
    import time

    from align.errors import ConfigError
    from align.reference import describe

    if a.older_than is None and not a.unreferenced:
        raise ConfigError("align cache prune: say what to remove: --older-than DAYS (not used for that long) and/or "
                         "--unreferenced RUN_DIR ... (named by no summary.json under those run directories)")
    root = _cache_root(a)
    keep: set[str] | None = None
    if a.unreferenced:
        keep = set()
        for run in a.unreferenced:
            for summary in Path(run).rglob("summary.json"):
                try:
                    keep.add(str(json.loads(summary.read_text()).get("reference_cache", {}).get("key")))
                except (OSError, ValueError, AttributeError):
                    continue
    now, removed, freed = time.time(), 0, 0
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not d.is_dir():
            continue
        e = describe(d)
        if e["in_use"]:  # a live run holds a lease on it
            print(f"kept {e['key']}: in use by a running process")
            continue
        old = a.older_than is not None and now - (e["last_used"] or e["created"] or 0) > a.older_than * 86400
        orphan = keep is not None and e["key"] not in keep
        if (a.older_than is None or old) and (keep is None or orphan):
            removed, freed = removed + 1, freed + e["bytes"]
            print(f"{'would remove' if a.dry_run else 'removed'} {e['key']} ({e['model'] or '?'}, {e['entries']} "
                  f"entries, last used {_when(e['last_used'])})")
            if not a.dry_run:
                shutil.rmtree(d)
    print(f"{removed} cache{'s' if removed != 1 else ''}, {freed / 2**20:.1f} MB{' (dry run)' if a.dry_run else ''}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from align.config import check_lengths_against_model, read_model_config
    from align.evaluation.run import EvalRequest, eval_markdown, run_eval
    from align.evaluation.settings import resolve_settings, settings_line
    from align.io import json_text

    # unset lengths / split fraction: the ones the model's run trained with (flags override)
    lengths = resolve_settings(a.model, {"max_prompt_length": a.max_prompt_length,
                                         "max_response_length": a.max_response_length})
    for name in dict.fromkeys(n for n in (a.model, a.reference) if n):  # before minutes of loading and scoring
        config = read_model_config(name, local_only=True)  # a hub model not yet downloaded is checked by nothing
        if config is not None:
            check_lengths_against_model((lengths["max_prompt_length"], lengths["max_response_length"]), config,
                                        model=name, keys=("--max-prompt-length", "--max-response-length"))

    plots = None if a.no_plots else (a.plots or (str(Path(a.output).with_suffix("")) + "_plots" if a.output else None))
    req = EvalRequest(model=a.model, data=a.data, scorer=a.scorer, columns=a.columns, reference=a.reference,
                      format=a.format,
                      strict=a.strict, max_rows=a.max_rows, split=a.split, eval_fraction=a.eval_fraction,
                      batch_size=a.batch_size, max_prompt_length=a.max_prompt_length,
                      max_response_length=a.max_response_length, dtype=a.dtype, cache_dir=a.cache_dir,
                      betas=tuple(a.betas), alpha=a.alpha, beta=a.beta, ndcg_k=a.ndcg_k, resamples=a.bootstrap,
                      level=a.confidence, seed=a.seed, plots_dir=plots, per_example=a.per_example,
                      packing=not a.no_packing, samples=a.samples, max_new_tokens=a.max_new_tokens,
                      temperature=a.temperature)
    result = run_eval(req)
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(json_text(result))
    print(eval_markdown(result))
    print("\n" + settings_line(result["settings"], result["settings"]["chat_template"]))
    d = result["data"]
    if result["scorer"] == "task":
        print(f"\ndata: {d['prompts']} prompts ({d['split']})" + (f"\nwrote {a.output}" if a.output else ""))
        return 0
    print(f"\ndata: {d['rows_read']} rows, {d['lists']} lists ({d['split']}), skipped {d['skipped'] or 'none'}")
    for path in result.get("plots", []):
        print(f"wrote {path}")
    if a.output:
        print(f"wrote {a.output}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from align.run_report import write_report

    page = write_report(a.run_dir, a.output, a.plots)
    print(f"wrote {page}")
    return 0


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def _columns(text: str) -> dict[str, str]:
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise argparse.ArgumentTypeError(f"expected THEIRS=OURS pairs separated by commas, got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e
    if not values or any(not (0 < v < float("inf")) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite positive numbers, got {text!r}")
    return values


def _ranged(kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False):
    """An argparse ``type``: a number of ``kind`` (int or float) in the range, NaN and ±inf refused, so a bad
    flag is a one-line usage error (exit 2) instead of a failure minutes into the run."""
    from align.errors import ConfigError
    from align.validation import Range, check_number

    rng = Range(low, high, low_open=low_open, high_open=high_open, integer=kind is int)

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {rng.describe()}, got {text!r}") from None
        try:
            check_number("value", value, rng)
        except ConfigError:
            raise argparse.ArgumentTypeError(f"expected {rng.describe()}, got {text!r}") from None
        return value

    parse.__name__ = kind.__name__
    return parse


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
    t.add_argument("--resume", action="store_true", help="continue from the last whole checkpoint in the output dir")
    t.add_argument("--overwrite", action="store_true", help="replace an earlier run's outputs in the output dir "
                   "(without it, a used output dir is refused)")
    t.set_defaults(fn=cmd_train)

    it = sub.add_parser("iterate", help="rounds of sample → score → train (iterative DPO, Pairwise Cringe, LiPO)",
                        description="On-policy rounds: sample iterate.num_samples completions per prompt from the "
                        "current policy, score them with iterate.rewards, build best-vs-worst pairs or ranked lists, "
                        "train the recipe's algorithm on them, continue from the new policy. Every round's samples, "
                        "lists, model and metrics are kept under OUTPUT_DIR/round-K/.")
    it.add_argument("recipe", help="YAML recipe with an iterate section (see recipes/iterate_*.yaml)")
    it.add_argument("overrides", nargs="*", metavar="key=value")
    it.add_argument("--output-dir", help="where the rounds go (default: the recipe's output_dir)")
    it.add_argument("--resume", action="store_true", help="continue a killed run at its round and step")
    it.set_defaults(fn=cmd_iterate)

    c = sub.add_parser("cache", help="build, list, verify or prune reference log-prob caches",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="align cache RECIPE [key=value ...]: compute (or verify and reuse) the reference "
                       "log-probs of a recipe's data.\nalign cache list: every cache with its model, data, entries, "
                       "size and dates.\nalign cache verify [KEY ...]: recheck every shard (of every cache, or those "
                       "named); exit 1 if any fails.\nalign cache prune --older-than DAYS | --unreferenced RUN_DIR "
                       "...: remove caches not used for DAYS, or named by no summary.json under the run directories "
                       "(a cache a running process holds is kept).")
    c.add_argument("recipe", help="a recipe, or 'list', 'verify' or 'prune'")
    c.add_argument("overrides", nargs="*", metavar="key=value")
    c.add_argument("--cache-dir", help="cache root for list/verify/prune (default $ALIGN_HOME/reference)")
    c.add_argument("--json", action="store_true", help="list, verify: JSON instead of a table")
    c.add_argument("--older-than", type=_non_negative_float, metavar="DAYS", help="prune: not used for DAYS days")
    c.add_argument("--unreferenced", nargs="+", metavar="RUN_DIR", help="prune: keys no summary.json names")
    c.add_argument("--dry-run", action="store_true", help="prune: only say what would go")
    c.set_defaults(fn=cmd_cache)

    e = sub.add_parser("eval", help="how well a reward model or a policy ranks held-out responses",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Rank every response of DATA and report pairwise accuracy (strict and "
                       "ties-correct), list exact match, top-1 accuracy, Kendall τ, NDCG and NDCG@k, each with a "
                       "bootstrap CI over lists; the idealized ranking accuracy R*/R̃* of Chen et al. 2024 by β; "
                       "per-subset tables for RewardBench-style files; a calibration summary. Writes a markdown "
                       "table to stdout, JSON with --output, PNG plots beside it.",
                       epilog="scorers:\n  reward-model  a sequence-classification reward model's score\n"
                       "  implicit      log π − log π_ref of a policy (reference: --reference, or the one "
                       "`align train` recorded)\n  logprob       summed (and per-token mean) log-likelihood\n"
                       "  auto          reward-model for reward models, else implicit if a reference is known, "
                       "else logprob\n  task          sample --samples completions per prompt of a built-in task "
                       "(--data task:NAME?...) and score them with its true rule: mean graded score, exact-match "
                       "rate (CIs over prompts), pass@k\n\nexamples:\n"
                       "  align eval --model runs/rm_bt_tiny/model --data "
                       "../shared/data/hh_rlhf_harmless_base.jsonl.gz --split eval --output rm.json\n"
                       "  align eval --model runs/dpo_tiny/model --scorer implicit --data "
                       "../shared/data/oasst_en_trees.jsonl --output dpo.json")
    e.add_argument("--model", required=True, help="policy or reward model: directory or hub id")
    e.add_argument("--data", required=True, help="any file the data layer reads (HH, TRL/RewardBench, ranked, "
                   "OASST) or a hub name")
    e.add_argument("--scorer", default="auto", choices=["auto", "reward-model", "implicit", "logprob", "task"],
                   help="task: sample from the model and score with a built-in task's true rule (--data task:...)")
    e.add_argument("--reference", help="reference language model (π_ref) for the implicit reward and R*; "
                   "default: the one `align train` recorded with the model")
    e.add_argument("--output", help="write the results as JSON here (plots go to OUTPUT_plots/)")
    e.add_argument("--plots", metavar="DIR", help="write the PNG plots here")
    e.add_argument("--per-example", metavar="FILE.jsonl", help="write every list's scores and metrics here, one JSON "
                   "line each (compare two models example by example)")
    e.add_argument("--no-plots", action="store_true", help="write no plots")
    e.add_argument("--split", default="all", choices=["all", "train", "eval"],
                   help="all rows, or the train / held-out side of the prompt-hash split training uses")
    e.add_argument("--eval-fraction", type=_ranged(float, 0, 1),
                   help="held-out fraction of that split (default: the model's run's data.eval_fraction, else 0.1)")
    e.add_argument("--format", default="auto", choices=["auto", "hh", "trl", "ranked", "oasst"])
    e.add_argument("--columns", type=_columns, default={}, metavar="THEIRS=OURS,...",
                   help="map your field names onto the known ones, e.g. question=prompt,response_j=chosen,"
                   "response_k=rejected")
    e.add_argument("--strict", action="store_true", help="stop at the first bad row instead of skipping it")
    e.add_argument("--max-rows", type=_ranged(int, 1))
    e.add_argument("--betas", type=_floats, default=[0.01, 0.1, 1.0, 5.0, 10.0], metavar="B1,B2,...",
                   help="β values of the idealized ranking accuracy (default 0.01,0.1,1,5,10)")
    e.add_argument("--alpha", type=_ranged(float, 0.5, 1, low_open=True, high_open=True), default=0.999,
                   help="fraction of raters preferring y_w, for R*, in (0.5, 1) "
                   "(default: unanimous, 1 adjusted by 0.001)")
    e.add_argument("--beta", type=_ranged(float, 0, low_open=True),
                   help="β of σ(β·margin) in the calibration of an implicit reward "
                   "(default: the training β, else 0.1)")
    e.add_argument("--ndcg-k", type=_ranged(int, 1), default=3, help="k of NDCG@k (default 3)")
    e.add_argument("--bootstrap", type=_ranged(int, 0), default=1000, metavar="N",
                   help="bootstrap resamples (0: no CIs)")
    e.add_argument("--confidence", type=_ranged(float, 0, 1, low_open=True, high_open=True), default=0.95,
                   help="CI level, in (0, 1) (default 0.95)")
    e.add_argument("--seed", type=int, default=0, help="bootstrap seed (with --scorer task also the sampling seed)")
    e.add_argument("--samples", type=_ranged(int, 1), default=8,
                   help="--scorer task: completions sampled per prompt (pass@k for k up to this; default 8)")
    e.add_argument("--max-new-tokens", type=_ranged(int, 1), default=32,
                   help="--scorer task: completion length limit (default 32)")
    e.add_argument("--temperature", type=_ranged(float, 0, low_open=True), default=1.0,
                   help="--scorer task: sampling temperature (default 1)")
    e.add_argument("--batch-size", type=_ranged(int, 1), default=16)
    e.add_argument("--max-prompt-length", type=_ranged(int, 1),
                   help="default: the model's run's data.max_prompt_length (align_model.json or RUN/recipe.json), "
                   "else 512")
    e.add_argument("--max-response-length", type=_ranged(int, 1),
                   help="default: the model's run's data.max_response_length, else 512")
    e.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    e.add_argument("--cache-dir", help="reference cache root (default $ALIGN_HOME/reference)")
    e.add_argument("--no-packing", action="store_true",
                   help="score one padded row per response instead of each prompt once with its responses packed")
    e.set_defaults(fn=cmd_eval)

    r = sub.add_parser("report", help="a Markdown page with plots summarising a finished run",
                       description="Summarise a finished run from its files (summary.json, recipe.json, "
                       "log_history.json or the last checkpoint's trainer_state.json): the held-out evaluation "
                       "before/after with CIs, loss/reward/ranking curves, data, reference cache and timings.")
    r.add_argument("run_dir", metavar="RUN_DIR", help="the output directory of `align train`")
    r.add_argument("--output", help="the page to write (default RUN_DIR/report.md)")
    r.add_argument("--plots", metavar="DIR", help="where the PNGs go (default RUN_DIR/report_plots)")
    r.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``align`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # `align train R --output-dir D key=value`: argparse stops filling a positional list at the first option, so
    # overrides given after an option arrive here; take them, refuse anything else.
    verify = getattr(args, "recipe", None) == "verify"  # `align cache verify [KEY ...]`: keys, not overrides
    if extra and hasattr(args, "overrides") and all(("=" in x or verify) and not x.startswith("-") for x in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "DeepSpeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code = args.fn(args)
    except _user_errors() as e:
        print(f"align {args.command}: error: {e}", file=sys.stderr)
        return 2
    from align.distributed import shutdown

    shutdown()  # under a launcher: the process group goes down in order, not at interpreter exit
    return code


if __name__ == "__main__":
    sys.exit(main())
