"""The Python API: the example script end to end, quiet runs, and the TRL-style construction from a Dataset."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import HH, REPO


def test_the_example_script_runs_end_to_end(tmp_path, align_home):
    env = dict(os.environ, ALIGN_HOME=str(align_home), PYTHONPATH=str(REPO), HF_DATASETS_CACHE=str(tmp_path / "hf"))
    done = subprocess.run([sys.executable, str(REPO / "examples" / "python_api.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "trained: 10 steps" in out and "held-out pairwise accuracy:" in out
    assert "reference entries computed: 0" in out  # eval reads the entries training cached
    assert "TRL-style run: reference" in out and "'computed': 0" in out.split("TRL-style run:")[1]
    assert (tmp_path / "runs" / "python_api" / "recipe" / "summary.json").exists()


def test_the_grpo_custom_reward_example_runs_end_to_end(tmp_path, align_home):
    """examples/grpo_custom_reward.py from another working directory: GRPO with a plain callable (it reads
    ``completion_ids`` and the ``answer`` column) on a datasets.Dataset, then a recipe whose reward module sits
    beside it; each run logs its completions and records a reward curve."""
    import json

    env = dict(os.environ, ALIGN_HOME=str(align_home), PYTHONPATH=str(REPO), HF_DATASETS_CACHE=str(tmp_path / "hf"))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(REPO / "examples" / "grpo_custom_reward.py"), str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    for run in ("callable", "recipe"):
        summary = json.loads((out / run / "summary.json").read_text())
        assert summary["steps"] > 0 and len(summary["reward_curve"]) > 0, run
        records = [json.loads(line) for line in (out / run / "completions.jsonl").read_text().splitlines()]
        assert records and all({"step", "prompt", "completion", "rewards", "advantage"} <= set(r) for r in records)
    rewards = json.loads((out / "callable" / "completions.jsonl").read_text().splitlines()[0])["rewards"]
    assert set(rewards) == {"exact_and_short", "sorted_reward"}


def test_quiet_means_quiet(small_model_dir, tmp_path, align_home):
    code = f"""
import align
s = align.train("recipes/dpo_tiny.yaml", ["model.name_or_path={small_model_dir}", "data.train={HH}",
                "data.max_rows=24", "data.max_prompt_length=32", "data.max_response_length=16", "sft.enabled=false",
                "train.max_steps=2", "train.logging_steps=1", "reference.cache_dir={tmp_path / 'rc'}"],
                output_dir="{tmp_path / 'out'}", quiet=True)
print("DONE", s["steps"])
"""
    env = dict(os.environ, ALIGN_HOME=str(align_home), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "DONE 2"  # nothing else on stdout: no log dicts, no tables
    noise = [ln for ln in done.stderr.splitlines() if "it/s" in ln or "s/it" in ln or "%|" in ln]
    assert not noise, noise[:3]


def test_a_trainer_built_trl_style_from_a_dataset(small_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import TrainingArguments

    from align.models import load_model, load_tokenizer
    from align.trainers import DPOLossConfig, DPOTrainer

    rows = [{"prompt": f"Question {i}?", "chosen": f" A good answer {i}.", "rejected": f" A bad one {i}!"}
            for i in range(12)] + [{"prompt": "p", "chosen": "same", "rejected": "same"}, {"bogus": 1}]
    tok = load_tokenizer(str(small_model_dir))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to="none",
                             disable_tqdm=True, save_strategy="no", use_cpu=True)
    trainer = DPOTrainer(model=load_model(str(small_model_dir)), args=args, loss_config=DPOLossConfig(),
                         train_dataset=Dataset.from_list(rows), processing_class=tok)
    assert len(trainer.train_dataset) == 12
    assert trainer.train_dataset.report.skipped == {"identical responses": 1, "unrecognised row format": 1}
    trainer.train()
    assert trainer.reference_stats.computed == 24 and trainer.reference_check["step0_max_abs_diff"] < 1e-4
    assert all(torch.isfinite(torch.tensor(r)).all() for r in trainer.train_dataset.ref_logps)
    with pytest.raises(ValueError, match="tokenizer"):
        DPOTrainer(model=load_model(str(small_model_dir)), args=args, loss_config=DPOLossConfig(),
                   train_dataset=rows)
