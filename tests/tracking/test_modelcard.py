"""The model card of a real finished run: metadata and evaluation read back with huggingface_hub's own loader,
the body's tables, a recipe that reproduces the run, and cards for runs without evaluation or reference."""

from __future__ import annotations

import copy
import json
import re

from huggingface_hub import ModelCard

from align.config import load_recipe, to_dict
from align.modelcard import is_hub_id, write_model_card


def _ci(v, ci):
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def test_card_of_a_finished_run(finished_run, tmp_path):
    run, summary = finished_run
    recipe = json.loads((run / "recipe.json").read_text())
    command = "align train recipes/lipo_tiny.yaml train.max_steps=6 --output-dir runs/x"
    path = write_model_card(run / "model", summary, recipe, command)
    assert path == run / "model" / "README.md"

    card = ModelCard.load(path)
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert data.tags == ["align", "lipo"]
    assert data.base_model is None and data.datasets is None  # a local model and a local file are no hub ids
    ev = summary["eval"]
    assert ev["scorer"] == "implicit" and ev["n_pairs"] > ev["n_lists"]  # ranked lists: list metrics too
    results = {r.metric_type: r for r in data.eval_results}
    assert set(results) == {"accuracy", "list_exact_match", "top1_accuracy", "kendall_tau", "ndcg"}
    assert results["accuracy"].metric_value == round(ev["pairwise_accuracy"], 4)
    assert results["kendall_tau"].metric_value == round(ev["kendall_tau"], 4)
    assert results["accuracy"].task_type == "text-generation"
    assert results["accuracy"].dataset_type == "oasst_en_trees.jsonl"
    lo, hi = ev["ci"]["pairwise_accuracy"]
    assert f"95% CI [{lo:.3f}, {hi:.3f}]" in results["accuracy"].metric_name
    assert data.model_name == "run"  # the run directory's name

    text = card.text
    b, a = summary["eval_before"]["by_scorer"]["logprob"], ev["by_scorer"]["logprob"]
    assert (f"| summed log-prob | pairwise accuracy | {_ci(b['pairwise_accuracy'], b['ci']['pairwise_accuracy'])} "
            f"| {_ci(a['pairwise_accuracy'], a['ci']['pairwise_accuracy'])} |") in text
    assert (f"| implicit reward log π − log π_ref | Kendall τ | — | "
            f"{_ci(ev['kendall_tau'], ev['ci']['kendall_tau'])} |") in text
    rc, d = summary["reference_cache"], summary["data"]
    assert f"| key | `{rc['key']}` |" in text and f"| computed (lists scored) | {rc['computed']} |" in text
    assert f"| rows read | {d['rows_read']} |" in text and f"| eval lists | {d['eval_lists']} |" in text
    assert f"| optimizer steps | {summary['steps']} |" in text
    assert "`beta=0.05`" in text and "`loss_type=lambda`" in text
    assert command in text and "AutoModelForCausalLM" in text

    # The recipe in the card is complete: read back by `align train`, it is the run's recipe.
    yaml_block = re.search(r"```yaml\n(.*?)\n```", text, re.S).group(1)
    (tmp_path / "recipe.yaml").write_text(yaml_block)
    assert to_dict(load_recipe(tmp_path / "recipe.yaml")) == recipe


def test_card_metadata_with_hub_ids(finished_run, tmp_path):
    run, summary = finished_run
    recipe = json.loads((run / "recipe.json").read_text())
    recipe["model"]["name_or_path"] = "Qwen/Qwen2-0.5B"
    recipe["data"]["train"] = "OpenAssistant/oasst1"
    recipe["peft"]["enabled"] = True
    (tmp_path / "model").mkdir()
    card = ModelCard.load(write_model_card(tmp_path / "model", summary, recipe, None, model_name="qwen-lipo",
                                           license="apache-2.0", repo_id="me/qwen-lipo"))
    assert card.data.base_model == "Qwen/Qwen2-0.5B" and card.data.datasets == ["OpenAssistant/oasst1"]
    assert card.data.license == "apache-2.0" and card.data.tags == ["align", "lipo", "lora"]
    r = card.data.eval_results[0]
    assert r.dataset_type == "OpenAssistant/oasst1" and r.dataset_split == "train"
    assert card.data.model_name == "qwen-lipo"
    assert "from_pretrained('me/qwen-lipo')" in card.text
    assert "align train recipe.yaml" in card.text  # no command known: the recipe alone reproduces it


def test_card_without_evaluation_or_reference(finished_run, tmp_path):
    run, summary = finished_run
    recipe = json.loads((run / "recipe.json").read_text())
    # Cringe-like: no reference cache; evaluation switched off.
    s = copy.deepcopy(summary)
    s.update(algorithm="cringe", eval=None, eval_before=None,
             reference_cache={"key": None, "hits": 0, "computed": 0, "seconds": 0.0})
    r = copy.deepcopy(recipe)
    r.update(algorithm="cringe", loss={"b": 10.0, "tau": 0.1})
    (tmp_path / "m1").mkdir()
    card = ModelCard.load(write_model_card(tmp_path / "m1", s, r))
    assert card.data.eval_results is None and card.data.model_name == tmp_path.name  # the run dir's name
    assert "No held-out evaluation was run" in card.text and "No reference cache" in card.text
    assert "none (this algorithm uses no reference model)" in card.text

    # A reward model: the model's own align_model.json says so; its "before" is the random head.
    s = copy.deepcopy(summary)
    rm = {k: v for k, v in summary["eval"]["by_scorer"]["logprob"].items()}
    s.update(algorithm="reward", reference_cache={},
             eval={**rm, "scorer": "reward-model", "n_lists": summary["eval"]["n_lists"],
                   "by_scorer": {"reward-model": rm}},
             eval_before={"scorer": "reward-model", "by_scorer": {"reward-model": rm}})
    (tmp_path / "m2").mkdir()
    (tmp_path / "m2" / "align_model.json").write_text(json.dumps({"kind": "reward", "algorithm": "reward"}))
    card = ModelCard.load(write_model_card(tmp_path / "m2", s, {}))  # and no recipe at all
    assert card.data.pipeline_tag == "text-classification" and "reward-model" in card.data.tags
    assert card.data.eval_results[0].task_type == "text-classification"
    assert "| reward model score | pairwise accuracy |" in card.text
    assert "random" in card.text and "AutoModelForSequenceClassification" in card.text


def test_is_hub_id(tmp_path):
    assert is_hub_id("Qwen/Qwen2-0.5B") and is_hub_id("Anthropic/hh-rlhf")
    for name in ("embedded:tiny", str(tmp_path), "data/train.jsonl", "../shared/data/x.jsonl.gz", "gpt2", "", None,
                 "a/b/c"):
        assert not is_hub_id(name), name
