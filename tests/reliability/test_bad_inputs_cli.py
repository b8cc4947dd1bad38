"""The whole bad-input corpus (tests/data/bad_inputs) through `align eval` and `align train`: every kind ends in a
result with its skips counted, or a one-line error with exit 2; never a traceback."""

from __future__ import annotations

import json

import pytest

from tests.data.bad_inputs import CASES, usable
from tests.helpers import run_cli


def _run(args: list[str], capsys) -> tuple[int, str]:
    return run_cli(args, capsys)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.kind)
def test_align_eval_on_every_bad_input(case, small_model_dir, tmp_path, capsys):
    out = tmp_path / "e.json"
    args = ["eval", "--model", str(small_model_dir), "--data", str(case.path), "--max-prompt-length", "32",
            "--max-response-length", "16", "--bootstrap", "20", "--no-plots", "--output", str(out)]
    if case.format:
        args += ["--format", case.format]
    if case.columns:
        args += ["--columns", ",".join(f"{k}={v}" for k, v in case.columns.items())]
    code, err = _run(args, capsys)
    if case.error or not case.examples:  # nothing to evaluate: a one-line error naming why
        assert code == 2 and err.count("align eval: error:") == 1, err
        return
    assert code == 0, err
    r = json.loads(out.read_text())
    assert r["data"]["examples"] == case.examples
    assert r["data"]["skipped"] == {**case.skipped}
    assert r["n_pairs"] >= 1


@pytest.mark.parametrize("case", usable(), ids=lambda c: c.kind)
def test_align_train_on_every_usable_bad_input(case, small_model_dir, tmp_path, capsys):
    args = ["train", "recipes/dpo_tiny.yaml", "--output-dir", str(tmp_path / "run"),
            f"model.name_or_path={small_model_dir}", f"data.train={case.path}", "data.eval_fraction=0",
            "data.max_prompt_length=32", "data.max_response_length=16", "sft.enabled=false", "train.max_steps=1",
            "train.per_device_train_batch_size=2", "eval.enabled=false", f"reference.cache_dir={tmp_path / 'rc'}"]
    if case.format:
        args.append(f"data.format={case.format}")
    if case.columns:
        args.append("data.columns={" + ", ".join(f"{k}: {v}" for k, v in case.columns.items()) + "}")
    code, err = _run(args, capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data"]["examples"] == case.examples and summary["data"]["skipped"] == {**case.skipped}
    assert summary["steps"] == 1 and summary["train_loss_first"] is not None
