"""``align eval --model RUN/model --split eval`` after ``align train``: by default it tokenizes with the lengths
the run trained with (and splits with its eval fraction), so it measures the run's own held-out sequences and reads
every reference entry from the run's cache; it says which settings it used, and flags override them."""

from __future__ import annotations

import json
import shutil

import pytest

from align.cli import main
from align.config import load_recipe
from align.evaluation.settings import resolve_settings
from align.models.loading import MODEL_INFO
from align.pipeline import run_training
from tests.conftest import HH, REPO


@pytest.fixture(scope="module")
def dpo_run(small_model_dir, tmp_path_factory):
    """recipes/dpo_tiny.yaml, shortened: lengths 32 + 16 and a 0.2 held-out fraction, both unlike eval's defaults."""
    tmp = tmp_path_factory.mktemp("dpo_settings")
    recipe = load_recipe(REPO / "recipes/dpo_tiny.yaml", [
        f"model.name_or_path={small_model_dir}", f"data.train={HH}", "data.max_rows=60", "data.eval_fraction=0.2",
        "data.max_prompt_length=32", "data.max_response_length=16", "sft.enabled=false", "train.max_steps=2",
        "train.per_device_train_batch_size=4", "train.save_steps=100", f"reference.cache_dir={tmp / 'cache'}"])
    summary = run_training(recipe, tmp / "run", progress=False)
    return summary, tmp


def _eval(tmp, model, capsys, *flags: str) -> tuple[dict, str]:
    out = tmp / "e.json"
    assert main(["eval", "--model", str(model), "--data", str(HH), "--max-rows", "60", "--split", "eval",
                 "--cache-dir", str(tmp / "cache"), "--bootstrap", "0", "--no-plots", "--output", str(out),
                 *flags]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def test_eval_defaults_to_the_runs_lengths_and_reads_its_cache(dpo_run, capsys):
    summary, tmp = dpo_run
    r, out = _eval(tmp, tmp / "run" / "model", capsys)
    s = r["settings"]
    assert (s["max_prompt_length"], s["max_response_length"], s["eval_fraction"]) == (32, 16, 0.2)
    assert s["from"] == {"max_prompt_length": "run", "max_response_length": "run", "eval_fraction": "run"}
    assert s["run_settings"].endswith(MODEL_INFO)
    # the run's own held-out lists: every reference entry is a hit in the run's cache
    assert r["data"]["lists"] == summary["data"]["eval_lists"]
    rc = r["reference_cache"]
    assert rc["computed"] == 0 and rc["hits"] == 2 * r["data"]["lists"]
    # ... and the run's own "after" evaluation, measured again
    assert r["pairwise_accuracy"] == pytest.approx(summary["eval"]["pairwise_accuracy"])
    assert "max_prompt_length 32 (the run's)" in out and "max_response_length 16 (the run's)" in out
    # the per-token implicit reward is reported beside the summed one
    norm = r["length_normalized"]
    assert norm["scorer"] == "implicit_mean" and norm == {"scorer": "implicit_mean", **r["by_scorer"]["implicit_mean"]}
    assert f"per token (implicit_mean) | {norm['pairwise_accuracy']:.3f}" in out


def test_flags_override_the_runs_settings(dpo_run, capsys):
    _, tmp = dpo_run
    r, out = _eval(tmp, tmp / "run" / "model", capsys, "--max-prompt-length", "64", "--max-response-length", "48")
    s = r["settings"]
    assert (s["max_prompt_length"], s["max_response_length"]) == (64, 48)
    assert s["from"]["max_prompt_length"] == "flag" and s["from"]["eval_fraction"] == "run"
    assert r["reference_cache"]["computed"] > 0  # other sequences than the run's
    assert "max_prompt_length 64 (given)" in out


def test_a_model_of_an_older_run_is_read_through_its_recipe_json(dpo_run, tmp_path):
    _, tmp = dpo_run
    run = tmp_path / "run"
    shutil.copytree(tmp / "run" / "model", run / "model")
    shutil.copy(tmp / "run" / "recipe.json", run / "recipe.json")
    info = json.loads((run / "model" / MODEL_INFO).read_text())
    info.pop("data")
    (run / "model" / MODEL_INFO).write_text(json.dumps(info))
    s = resolve_settings(str(run / "model"), {"max_response_length": 24})
    assert (s["max_prompt_length"], s["max_response_length"], s["eval_fraction"]) == (32, 24, 0.2)
    assert s["run_settings"] == str(run / "recipe.json")
    # a model no run saved: eval's own defaults
    s = resolve_settings(str(tmp_path), {})
    assert (s["max_prompt_length"], s["max_response_length"], s["eval_fraction"], s["run_settings"]) == \
        (512, 512, 0.1, None)
