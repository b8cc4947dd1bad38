"""The command line: help everywhere, eval JSON keys, bad rows never give a traceback, clear user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from align.cli import main
from tests.conftest import HH, OASST


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "align.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["cache", "--help"], ["eval", "--help"]])
def test_help(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    assert "usage: align" in capsys.readouterr().out


def test_eval_writes_contract_keys(small_model_dir, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["eval", "--model", str(small_model_dir), "--data", str(HH), "--max-rows", "40",
                 "--max-prompt-length", "48", "--max-response-length", "32", "--output", str(out)]) == 0
    r = json.loads(out.read_text())
    for key in ("pairwise_accuracy", "pairwise_accuracy_ties_correct", "n_pairs", "data"):
        assert key in r
    assert r["data"]["rows_read"] == 40 and r["n_pairs"] == r["data"]["lists"] > 30
    assert 0 <= r["pairwise_accuracy"] <= r["pairwise_accuracy_ties_correct"] <= 1
    assert r["scorer"] == "logprob"
    assert "| logprob |" in capsys.readouterr().out


def test_eval_with_reference_uses_implicit_reward(small_model_dir, tmp_path):
    out = tmp_path / "e.json"
    # Policy == reference: every implicit reward is 0, so strict accuracy is 0 and ties-correct is 1.
    assert main(["eval", "--model", str(small_model_dir), "--reference", str(small_model_dir), "--data", str(OASST),
                 "--max-prompt-length", "48", "--max-response-length", "32", "--output", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["scorer"] == "implicit" and r["pairwise_accuracy"] == 0.0
    assert r["pairwise_accuracy_ties_correct"] == 1.0
    assert r["n_pairs"] > r["data"]["lists"]  # ranked lists give more than one pair each
    # all implicit rewards tied: no list is exactly right, tau-b is 0, NDCG is the worst order's
    assert r["list_exact_match"] == 0.0 and r["kendall_tau"] == 0.0 and r["ndcg"] < 1.0
    assert r["n_lists_ranked"] == r["data"]["lists"]
    rc = r["reference_cache"]  # entries: one per distinct (prompt, response) sequence
    assert rc["computed"] + rc["hits"] >= r["n_pairs"] // 2 and rc["computed"] > r["data"]["lists"]


def test_bad_rows_no_traceback(small_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([
        '{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b"}', '{"chosen": 3, "rejected": null}', "not json",
        '{"prompt": "p", "responses": ["x"], "ranks": [0]}', '{"prompt": "p", "chosen": "same", "rejected": "same"}',
        '{"prompt": "p", "chosen": "fine", "rejected": "worse"}']) + "\n")
    out = tmp_path / "bad.json"
    p = _run("eval", "--model", str(small_model_dir), "--data", str(bad), "--output", str(out))
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    r = json.loads(out.read_text())
    assert r["data"]["rows_read"] == 6 and r["data"]["examples"] == 1 and r["n_pairs"] == 1
    assert sum(r["data"]["skipped"].values()) == 5
    # Only bad rows: a one-line error and exit 2, as `align train` gives, not a crash and not a 0 with no result.
    only_bad = tmp_path / "only_bad.jsonl"
    only_bad.write_text("not json\n")
    p = _run("eval", "--model", str(small_model_dir), "--data", str(only_bad), "--output", str(tmp_path / "x.json"))
    assert p.returncode == 2 and "Traceback" not in p.stderr and "no list with a preference" in p.stderr
    assert "invalid json" in p.stderr and not (tmp_path / "x.json").exists()


def test_user_errors_are_one_line(tmp_path):
    p = _run("train", "recipes/dpo_tiny.yaml", "train.lerning_rate=1")
    assert p.returncode == 2 and "unknown key 'train.lerning_rate'" in p.stderr and "Traceback" not in p.stderr
    p = _run("eval", "--model", "x", "--data", str(tmp_path / "missing.jsonl"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    p = _run("eval", "--model", str(tmp_path), "--data", str(HH), "--strict")
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_cache_command_builds_then_reuses(small_model_dir, tmp_path, capsys):
    args = ["cache", "recipes/dpo_tiny.yaml", f"model.name_or_path={small_model_dir}", f"data.train={HH}",
            "data.max_rows=30", "data.max_prompt_length=32", "data.max_response_length=16", "sft.enabled=false",
            f"reference.cache_dir={tmp_path / 'rc'}"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["reference_cache"]["computed"] == 2 * (first["data"]["train_lists"] + first["data"]["eval_lists"]) > 0
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["reference_cache"]["computed"] == 0
    assert second["reference_cache"]["hits"] == first["reference_cache"]["computed"]
    assert second["reference_cache"]["key"] == first["reference_cache"]["key"]


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_outputs_are_strict_json(tmp_path):
    from align.io import json_text

    assert _strict(json_text({"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": -float("inf")}})) == {
        "a": None, "b": [None, 1.5], "c": {"d": None}}


def test_eval_of_a_list_with_a_tie_is_strict_json(small_model_dir, tmp_path):
    tied = tmp_path / "tied.jsonl"  # ranks 0, 1, 1: the tie forms no pair, two pairs remain
    tied.write_text('{"prompt": "p", "responses": ["a", "b", "c"], "ranks": [0, 1, 1]}\n')
    out = tmp_path / "e.json"
    assert main(["eval", "--model", str(small_model_dir), "--data", str(tied), "--output", str(out)]) == 0
    r = _strict(out.read_text())
    assert r["n_pairs"] == 2 and r["data"]["lists"] == 1


def test_overrides_may_follow_options(monkeypatch):
    seen = {}
    monkeypatch.setattr("align.cli.cmd_train", lambda a: seen.update(overrides=a.overrides, out=a.output_dir) or 0)
    assert main(["train", "recipes/dpo_tiny.yaml", "loss.beta=0.2", "--output-dir", "x", "train.max_steps=3"]) == 0
    assert seen == {"overrides": ["loss.beta=0.2", "train.max_steps=3"], "out": "x"}
    with pytest.raises(SystemExit):
        main(["train", "recipes/dpo_tiny.yaml", "--output-dir", "x", "--bogus"])


def test_python_dash_m_align_is_the_command_line():
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-m", "align", "train", "--help"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and "--resume" in done.stdout


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "0", "argument --batch-size: expected an integer >= 1, got '0'"),
    ("--bootstrap", "-1", "argument --bootstrap: expected an integer >= 0, got '-1'"),
    ("--ndcg-k", "0", "argument --ndcg-k: expected an integer >= 1, got '0'"),
    ("--eval-fraction", "1.5", "argument --eval-fraction: expected a finite number in [0, 1], got '1.5'"),
    ("--eval-fraction", "-0.1", "argument --eval-fraction"),
    ("--confidence", "1", "argument --confidence: expected a finite number in (0, 1), got '1'"),
    ("--confidence", "0", "argument --confidence"),
    ("--max-rows", "-1", "argument --max-rows: expected an integer >= 1, got '-1'"),
    ("--max-prompt-length", "0", "argument --max-prompt-length: expected an integer >= 1, got '0'"),
    ("--max-response-length", "-3", "argument --max-response-length"),
    ("--alpha", "nan", "argument --alpha: expected a finite number in (0.5, 1), got 'nan'"),
    ("--alpha", "1", "argument --alpha"),
    ("--beta", "inf", "argument --beta: expected a finite number > 0, got 'inf'"),
    ("--beta", "nan", "argument --beta"),
    ("--betas", "0.1,inf", "argument --betas: expected finite positive numbers"),
    ("--batch-size", "two", "argument --batch-size: expected an integer >= 1, got 'two'"),
])
def test_eval_flags_out_of_range_are_usage_errors(flag, value, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "--model", "m", "--data", "d", flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("align eval: error: argument")  # the error itself is one line


def test_eval_flags_in_range_parse():
    from align.cli import build_parser

    a = build_parser().parse_args(["eval", "--model", "m", "--data", "d", "--bootstrap", "0", "--eval-fraction", "1",
                                   "--confidence", "0.9", "--alpha", "0.75", "--beta", "0.5", "--max-rows", "1"])
    assert (a.bootstrap, a.eval_fraction, a.confidence, a.alpha, a.beta, a.max_rows) == (0, 1.0, 0.9, 0.75, 0.5, 1)


def test_eval_lengths_over_the_model_context_stop_before_loading(small_model_dir, capsys):
    # the small model's config says max_position_embeddings = 1024
    assert main(["eval", "--model", str(small_model_dir), "--data", str(HH), "--max-rows", "5",
                 "--max-prompt-length", "100000", "--max-response-length", "32", "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert (f"align eval: error: --max-prompt-length + --max-response-length = 100000 + 32 = 100032 exceeds the "
            f"context of {small_model_dir} (max_position_embeddings=1024 in its config.json)") in err
    assert main(["eval", "--model", str(small_model_dir), "--data", str(HH), "--max-rows", "5", "--reference",
                 str(small_model_dir), "--max-prompt-length", "1000", "--max-response-length", "25",
                 "--bootstrap", "0"]) == 2
    assert "1000 + 25 = 1025 exceeds" in capsys.readouterr().err


def test_train_refuses_bad_settings_before_loading(tmp_path, capsys):
    out = tmp_path / "r"
    # `train.extra.logging_dir` went straight into TrainingArguments: a raw TypeError (transformers 5 has no such field)
    assert main(["train", "recipes/dpo_tiny.yaml", "train.extra.logging_dir=x", "--output-dir", str(out)]) == 2
    assert "train.extra.logging_dir: not a TrainingArguments field in transformers 5" in capsys.readouterr().err
    assert main(["train", "recipes/dpo_tiny.yaml", "loss.beta=.inf", "--output-dir", str(out)]) == 2
    assert "align train: error: loss.beta: got inf; allowed: a finite number > 0" in capsys.readouterr().err
    assert not out.exists()  # nothing was written: the recipe failed before the run started


def test_a_hub_id_that_cannot_be_had_names_the_key_and_says_what_to_do(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"))
    for args, key in ((["train", "recipes/dpo_tiny.yaml", "model.name_or_path=nobody/no-such-model"],
                       "model.name_or_path"),
                      (["eval", "--model", "nobody/no-such-model", "--data", str(OASST)], "--model")):
        p = subprocess.run([sys.executable, "-m", "align", *args], cwd=REPO, env=env, capture_output=True, text=True)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
        assert f"{key}: 'nobody/no-such-model'" in p.stderr and "hf download" in p.stderr
        assert "HF_HUB_OFFLINE=1" in p.stderr


def test_resume_says_from_where_and_what_changed_and_a_used_dir_is_refused(small_model_dir, tmp_path, capsys,
                                                                            caplog):
    import logging

    args = ["train", "recipes/dpo_tiny.yaml", "--output-dir", str(tmp_path / "r"),
            f"model.name_or_path={small_model_dir}", f"data.train={HH}", "data.max_rows=24",
            "data.max_prompt_length=32", "data.max_response_length=16", "sft.enabled=false", "train.save_steps=2",
            "eval.enabled=false", f"reference.cache_dir={tmp_path / 'rc'}"]
    assert main([*args, "train.max_steps=2"]) == 0
    capsys.readouterr()
    assert main([*args, "train.max_steps=3", "loss.beta=0.3"]) == 2  # a used output dir, no --resume
    assert "holds another run" in capsys.readouterr().err
    with caplog.at_level(logging.INFO):
        assert main([*args, "train.max_steps=4", "train.learning_rate=1e-2", "--resume"]) == 0
    err = caplog.text
    assert "resuming from" in err and "checkpoint-2" in err
    assert "train.learning_rate changed" in err and "ignored" in err
    assert "missing keys" not in err  # the tied lm_head is not reported as missing
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["resume"]["resumed_from"].endswith("checkpoint-2")
    assert summary["resume"]["changed_settings"]["train.max_steps"]["effect"] == "takes effect"
    saved = json.loads((tmp_path / "r" / "recipe.json").read_text())
    assert saved["train"]["learning_rate"] != 1e-2 and saved["train"]["max_steps"] == 4  # what actually ran
    assert main([*args, "train.max_steps=2", "--overwrite"]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["resume"]["resumed_from"] is None


def test_cache_list_and_prune_on_a_cache_with_two_entries(small_model_dir, tmp_path, capsys):
    import time

    base = ["cache", "recipes/dpo_tiny.yaml", f"model.name_or_path={small_model_dir}", f"data.train={HH}",
            "data.max_rows=12", "data.max_prompt_length=32", "data.max_response_length=16", "sft.enabled=false",
            f"reference.cache_dir={tmp_path / 'rc'}"]
    assert main(base) == 0
    first = json.loads(capsys.readouterr().out)["reference_cache"]["key"]
    assert main([*base, "model.dtype=bfloat16"]) == 0  # another reference identity: a second cache
    second = json.loads(capsys.readouterr().out)["reference_cache"]["key"]
    assert first != second
    assert main(["cache", "list", "--cache-dir", str(tmp_path / "rc"), "--json"]) == 0
    listed = {c["key"]: c for c in json.loads(capsys.readouterr().out)["caches"]}
    assert set(listed) == {first, second}
    assert all(c["entries"] > 0 and c["bytes"] > 0 and c["sources"] == [HH.name] for c in listed.values())
    assert main(["cache", "list", "--cache-dir", str(tmp_path / "rc")]) == 0
    assert "| key | model |" in capsys.readouterr().out
    # age: make the first look unused for 40 days; prune older than 30 removes only it (a dry run first)
    old = time.time() - 40 * 86400
    import os

    os.utime(tmp_path / "rc" / first / "last_used", (old, old))
    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "rc"), "--older-than", "30", "--dry-run"]) == 0
    assert "would remove " + first in capsys.readouterr().out and (tmp_path / "rc" / first).exists()
    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "rc"), "--older-than", "30"]) == 0
    assert not (tmp_path / "rc" / first).exists() and (tmp_path / "rc" / second).exists()
    # unreferenced: no summary.json names the second cache
    runs = tmp_path / "runs" / "x"
    runs.mkdir(parents=True)
    (runs / "summary.json").write_text(json.dumps({"reference_cache": {"key": "other"}}))
    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "rc"), "--unreferenced", str(tmp_path / "runs")]) == 0
    assert not (tmp_path / "rc" / second).exists()
    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "rc")]) == 2  # nothing said: refused


def test_eval_per_example_and_no_bootstrap(small_model_dir, tmp_path):
    out, per = tmp_path / "e.json", tmp_path / "per.jsonl"
    assert main(["eval", "--model", str(small_model_dir), "--reference", str(small_model_dir), "--data", str(OASST),
                 "--max-prompt-length", "48", "--max-response-length", "32", "--bootstrap", "0", "--no-plots",
                 "--per-example", str(per), "--output", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["ci"] == {} and r["confidence"]["resamples"] == 0  # --bootstrap 0: no intervals at all
    rows = [json.loads(line) for line in per.read_text().splitlines()]
    assert len(rows) == r["n_lists"]
    assert set(rows[0]["scores"]) == {"logprob", "logprob_mean", "implicit", "implicit_mean"}
    assert sum(x["metrics"]["implicit"]["pairs"] for x in rows) == r["n_pairs"]
    assert all(len(x["scores"]["logprob"]) == len(x["labels"]) for x in rows)
