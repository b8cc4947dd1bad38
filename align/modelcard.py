"""The model card (``model/README.md``) of a trained model, built with ``huggingface_hub``'s ``ModelCard``.

The metadata header follows the Hub's model-card spec and the keys TRL's cards use (``base_model``,
``library_name``, ``tags``, ``datasets``, ``model_name``), plus ``pipeline_tag`` and a ``model-index`` with the
held-out evaluation. The body says how the model was made and measured, and how to reproduce it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from align.run_summary import (
    LIST_METRICS,
    METRIC_LABELS,
    SCORER_LABELS,
    cache_table,
    ci_level,
    data_table,
    eval_table,
    is_ranked,
    loss_settings,
    reference_description,
    reproduce_section,
    training_table,
)

DATA_SUFFIXES = (".json", ".jsonl", ".gz", ".parquet", ".csv", ".txt", ".arrow")
PIPELINE_TAGS = {"policy": "text-generation", "reward": "text-classification"}
DPO_VARIANTS = ("ipo", "hinge", "robust")  # loss types with their own names in the literature


def is_hub_id(name: str | None) -> bool:
    """Whether ``name`` reads as a Hub repository id (``owner/name``) rather than a local path or ``embedded:``."""
    if not name or Path(name).exists() or name.startswith(("embedded:", "/", ".", "~")):
        return False
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name)) and not name.endswith(DATA_SUFFIXES)


def model_kind(summary: dict[str, Any], model_dir: Path | None = None) -> str:
    """``policy`` or ``reward``: from ``align_model.json`` beside the weights, else from the algorithm."""
    info = (model_dir / "align_model.json") if model_dir else None
    if info is not None and info.is_file():
        kind = json.loads(info.read_text()).get("kind")
        if kind in PIPELINE_TAGS:
            return kind
    return "reward" if summary.get("algorithm") == "reward" else "policy"


def card_tags(summary: dict[str, Any], recipe: dict[str, Any], kind: str) -> list[str]:
    """``align``, the algorithm, a named DPO variant (``ipo``, ``hinge``, ``robust``), and ``lora`` /
    ``reward-model`` where they apply."""
    algo = summary.get("algorithm") or recipe.get("algorithm")
    tags = ["align", *([algo] if algo else [])]
    loss_type = (recipe.get("loss") or {}).get("loss_type")
    if algo == "dpo" and loss_type in DPO_VARIANTS:
        tags.append(loss_type)
    if (recipe.get("peft") or {}).get("enabled"):
        tags.append("lora")
    if kind == "reward":
        tags.append("reward-model")
    return tags


def eval_results(summary: dict[str, Any], recipe: dict[str, Any], kind: str) -> list[EvalResult]:
    """The headline scorer's held-out metrics after training as ``EvalResult`` rows of the ``model-index``:
    pairwise accuracy, and the list metrics when the lists are longer than pairs."""
    ev = summary.get("eval") or {}
    scorer = ev.get("scorer")
    if not scorer or ev.get("pairwise_accuracy") is None:
        return []
    d = recipe.get("data") or {}
    source = d.get("eval") or d.get("train") or "unknown"
    name = source if is_hub_id(source) else Path(source).name
    held_out = "" if d.get("eval") else f" (held-out {d.get('eval_fraction', 0.1):.0%}, split by prompt hash)"
    level = ci_level(summary)
    results = []
    for metric in ("pairwise_accuracy", *(LIST_METRICS if is_ranked(summary) else ())):
        value = ev.get(metric)
        if value is None:
            continue
        ci = (ev.get("ci") or {}).get(metric)
        ci_text = f", {level}% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else ""
        results.append(EvalResult(
            task_type=PIPELINE_TAGS[kind], dataset_type=name, dataset_name=f"{name}{held_out}",
            dataset_split=d.get("split") if is_hub_id(source) else None,
            metric_type="accuracy" if metric == "pairwise_accuracy" else metric, metric_value=round(value, 4),
            metric_name=f"{METRIC_LABELS.get(metric, metric)} ({SCORER_LABELS.get(scorer, scorer)}{ci_text})"))
    return results


def model_card(summary: dict[str, Any], recipe: dict[str, Any], command: str | None = None, *,
               model_name: str = "model", model_dir: Path | None = None, library_name: str = "transformers",
               license: str | None = None, repo_id: str | None = None) -> ModelCard:
    """The card of a run, from its ``summary.json`` and ``recipe.json`` dicts (missing keys are tolerated).

    Args:
        summary / recipe: what ``run_training`` writes as ``summary.json`` / ``recipe.json``.
        command: the exact command line that started the run (shown under *Reproduce*).
        model_name: the ``model_name`` of the metadata and the ``model-index`` (the card's title).
        model_dir: the saved model, to read ``align_model.json`` (policy or reward model).
        library_name: how the Hub loads the weights; they are a plain ``transformers`` checkpoint.
        license: a Hub license id, when known.
        repo_id: the Hub repository the model will be pushed to (used in the loading snippet).
    """
    recipe = recipe or {}
    kind = model_kind(summary, model_dir)
    m, d = recipe.get("model") or {}, recipe.get("data") or {}
    base = m.get("name_or_path") or summary.get("start_model")
    datasets = [x for x in (d.get("train"), d.get("eval")) if is_hub_id(x)]
    results = eval_results(summary, recipe, kind)
    data = ModelCardData(base_model=base if is_hub_id(base) else None, datasets=datasets or None,
                         library_name=library_name, license=license, model_name=model_name,
                         pipeline_tag=PIPELINE_TAGS[kind], tags=card_tags(summary, recipe, kind),
                         eval_results=results or None)
    body = card_body(summary, recipe, command, model_name, kind, repo_id)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def card_body(summary: dict[str, Any], recipe: dict[str, Any], command: str | None, model_name: str,
              kind: str, repo_id: str | None = None) -> str:
    """The Markdown body of the card."""
    m, sft, peft = recipe.get("model") or {}, recipe.get("sft") or {}, recipe.get("peft") or {}
    algo = summary.get("algorithm") or recipe.get("algorithm") or "?"
    base = m.get("name_or_path") or summary.get("start_model") or "?"
    what = "a reward model (scalar score head)" if kind == "reward" else "a causal language model"
    lines = [f"# {model_name}", "",
             f"{what[0].upper()}{what[1:]} trained with `align` using `{algo}` on ranked "
             f"responses, starting from `{base}`.", "",
             "## Training", "",
             f"- **Base model:** `{base}` (dtype {m.get('dtype', '?')})"]
    if sft.get("enabled"):
        lines.append(f"- **SFT stage:** {sft.get('max_steps')} steps on the preferred responses, learning rate "
                     f"{sft.get('learning_rate')}, batch {sft.get('batch_size')}; the result is `"
                     f"{summary.get('start_model', '?')}`")
    lines.append(f"- **Algorithm:** `{algo}`, loss settings {loss_settings(recipe)}")
    lines.append(f"- **Reference model:** {reference_description(summary, recipe)}")
    if peft.get("enabled"):
        lines.append(f"- **LoRA:** r={peft.get('r')}, alpha={peft.get('lora_alpha')}, modules "
                     f"{peft.get('target_modules')}; the weights here are merged (the adapter alone is in the run's "
                     f"`adapter/`)")
    t = recipe.get("train") or {}
    if t:
        lines.append(f"- **Optimisation:** learning rate {t.get('learning_rate')}, batch "
                     f"{t.get('per_device_train_batch_size')} × accumulation {t.get('gradient_accumulation_steps')}, "
                     f"{t.get('lr_scheduler_type')} schedule, warmup {t.get('warmup_steps')} steps, "
                     f"seed {t.get('seed')}")
    lines += ["", training_table(summary), "",
              "## Data", "", data_table(summary, recipe), "",
              "## Evaluation", "", eval_table(summary), "",
              "## Reference cache", "",
              "The reference model's log-probs of every response were computed once into a verified on-disk cache.",
              "", cache_table(summary), "",
              "## Use", "", "```python", usage_snippet(kind, repo_id or "path/to/model"), "```", "",
              "## Reproduce", "", reproduce_section(recipe, command)]
    return "\n".join(lines)


def usage_snippet(kind: str, path: str = "path/to/model") -> str:
    """How to load the saved model with transformers."""
    cls = "AutoModelForSequenceClassification" if kind == "reward" else "AutoModelForCausalLM"
    return (f"from transformers import AutoTokenizer, {cls}\n\n"
            f"tokenizer = AutoTokenizer.from_pretrained({path!r})\nmodel = {cls}.from_pretrained({path!r})")


def write_model_card(model_dir: str | Path, summary: dict[str, Any], recipe: dict[str, Any],
                     command: str | None = None, *, model_name: str | None = None,
                     library_name: str = "transformers", license: str | None = None,
                     repo_id: str | None = None) -> Path:
    """Write ``model_dir/README.md``, the model card of a finished run (see :func:`model_card`).

    ``model_name`` defaults to the run directory's name (the parent of ``model_dir``). Returns the card's path.
    """
    model_dir = Path(model_dir)
    name = model_name or model_dir.resolve().parent.name or "model"
    card = model_card(summary, recipe, command, model_name=name, model_dir=model_dir, library_name=library_name,
                      license=license, repo_id=repo_id)
    path = model_dir / "README.md"
    card.save(path)
    return path
