"""``align eval`` end to end: load data → score with a reward model, an implicit reward or log-likelihood →
metrics with bootstrap CIs, idealized ranking accuracy, per-subset tables, calibration → JSON, markdown, PNGs."""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from align.data.collate import pad_values
from align.data.loaders import load_examples, split_examples
from align.data.tokenize import tokenize_examples
from align.errors import ConfigError
from align.evaluation.bootstrap import bootstrap_weights, percentile_interval
from align.evaluation.calibration import reliability
from align.evaluation.idealized import DEFAULT_BETAS, UNANIMOUS_ALPHA, idealized_by_beta
from align.evaluation.ranking import list_tensors, policy_scorers, report_scores
from align.evaluation.settings import DEFAULTS, resolve_settings
from align.evaluation.subsets import subset_report
from align.forward import reward_scores, score_lists
from align.losses.pairs import preference_pairs
from align.models.loading import (
    check_finite_weights,
    is_reward_model,
    load_model,
    load_reward_model,
    load_tokenizer,
    read_model_info,
)
from align.ranking_metrics import aggregate, per_list_metrics
from align.reference import reference_for

log = logging.getLogger("align")

Scorer = Literal["auto", "reward-model", "implicit", "logprob", "task"]


@dataclass
class EvalRequest:
    """What to evaluate and how; the fields mirror ``align eval``'s flags."""

    model: str
    data: str
    scorer: Scorer = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    reference: str | None = None
    format: str = "auto"
    strict: bool = False
    max_rows: int | None = None
    split: Literal["all", "train", "eval"] = "all"
    # None: the settings the model's run trained with (align/evaluation/settings.py), else 0.1 / 512 / 512
    eval_fraction: float | None = None
    batch_size: int = 16
    max_prompt_length: int | None = None
    max_response_length: int | None = None
    dtype: str = "float32"
    cache_dir: str | None = None
    betas: tuple[float, ...] = DEFAULT_BETAS
    alpha: float = UNANIMOUS_ALPHA
    beta: float | None = None
    ndcg_k: int = 3
    resamples: int = 1000
    level: float = 0.95
    seed: int = 0
    plots_dir: str | None = None
    per_example: str | None = None
    packing: bool = True  # score in the shared-prompt packed layout where the model takes it
    progress: bool = True
    samples: int = 8  # scorer "task": completions sampled per prompt
    max_new_tokens: int = 32  # scorer "task": completion length limit
    temperature: float = 1.0  # scorer "task": sampling temperature


def _choose_scorer(req: EvalRequest, reward: bool, reference: str | None) -> str:
    if req.scorer == "auto":
        return "reward-model" if reward else ("implicit" if reference else "logprob")
    if (req.scorer == "reward-model") != reward:
        kind = "a reward model (sequence classifier)" if reward else "a causal language model"
        raise ConfigError(f"--scorer {req.scorer} does not apply to {req.model}: it is {kind}")
    if req.scorer == "implicit" and not reference:
        raise ConfigError("--scorer implicit needs a reference model: pass --reference (models trained by "
                         "`align train` record theirs)")
    return req.scorer


def _reference_logps(name: str, tokenizer, lists, req: EvalRequest) -> tuple[torch.Tensor, dict[str, Any]]:
    """π_ref's log-probs of every response through the shared cache (entries training computed are hits)."""
    ref_tok = load_tokenizer(name, key="--reference")
    if ref_tok.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(f"reference {name} has another tokenizer than {req.model}: its log-probs would not be "
                         "of the same token sequences")
    ref_model = load_model(name, req.dtype, key="--reference")
    if torch.cuda.is_available():
        ref_model = ref_model.cuda()
    try:
        reference = reference_for(ref_model, tokenizer, cache_dir=req.cache_dir, batch_size=req.batch_size,
                                  source=Path(req.data).name, model_name=name, progress=req.progress,
                                  packing=req.packing)
        stats = reference.prefetch(lists)
        return pad_values(reference.list_logps(lists)), stats.to_dict()
    finally:
        del ref_model
        gc.collect()


def _idealized(ref: torch.Tensor, labels, mask, lengths, observed: dict[str, float], req: EvalRequest,
               weights: torch.Tensor | None) -> dict[str, dict[str, Any]]:
    n_pairs = per_list_metrics(ref, labels, mask)["n_pairs"].double()
    out = {}
    for beta, counts in idealized_by_beta(ref, labels, mask, lengths, req.betas, req.alpha).items():
        entry: dict[str, Any] = {}
        for kind, correct in counts.items():
            value = float(correct.sum()) / float(n_pairs.sum()) if n_pairs.sum() > 0 else math.nan
            entry[kind] = value
            if weights is not None:
                den = (weights * n_pairs).sum(-1)
                entry[f"{kind}_ci"] = percentile_interval((weights * correct.double()).sum(-1) / den.clamp(min=1e-300),
                                                          req.level)
            obs = observed.get(kind)
            entry["gap" if kind == "summed" else f"gap_{kind}"] = None if obs is None else value - obs
        out[f"{beta:g}"] = entry
    return out


def run_eval(req: EvalRequest) -> dict[str, Any]:
    """Evaluate ``req.model`` on ``req.data``; returns the JSON-ready result (see ``eval/README.md``).

    Lengths and the split fraction left None are the ones the model's run trained with (``settings`` in the
    result says which were used and where they came from)."""
    settings = resolve_settings(req.model, {k: getattr(req, k) for k in DEFAULTS})
    req = dataclasses.replace(req, **{k: settings[k] for k in DEFAULTS})
    result = _run_eval(req)
    settings["chat_template"] = bool(getattr(load_tokenizer(req.model, key="--model"), "chat_template", None))
    result["settings"] = settings
    return result


def _run_eval(req: EvalRequest) -> dict[str, Any]:
    if req.scorer == "task" or req.data.startswith("task:"):
        if req.scorer not in ("task", "auto"):
            raise ConfigError(f"--data {req.data} is a built-in task: it is scored with --scorer task, not "
                             f"{req.scorer}")
        from align.evaluation.task import run_task_eval

        return run_task_eval(req)
    examples, report = load_examples(req.data, format=req.format, strict=req.strict, max_rows=req.max_rows,
                                     columns=req.columns)
    if req.split != "all":
        train, held_out = split_examples(examples, req.eval_fraction)
        examples = held_out if req.split == "eval" else train
    info = read_model_info(req.model)
    reward = is_reward_model(req.model)
    reference = req.reference or info.get("reference")
    if reference and not req.reference and not _loadable(reference):
        if req.scorer not in ("logprob", "reward-model"):
            raise ConfigError(f"the reference {reference} recorded with {req.model} is not found (moved or deleted): "
                             "pass --reference PATH to score the implicit reward, or --scorer logprob to evaluate "
                             "the log-likelihood alone")
        reference = None
    scorer = _choose_scorer(req, reward, reference)
    tokenizer = load_tokenizer(req.model, key="--model")
    lists, trunc = tokenize_examples(examples, tokenizer, max_prompt_length=req.max_prompt_length,
                                     max_response_length=req.max_response_length)
    data = {**report.to_dict(), "split": req.split, "eval_fraction": req.eval_fraction if req.split != "all" else None,
            "lists": len(lists), "truncation": trunc.to_dict()}
    result: dict[str, Any] = {"model": req.model, "scorer": scorer, "reference": reference, "reference_cache": None}
    if not any(len(set(t.labels)) > 1 for t in lists):
        from align.errors import DataError

        raise DataError(f"no list with a preference to evaluate in {req.data} ({len(lists)} lists kept; skipped: "
                        f"{dict(report.skipped) or 'none'})")

    labels, mask, lengths = list_tensors(lists)
    kw = {"batch_size": req.batch_size, "pad_token_id": tokenizer.pad_token_id or 0, "progress": req.progress}
    if reward:
        model = check_finite_weights(load_reward_model(req.model, req.dtype, tokenizer), req.model)
        model = model.cuda() if torch.cuda.is_available() else model
        scorers = {"reward-model": finite_or_nan(reward_scores(model, lists, **kw))}
        logps = None
    else:
        model = check_finite_weights(load_model(req.model, req.dtype, key="--model"), req.model)
        model = model.cuda() if torch.cuda.is_available() else model
        logps, _ = score_lists(model, lists, desc="eval", packing=req.packing, **kw)
    del model
    gc.collect()

    ref = None
    if reference:
        ref, result["reference_cache"] = _reference_logps(reference, tokenizer, lists, req)
    if not reward:
        scorers = policy_scorers(logps, lengths, ref)  # implicit too whenever a reference is known
    headline = "reward-model" if reward else scorer
    # one set of resamples for every metric, scorer and the idealized accuracy below
    weights = bootstrap_weights(len(lists), req.resamples, req.seed) if req.resamples else None
    result.update(report_scores(scorers, headline, lists, ndcg_k=req.ndcg_k, level=req.level, weights=weights,
                                resamples=req.resamples))
    # A NaN or infinite score never counts as a tie (that would make a broken model look perfect, ties correct):
    # its pairs count as wrong, and the scores are counted here.
    result["non_finite_scores"] = {name: int((~torch.isfinite(v) & mask).sum()) for name, v in scorers.items()}
    if any(result["non_finite_scores"].values()):
        log.warning("non-finite scores (counted as wrong, never as ties): %s", result["non_finite_scores"])
    result["confidence"] = {"level": req.level, "resamples": req.resamples, "unit": "list", "seed": req.seed}

    # Idealized ranking accuracy: π_ref is the recorded/explicit reference, else (a plain LM) the model itself.
    by = result["by_scorer"]
    if reward:
        observed = {"summed": by["reward-model"]["pairwise_accuracy_ties_correct"]}
        observed["length_normalized"] = observed["summed"]
    else:
        observed = {"summed": by["logprob"]["pairwise_accuracy_ties_correct"],
                    "length_normalized": by["logprob_mean"]["pairwise_accuracy_ties_correct"]}
    ideal_ref = ref if ref is not None else (None if reward else torch.nan_to_num(logps))
    result["idealized_reference"] = reference or (None if reward else f"{req.model} (itself)")
    result["observed_ranking_accuracy"] = observed
    result["idealized_ranking_accuracy"] = None
    if ideal_ref is not None:
        result["idealized_ranking_accuracy"] = _idealized(ideal_ref, labels, mask, lengths, observed, req, weights)
        ref_acc = aggregate(per_list_metrics(ideal_ref, labels, mask))
        result["reference_ranking_accuracy"] = ref_acc["pairwise_accuracy_ties_correct"].item()
    else:
        log.warning("no reference language model for %s: idealized ranking accuracy not computed (pass --reference)",
                    req.model)

    head = scorers[headline]
    if any(t.subset for t in lists):
        per = per_list_metrics(head, labels, mask)
        result.update(subset_report([t.subset for t in lists], per["correct"], per["n_pairs"],
                                    resamples=req.resamples, seed=req.seed, level=req.level))
    w, lo = preference_pairs(labels, mask).take(head.double())
    margins = (w - lo)[torch.isfinite(w - lo)]
    scale = (req.beta or info.get("beta") or 0.1) if headline == "implicit" else 1.0
    result["calibration"] = reliability(margins, scale=scale)
    result["margins"] = {"mean": margins.mean().item(), "median": margins.median().item(),
                         "std": margins.std().item() if len(margins) > 1 else 0.0} if len(margins) else None
    if req.plots_dir:
        result["plots"] = [str(p) for p in write_plots(result, margins, Path(req.plots_dir))]
    result["data"] = data
    if req.per_example:
        write_per_example(Path(req.per_example), lists, scorers, labels, mask)
        result["per_example"] = req.per_example
    return result


def finite_or_nan(values: torch.Tensor) -> torch.Tensor:
    """``values`` with every infinite entry made NaN (a score that cannot be compared)."""
    return torch.where(torch.isinf(values), torch.full_like(values, math.nan), values)


def write_per_example(path: Path, lists, scorers: dict[str, torch.Tensor], labels: torch.Tensor,
                      mask: torch.Tensor) -> None:
    """One JSON line per list: its source row, labels, every scorer's scores and its per-list metrics, so two
    models can be compared example by example."""
    from align.io import json_text

    per = {name: per_list_metrics(v, labels, mask) for name, v in scorers.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for i, t in enumerate(lists):
            k = len(t.response_ids)
            row = {"index": i, "row": t.row, "subset": t.subset, "labels": list(t.labels),
                   "scores": {name: v[i, :k].tolist() for name, v in scorers.items()},
                   "metrics": {name: {"pairs": int(m["n_pairs"][i]), "correct": int(m["correct"][i]),
                                      "exact_match": bool(m["list_exact_match"][i]) if m["has_pair"][i] else None,
                                      "kendall_tau": float(m["kendall_tau"][i]) if m["has_pair"][i] else None}
                               for name, m in per.items()}}
            f.write(json_text(row).replace("\n", " ") + "\n")
    tmp.replace(path)


def _loadable(name: str) -> bool:
    p = Path(name)
    return p.exists() or not (p.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1)


def write_plots(result: dict[str, Any], margins: torch.Tensor, out_dir: Path) -> list[Path]:
    """accuracy_vs_beta.png (when the idealized accuracy exists), margins.png and reliability.png."""
    from align.evaluation.plots import plot_accuracy_vs_beta, plot_margin_histogram, plot_reliability

    name, scorer = "/".join(Path(result["model"]).parts[-2:]) or result["model"], result["scorer"]
    paths = []
    ideal = result.get("idealized_ranking_accuracy")
    if ideal:  # for a reward model: what a DPO policy from the same π_ref could reach at best, beside the RM's own
        betas = [float(b) for b in ideal]
        series = {"R* (summed)": "summed", "R̃* (length-normalised)": "length_normalized"}
        obs = result["observed_ranking_accuracy"]
        observed = ({"reward model accuracy (ties correct)": obs["summed"]} if scorer == "reward-model" else
                    {"R observed (summed)": obs["summed"], "R̃ observed (length-normalised)": obs["length_normalized"]})
        observed["π_ref accuracy"] = result.get("reference_ranking_accuracy")
        paths.append(plot_accuracy_vs_beta(
            out_dir / "accuracy_vs_beta.png", betas, {k: [ideal[b][v] for b in ideal] for k, v in series.items()},
            observed, {k: [ideal[b].get(f"{v}_ci") for b in ideal] for k, v in series.items()},
            title=f"{name}: observed vs idealized ranking accuracy"))
    paths.append(plot_margin_histogram(out_dir / "margins.png", margins, title=f"{name}: {scorer} margins"))
    paths.append(plot_reliability(out_dir / "reliability.png", result["calibration"],
                                  title=f"{name}: σ({result['calibration']['scale']:g}·margin) as P(preferred)"))
    return paths


def _f(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _ci(ci: Any) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "—"


def eval_markdown(result: dict[str, Any]) -> str:
    """The tables ``align eval`` prints: headline metrics with CIs, every scorer, idealized accuracy by β,
    per-subset and per-section accuracy."""
    if result.get("scorer") == "task":
        from align.evaluation.task import task_markdown

        return task_markdown(result)
    if result.get("pairwise_accuracy") is None and not result.get("by_scorer"):
        return "no labelled pairs to evaluate"
    level = int(round(100 * result.get("confidence", {}).get("level", 0.95)))
    ci = result.get("ci", {})
    lines = [f"scorer: {result['scorer']}  ({result['n_pairs']} pairs in {result['n_lists']} lists)", "",
             f"| metric | value | {level}% CI |", "|---|---|---|"]
    names = {"pairwise_accuracy": "pairwise accuracy (strict)",
             "pairwise_accuracy_ties_correct": "pairwise accuracy (ties correct)",
             "list_exact_match": "list exact match", "top1_accuracy": "top-1 accuracy", "kendall_tau": "Kendall τ",
             "ndcg": "NDCG", "ndcg_at_k": f"NDCG@{result.get('ndcg_k')}"}
    lines += [f"| {label} | {_f(result.get(k))} | {_ci(ci.get(k))} |" for k, label in names.items()]
    norm = result.get("length_normalized")
    if norm:  # the same scorer per token, beside the summed one
        lines.append(f"| pairwise accuracy (strict), per token ({norm['scorer']}) | {_f(norm['pairwise_accuracy'])} | "
                     f"{_ci(norm.get('ci', {}).get('pairwise_accuracy'))} |")
    by = result.get("by_scorer", {})
    if len(by) > 1:
        lines += ["", "| scorer | pairwise accuracy (strict) | ties correct | exact match | Kendall τ | pairs |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {s} | {_f(m['pairwise_accuracy'])} | {_f(m['pairwise_accuracy_ties_correct'])} | "
                  f"{_f(m['list_exact_match'])} | {_f(m['kendall_tau'])} | {m['n_pairs']} |" for s, m in by.items()]
    ideal = result.get("idealized_ranking_accuracy")
    if ideal:
        obs = result["observed_ranking_accuracy"]
        # A reward model's observed accuracy stands for both R and R̃: the best a DPO policy trained from the same
        # π_ref could reach, against what the reward model reaches.
        seen = (f"reward model R = R̃ = {_f(obs['summed'])}" if result["scorer"] == "reward-model" else
                f"observed R = {_f(obs['summed'])}, R̃ = {_f(obs['length_normalized'])}")
        lines += ["", f"idealized ranking accuracy (Chen et al. 2024), π_ref = {result['idealized_reference']}; "
                  f"{seen}, π_ref's own = {_f(result.get('reference_ranking_accuracy'))}", "",
                  "| β | R* | R* CI | R̃* | R̃* CI | gap R* − R | gap R̃* − R̃ |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {b} | {_f(e['summed'])} | {_ci(e.get('summed_ci'))} | {_f(e['length_normalized'])} | "
                  f"{_ci(e.get('length_normalized_ci'))} | {_f(e['gap'])} | {_f(e['gap_length_normalized'])} |"
                  for b, e in ideal.items()]
    for key, title in (("by_section", "section"), ("by_subset", "subset")):
        rows = result.get(key)
        if rows:
            lines += ["", f"| {title} | pairwise accuracy (strict) | {level}% CI | pairs |", "|---|---|---|---|"]
            lines += [f"| {s} | {_f(m['pairwise_accuracy'])} | {_ci(m.get('ci'))} | {m['n_pairs']} |"
                      for s, m in rows.items()]
    cal = result.get("calibration")
    if cal:
        lines += ["", f"calibration of σ({cal['scale']:g}·margin): ECE {_f(cal['ece'])} over {cal['n_pairs']} pairs"]
    return "\n".join(lines)
