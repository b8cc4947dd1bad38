"""``align iterate``: ranked rows from scored samples, and two whole rounds of iterative DPO and of Pairwise Cringe
Optimization on the CPU, killed between the rounds and resumed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from align.data.prompts import PromptExample, TokenizedPrompt
from align.iterate import build_rows
from tests.conftest import REPO


def _prompt(text: str) -> TokenizedPrompt:
    return TokenizedPrompt((1, 2, 3), PromptExample(text))


def test_build_rows_best_worst_and_lists():
    prompts = [_prompt("a"), _prompt("b")]
    texts = [["x", "yy", "z", "yy"], ["p", "q", "r", "s"]]
    rewards = torch.tensor([[0.5, 2.0, -1.0, 1.0], [3.0, 1.0, 2.0, 0.0]])
    rows, skipped = build_rows(prompts, texts, rewards, "best_worst")
    assert [(r["responses"], r["scores"]) for r in rows] == [(["yy", "z"], [2.0, -1.0]), (["p", "s"], [3.0, 0.0])]
    rows, _ = build_rows(prompts, texts, rewards, "lists")
    # a repeated completion keeps its best reward; the list is ranked best first
    assert rows[0]["responses"] == ["yy", "x", "z"] and rows[0]["scores"] == [2.0, 0.5, -1.0]
    assert rows[1]["responses"] == ["p", "r", "q", "s"]
    assert skipped == {"all rewards equal": 0, "fewer than 2 distinct completions": 0}


def test_build_rows_counts_groups_without_a_preference():
    prompts = [_prompt("a"), _prompt("b"), _prompt("c")]
    texts = [["x", "y"], ["same", "same "], ["", "w"]]
    rewards = torch.tensor([[1.0, 1.0], [0.0, 1.0], [5.0, math.nan]])
    rows, skipped = build_rows(prompts, texts, rewards, "best_worst")
    assert rows == []
    assert skipped == {"all rewards equal": 1, "fewer than 2 distinct completions": 2}


def _recipe(tmp: Path, model_dir: Path, base: str) -> Path:
    r = yaml.safe_load((REPO / "recipes" / base).read_text())
    r["model"]["name_or_path"] = str(model_dir)
    r["data"]["train"] = "task:sort?n=80&seed=0&min_len=2&max_len=3&max_digit=5"
    r["data"]["eval_fraction"] = 0.1
    r["sft"].update(max_steps=4, batch_size=8)
    r["train"].update(per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1, save_steps=2,
                      max_steps=3)
    r["reference"] = {"cache_dir": str(tmp / "refcache"), "batch_size": 8}
    r["iterate"].update(rounds=2, prompts_per_round=8, num_samples=4, max_completion_length=6, eval_prompts=4,
                        eval_samples=2, rewards=[{"function": "tests.online.rewards:length", "weight": 1.0}])
    path = tmp / base
    path.write_text(yaml.safe_dump(r))
    return path


def _iterate(home: Path, *args: str, kill_round: int | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "align", "iterate", *args] if kill_round is None else \
        [sys.executable, "-m", "tests.reliability.killer", "round", str(kill_round), "--", "iterate", *args]
    env = {"PYTHONPATH": str(REPO), "ALIGN_HOME": str(home), "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("base", ["iterate_dpo_tiny.yaml", "iterate_cringe_tiny.yaml"])
def test_two_rounds_killed_between_rounds_resume(base, small_model_dir, tmp_path):
    recipe, out, home = _recipe(tmp_path, small_model_dir, base), tmp_path / "run", tmp_path / "home"
    killed = _iterate(home, str(recipe), "--output-dir", str(out), kill_round=1)
    assert killed.returncode == -9, killed.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert state["rounds"]["0"]["finished"] and "1" not in state["rounds"]
    round0 = (out / "round-0" / "samples.jsonl").read_bytes()
    model0 = state["rounds"]["0"]["model"]

    refused = _iterate(home, str(recipe), "--output-dir", str(out))
    assert refused.returncode != 0 and "--resume" in refused.stderr + refused.stdout

    resumed = _iterate(home, str(recipe), "--output-dir", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert summary["algorithm"] == "iterate-" + ("dpo" if "dpo" in base else "cringe")
    # round 0 is not redone: same samples, same model; round 1 starts from round 0's policy
    assert (out / "round-0" / "samples.jsonl").read_bytes() == round0
    assert summary["rounds"][0]["train"] and summary["rounds"][1]["start_model"] == model0
    for k in (0, 1):
        rows = [json.loads(line) for line in (out / f"round-{k}" / "data.jsonl").read_text().splitlines()]
        assert rows and all(r["scores"] == sorted(r["scores"], reverse=True) for r in rows)
        train = json.loads((out / f"round-{k}" / "train" / "summary.json").read_text())
        assert train["steps"] == 3 and math.isfinite(train["train_loss_last"])
        assert (out / f"round-{k}" / "metrics.json").exists()
    # DPO: the reference of round 1 is round 0's policy, new weights, so its entries are computed, not hit.
    # Pairwise Cringe has no reference term and computes none.
    computed = summary["rounds"][1]["train"]["reference_cache"]["computed"]
    assert computed > 0 if "dpo" in base else computed == 0
    assert len(summary["reward_curve"]) == 2 and all(math.isfinite(v) for v in summary["reward_curve"])
    assert summary["eval_initial"]["n_prompts"] == 4
    curve = summary["eval_reward_curve"]["length"]
    assert len(curve) == 3 and all(math.isfinite(v) for v in curve)


def _hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_round_killed_before_its_state_is_written_is_not_trained_again(small_model_dir, tmp_path):
    """Killed after round 0's training wrote its summary and model, before state.json recorded the round: the
    resumed run takes the round's result as it is (no extra step, the same model) and goes on."""
    recipe, out, home = _recipe(tmp_path, small_model_dir, "iterate_dpo_tiny.yaml"), tmp_path / "run", tmp_path / "h"
    killed = subprocess.run(
        [sys.executable, "-m", "tests.reliability.killer", "trained", "0", "--", "iterate", str(recipe),
         "--output-dir", str(out), "iterate.rounds=1", "iterate.eval_prompts=0"],
        cwd=REPO, env={"PYTHONPATH": str(REPO), "ALIGN_HOME": str(home), "OMP_NUM_THREADS": "1",
                       "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True, text=True, timeout=900)
    assert killed.returncode == -9, killed.stderr[-3000:]
    train = out / "round-0" / "train"
    assert json.loads((train / "summary.json").read_text())["steps"] == 3
    assert not json.loads((out / "state.json").read_text())["rounds"]["0"].get("finished")
    model = _hash(train / "model" / "model.safetensors")

    resumed = _iterate(home, str(recipe), "--output-dir", str(out), "--resume", "iterate.rounds=1",
                       "iterate.eval_prompts=0")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((train / "summary.json").read_text())["steps"] == 3
    assert _hash(train / "model" / "model.safetensors") == model
    state = json.loads((out / "state.json").read_text())
    assert state["rounds"]["0"]["finished"] and state["rounds"]["0"]["metrics"]["train"]["steps"] == 3
    assert json.loads((out / "round-0" / "metrics.json").read_text()) == state["rounds"]["0"]["metrics"]

    # --resume of the finished run: nothing to do, nothing rewritten
    summary = (out / "summary.json").read_bytes()
    again = _iterate(home, str(recipe), "--output-dir", str(out), "--resume", "iterate.rounds=1",
                     "iterate.eval_prompts=0")
    assert again.returncode == 0 and "holds a finished run (1 rounds): nothing to do" in again.stderr
    assert (out / "summary.json").read_bytes() == summary and _hash(train / "model" / "model.safetensors") == model


def test_resume_lists_changed_settings_and_keeps_each_rounds_recipe(small_model_dir, tmp_path):
    recipe, out, home = _recipe(tmp_path, small_model_dir, "iterate_dpo_tiny.yaml"), tmp_path / "run", tmp_path / "h"
    first = _iterate(home, str(recipe), "--output-dir", str(out), "iterate.rounds=1", "iterate.eval_prompts=0")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _iterate(home, str(recipe), "--output-dir", str(out), "--resume", "iterate.eval_prompts=0",
                       "train.learning_rate=0.01", "iterate.rounds=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    err = resumed.stderr
    assert "--resume: train.learning_rate changed 0.001 → 0.01: takes effect from round 1" in err, err
    assert "--resume: iterate.rounds changed 1 → 2" in err
    lr = {name: json.loads((out / name).read_text())["train"]["learning_rate"]
          for name in ("recipe.json", "round-0/recipe.json", "round-1/recipe.json")}
    assert lr == {"recipe.json": 1e-3, "round-0/recipe.json": 1e-3, "round-1/recipe.json": 0.01}
    assert json.loads((out / "round-1" / "train" / "recipe.json").read_text())["train"]["learning_rate"] == 0.01
    changed = json.loads((out / "summary.json").read_text())["resume"]["changed_settings"]
    assert set(changed) == {"train.learning_rate", "iterate.rounds"}


def test_the_policy_stays_in_memory_across_rounds(small_model_dir, tmp_path, monkeypatch):
    """Two rounds load the model once: the policy sampled from is trained in place and sampled from again (it
    was loaded three times a round: to sample, to train, to evaluate)."""
    from transformers import AutoModelForCausalLM

    from align.config import load_recipe
    from align.iterate import run_iterate

    loads = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def counted(cls, name, *args, **kwargs):
        loads.append(str(name))
        return real(cls, name, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counted))
    recipe = load_recipe(_recipe(tmp_path, small_model_dir, "iterate_dpo_tiny.yaml"), ["sft.enabled=false"])
    summary = run_iterate(recipe, tmp_path / "run", progress=False)
    assert [r["round"] for r in summary["rounds"]] == [0, 1] and summary["world_size"] == 1
    assert loads == [str(small_model_dir)]
    # round 1 started from round 0's saved model: its reference entries are that model's (computed, not hits)
    assert summary["rounds"][1]["start_model"] == str(tmp_path / "run" / "round-0" / "train" / "model")
    assert summary["rounds"][1]["train"]["reference_cache"]["computed"] > 0
