"""``align eval --scorer task``: the true-rule scoring of sampled completions on hand texts, and the command on a
small model."""

from __future__ import annotations

import json

import pytest
import torch

from align.cli import main
from align.data.prompts import PromptExample, TokenizedPrompt
from align.evaluation.sampling import score_samples
from align.evaluation.task import task_report, task_sources
from align.online.generation import Samples


def _prompt(answer: str) -> TokenizedPrompt:
    return TokenizedPrompt((1, 2), PromptExample([{"role": "user", "content": "Sort: x"}], {"answer": answer}))


def test_sampled_texts_are_scored_with_the_true_rule():
    prompts = [_prompt("1 2 3"), _prompt("0 5")]
    texts = [["1 2 3", "1 3 2", "x", "1 2 3"], ["0 5", "5 0", "0", "0 5 5"]]
    samples = Samples([(1, 2)] * 2, [[(3,)] * 4] * 2, texts, torch.zeros(2, 4, dtype=torch.bool), 0.0)
    out = task_report(score_samples(samples, prompts, task_sources("task:sort"), ks=(1, 2, 4), resamples=200))
    # prompt 1: scores 1, 1/3, 0, 1 → 7/12; prompt 2: 1, 0, 1/2, 2/3 → 13/24
    assert out["score"] == pytest.approx((7 / 12 + 13 / 24) / 2)
    assert out["exact_match"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    # pass@2 with n=4: c=2 → 1 − C(2,2)/C(4,2) = 5/6; c=1 → 1 − C(3,2)/C(4,2) = 1/2
    assert out["pass_at_k"] == pytest.approx({"1": 3 / 8, "2": (5 / 6 + 1 / 2) / 2, "4": 1.0})
    lo, hi = out["score_ci"]
    assert 13 / 24 - 1e-6 <= lo <= out["score"] <= hi <= 7 / 12 + 1e-6  # rewards are float32


def test_task_sources_need_a_task():
    with pytest.raises(ValueError, match="task:NAME"):
        task_sources("data.jsonl")
    with pytest.raises(ValueError, match="unknown task"):
        task_sources("task:nope?n=3")


def test_align_eval_scorer_task_on_a_small_model(small_model_dir, tmp_path, capsys):
    out = tmp_path / "task.json"
    rc = main(["eval", "--scorer", "task", "--model", str(small_model_dir), "--data",
               "task:sort?n=6&seed=1&max_len=3", "--samples", "4", "--max-new-tokens", "6", "--bootstrap", "50",
               "--output", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["scorer"] == "task" and r["n_prompts"] == 6 and r["samples_per_prompt"] == 4
    assert 0.0 <= r["score"] <= 1.0 and 0.0 <= r["exact_match"] <= r["score"]
    assert list(r["pass_at_k"]) == ["1", "2", "4"]
    assert r["pass_at_k"]["1"] == pytest.approx(r["exact_match"])
    assert r["confidence"]["unit"] == "prompt" and len(r["score_ci"]) == 2
    assert "true score (graded)" in capsys.readouterr().out


def test_align_eval_task_data_refuses_other_scorers(small_model_dir, capsys):
    rc = main(["eval", "--scorer", "logprob", "--model", str(small_model_dir), "--data", "task:sort?n=3"])
    assert rc == 2 and "--scorer task" in capsys.readouterr().err
