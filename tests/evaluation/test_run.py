"""``align eval`` end to end: scorer choice, idealized accuracy, subsets, plots, reward models, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest

from align.cli import main
from align.config import load_recipe
from align.models.loading import MODEL_INFO, is_reward_model, load_reward_model, load_tokenizer
from align.pipeline import run_training
from tests.conftest import HH, OASST

SHORT = ["--max-prompt-length", "48", "--max-response-length", "32", "--bootstrap", "200"]


def _eval(tmp_path, *args: str) -> dict:
    out = tmp_path / "e.json"
    assert main(["eval", *args, *SHORT, "--output", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def reward_run(small_model_dir, tmp_path_factory):
    """The reward recipe (Bradley–Terry) through the whole pipeline on the small model, a few steps."""
    tmp = tmp_path_factory.mktemp("rm")
    recipe = load_recipe("recipes/rm_bt_tiny.yaml", [
        f"model.name_or_path={small_model_dir}", f"data.train={HH}", "data.max_rows=80", "data.max_prompt_length=48",
        "data.max_response_length=32", "sft.enabled=false", "train.max_steps=6", "train.learning_rate=1e-3",
        "train.logging_steps=1", "train.save_steps=100"])
    summary = run_training(recipe, tmp / "run", progress=False)
    return summary, tmp / "run"


def test_reward_recipe_trains_and_records_its_reference(reward_run, small_model_dir):
    summary, run = reward_run
    assert summary["algorithm"] == "reward" and summary["steps"] == 6
    assert summary["reference_cache"]["computed"] == 0  # a reward model needs no reference cache
    assert set(summary["eval"]["by_scorer"]) == {"reward-model"} and summary["eval"]["scorer"] == "reward-model"
    assert summary["eval"]["ci"]["pairwise_accuracy"] is not None
    info = json.loads((run / "model" / MODEL_INFO).read_text())
    assert info == {"kind": "reward", "algorithm": "reward", "beta": None, "reference": str(small_model_dir),
                    "data": {"max_prompt_length": 48, "max_response_length": 32, "eval_fraction": 0.1}}
    assert is_reward_model(str(run / "model"))


def test_eval_reward_model_writes_idealized_and_plots(reward_run, tmp_path, capsys):
    _, run = reward_run
    r = _eval(tmp_path, "--scorer", "reward-model", "--model", str(run / "model"), "--data", str(HH),
              "--max-rows", "60", "--split", "eval", "--eval-fraction", "0.5")
    assert r["scorer"] == "reward-model" and set(r["by_scorer"]) == {"reward-model"}
    assert r["data"]["split"] == "eval" and 0 < r["data"]["lists"] < 60
    for key in ("pairwise_accuracy", "list_exact_match", "top1_accuracy", "kendall_tau", "ndcg_at_k"):
        lo, hi = r["ci"][key]
        assert lo <= r[key] <= hi
    ideal = r["idealized_ranking_accuracy"]
    assert list(ideal) == ["0.01", "0.1", "1", "5", "10"]
    # π_ref is the language model the reward model started from (recorded by align train)
    rc = r["reference_cache"]  # two entries (response sequences) per HH pair
    assert r["idealized_reference"] == r["reference"] and rc["computed"] + rc["hits"] == 2 * r["data"]["lists"]
    assert ideal["0.01"]["summed"] == 1.0  # a shift of 690 nats fixes every pair
    # the shift (1/β)·log(α/(1−α)) > 0 only fixes pairs, and less as β grows: R* falls with β toward π_ref's own
    values = [e["summed"] for e in ideal.values()]
    assert values == sorted(values, reverse=True) and values[-1] >= r["reference_ranking_accuracy"]
    e = ideal["1"]
    assert e["gap"] == pytest.approx(e["summed"] - r["observed_ranking_accuracy"]["summed"])
    names = sorted(p.split("/")[-1] for p in r["plots"])
    # R*(β) beside the reward model's own accuracy: the plot and the printed table, one row per β
    assert names == ["accuracy_vs_beta.png", "margins.png", "reliability.png"]
    for p in r["plots"]:
        assert open(p, "rb").read(4) == b"\x89PNG"
    out = capsys.readouterr().out
    assert "| pairwise accuracy (strict) |" in out and "| β | R* |" in out
    assert f"reward model R = R̃ = {r['observed_ranking_accuracy']['summed']:.3f}" in out
    for beta, e in ideal.items():
        assert f"| {beta} | {e['summed']:.3f} |" in out


def test_eval_policy_scorers_and_errors(reward_run, small_model_dir, tmp_path, capsys):
    _, run = reward_run
    # a reward model has no log-likelihood: a clear error, exit 2, no traceback
    assert main(["eval", "--scorer", "logprob", "--model", str(run / "model"), "--data", str(HH), *SHORT]) == 2
    assert "is a reward model" in capsys.readouterr().err
    # a plain LM has no reference: implicit is refused, logprob uses the model itself as π_ref for R*
    assert main(["eval", "--scorer", "implicit", "--model", str(small_model_dir), "--data", str(HH), *SHORT]) == 2
    assert "needs a reference" in capsys.readouterr().err
    r = _eval(tmp_path, "--model", str(small_model_dir), "--data", str(OASST), "--no-plots")
    assert r["scorer"] == "logprob" and r["idealized_reference"].endswith("(itself)") and "plots" not in r
    assert r["n_pairs"] > r["n_lists"] and r["ndcg_k"] == 3
    # as β grows the idealized policy stays with π_ref: R* (strict) → π_ref's strict accuracy
    strict_ref = r["by_scorer"]["logprob"]["pairwise_accuracy"]
    assert r["idealized_ranking_accuracy"]["10"]["summed"] >= strict_ref - 0.05


def test_auto_scorer_uses_the_recorded_reference(small_model_dir, tmp_path, capsys):
    policy = tmp_path / "policy"
    shutil.copytree(small_model_dir, policy)
    (policy / MODEL_INFO).write_text(json.dumps({"kind": "policy", "beta": 0.5, "reference": str(small_model_dir)}))
    r = _eval(tmp_path, "--model", str(policy), "--data", str(HH), "--max-rows", "30")
    assert r["scorer"] == "implicit" and r["reference"] == str(small_model_dir)
    assert r["pairwise_accuracy"] == 0.0 and r["pairwise_accuracy_ties_correct"] == 1.0  # π == π_ref
    assert r["calibration"]["scale"] == 0.5  # σ(β·h) with the training β
    # a recorded reference that is gone: a one-line error that says what to do, not a silent switch of scorer
    (policy / MODEL_INFO).write_text(json.dumps({"reference": str(tmp_path / "deleted")}))
    from align.cli import main

    assert main(["eval", "--model", str(policy), "--data", str(HH), "--max-rows", "30", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "is not found" in err and "--reference" in err and "--scorer logprob" in err
    # ... and asking for the log-likelihood accepts it
    r = _eval(tmp_path, "--model", str(policy), "--data", str(HH), "--max-rows", "30", "--scorer", "logprob")
    assert r["scorer"] == "logprob" and r["reference"] is None


def test_reference_with_another_tokenizer_is_refused(reward_run, tmp_path, capsys):
    _, run = reward_run
    from align.models.tiny import build_tokenizer, corpus_files

    other = tmp_path / "other"
    shutil.copytree(run / "model", other)
    build_tokenizer(corpus_files(), vocab_size=300).save_pretrained(other)
    assert main(["eval", "--model", str(run / "model"), "--reference", str(other), "--data", str(HH), *SHORT]) == 2
    assert "another tokenizer" in capsys.readouterr().err


def test_rewardbench_subsets_and_sections(reward_run, tmp_path, capsys):
    _, run = reward_run
    rows = []
    for i in range(12):
        subset = ["mt-bench-easy", "alpacaeval-easy", "refusals-dangerous", "my-own"][i % 4]
        rows.append({"prompt": f"question {i}?", "chosen": f"a careful answer {i}", "rejected": f"no {i}",
                     "subset": subset, "id": i})
    rows.append({"prompt": "p", "chosen": "same", "rejected": "same", "subset": "my-own"})  # skipped, counted
    data = tmp_path / "rb.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = _eval(tmp_path, "--model", str(run / "model"), "--data", str(data), "--no-plots")
    assert set(r["by_subset"]) == {"mt-bench-easy", "alpacaeval-easy", "refusals-dangerous", "my-own"}
    assert {k: v["n_pairs"] for k, v in r["by_section"].items()} == {"chat": 6, "safety": 3, "other": 3}
    chat = r["by_section"]["chat"]
    subs = [r["by_subset"][s] for s in ("mt-bench-easy", "alpacaeval-easy")]
    assert chat["pairwise_accuracy"] == pytest.approx(sum(s["pairwise_accuracy"] * s["n_pairs"] for s in subs) / 6)
    assert sum(r["data"]["skipped"].values()) == 1
    assert "| chat |" in capsys.readouterr().out


def test_reward_model_from_a_causal_lm_has_one_output(small_model_dir):
    tok = load_tokenizer(str(small_model_dir))
    model = load_reward_model(str(small_model_dir), tokenizer=tok)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
