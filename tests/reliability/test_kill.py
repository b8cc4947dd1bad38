"""kill -9 during a cache build, during training, while a checkpoint is written and during the SFT stage: the
next run resumes and loses nothing (the resumed losses are bit-exact on the CPU), and leaves no litter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HH, REPO

COMMON = ["data.max_rows=48", "data.max_prompt_length=32", "data.max_response_length=24", "sft.enabled=false",
          "train.max_steps=6", "train.learning_rate=2e-3", "train.lr_scheduler_type=constant", "train.warmup_steps=0",
          "train.logging_steps=1", "train.save_steps=2", "train.per_device_train_batch_size=4", "loss.beta=0.5",
          "reference.batch_size=4", "reference.shard_size=8", "eval.enabled=false"]


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), ALIGN_HOME=str(home), OMP_NUM_THREADS="1",
                TOKENIZERS_PARALLELISM="false")


def _align(home: Path, *args: str, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "align", *args] if kill is None else \
        [sys.executable, "-m", "tests.reliability.killer", kill[0], str(kill[1]), "--", *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=600)


def _train_args(model_dir, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["train", "recipes/dpo_tiny.yaml", "--output-dir", str(out), f"model.name_or_path={model_dir}",
            f"data.train={HH}", f"reference.cache_dir={cache}", *COMMON, *extra]


def _losses(run: Path) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in json.loads((run / "log_history.json").read_text()) if "loss" in h}


@pytest.fixture(scope="module")
def straight(small_model_dir, tmp_path_factory):
    """The uninterrupted run every killed one is compared with."""
    tmp = tmp_path_factory.mktemp("kill")
    p = _align(tmp / "home", *_train_args(small_model_dir, tmp / "straight", tmp / "cache-straight"))
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp, _losses(tmp / "straight")


def test_kill_during_the_cache_build(straight, small_model_dir):
    tmp, _ = straight
    cache = tmp / "cache-killed"
    args = ["cache", "recipes/dpo_tiny.yaml", f"model.name_or_path={small_model_dir}", f"data.train={HH}",
            f"reference.cache_dir={cache}", *[c for c in COMMON if not c.startswith(("train.", "eval."))]]
    p = _align(tmp / "home", *args, kill=("shard", 2))
    assert p.returncode == -signal.SIGKILL
    written = sorted(cache.glob("*/shard-*.json"))
    assert len(written) == 2  # two whole shards (killed right after the second one)
    p = _align(tmp / "home", *args)
    assert p.returncode == 0, p.stderr[-3000:]
    stats = json.loads(p.stdout)["reference_cache"]
    kept = sum(json.loads(s.read_text())["entries"] for s in written)
    assert stats["hits"] == kept and stats["computed"] > 0 and stats["corrupted_shards"] == 0
    # the same values as the straight run's cache, bit for bit
    from tests.distributed.test_launch import _cached_values

    assert _cached_values(cache) == _cached_values(tmp / "cache-straight")
    assert not list(cache.glob("*/claim-*"))  # the dead builder's claims were released or taken over


def test_kill_during_training_resumes_bit_exact(straight, small_model_dir):
    tmp, reference = straight
    out = tmp / "killed-step"
    args = _train_args(small_model_dir, out, tmp / "cache-straight")
    p = _align(tmp / "home", *args, kill=("step", 5))
    assert p.returncode == -signal.SIGKILL and (out / "checkpoints" / "checkpoint-4").is_dir()
    p = _align(tmp / "home", *args, "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resuming from" in p.stderr and "checkpoint-4" in p.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resume"]["resumed_from"].endswith("checkpoint-4") and summary["steps"] == 6
    assert summary["reference_cache"]["computed"] == 0
    resumed = _losses(out)  # steps 1-4 restored from checkpoint-4's history, 5-6 trained again
    assert resumed == reference  # bit-exact


def test_kill_while_a_checkpoint_is_written_resumes_from_the_last_whole_one(straight, small_model_dir):
    tmp, reference = straight
    out = tmp / "killed-save"
    args = _train_args(small_model_dir, out, tmp / "cache-straight")
    p = _align(tmp / "home", *args, kill=("save", 4))
    assert p.returncode == -signal.SIGKILL
    torn = out / "checkpoints" / "checkpoint-4"
    assert torn.is_dir() and not (torn / "trainer_state.json").exists()  # weights written, the rest not
    p = _align(tmp / "home", *args, "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "checkpoint-4 is incomplete" in p.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resume"]["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 6
    assert summary["resume"]["skipped_checkpoints"] == [str(torn)]
    assert _losses(out) == reference  # steps 3-6 trained again from checkpoint-2, bit-exact


def test_kill_during_sft_leaves_no_litter_and_the_rerun_matches(small_model_dir, tmp_path):
    home = tmp_path / "home"
    sft = ["sft.enabled=true", "sft.max_steps=6", "sft.batch_size=8", "train.max_steps=2"]
    args = _train_args(small_model_dir, tmp_path / "a", tmp_path / "cache", *sft)
    p = _align(home, *args, kill=("sft", 4))
    assert p.returncode == -signal.SIGKILL
    assert list((home / "sft").glob(".sft-*.tmp"))  # the killed stage's copy
    p = _align(home, *args, "--overwrite")
    assert p.returncode == 0, p.stderr[-3000:]
    assert not list((home / "sft").glob(".sft-*")), list((home / "sft").iterdir())  # no copy, no claim left
    clean_home = tmp_path / "clean"
    q = _align(clean_home, *_train_args(small_model_dir, tmp_path / "b", tmp_path / "cache-b", *sft))
    assert q.returncode == 0, q.stderr[-3000:]
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")  # the same SFT weights, the same run
