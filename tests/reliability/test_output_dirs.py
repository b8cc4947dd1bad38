"""Output directories that cannot be misused, and `--resume` of a finished run (through `align train`):

- the filesystem root, the home directory, a project root and a directory holding files no align run wrote are
  refused before anything is written;
- a symbolic link among a run's outputs is refused (nothing is written through it);
- one run at a time per directory: a second one, `--overwrite` included, is refused with the holder's pid while
  the holder lives; the lock of a dead process is taken over;
- `--resume` of a finished run does nothing (exit 0, no extra step, the model's bytes unchanged);
- a pickled checkpoint file or weights file is refused, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from align.runstate import LOCK, MARKER, OutputDirError, OutputDirLock, check_no_links, output_dir_problem
from tests.conftest import HH, REPO
from tests.helpers import run_cli

ARGS = ["data.max_rows=24", "data.max_prompt_length=32", "data.max_response_length=16", "sft.enabled=false",
        "train.max_steps=2", "train.save_steps=1", "train.per_device_train_batch_size=2", "eval.enabled=false"]


def _train(model_dir, out, tmp_path, *extra: str) -> list[str]:
    return ["train", "recipes/dpo_tiny.yaml", "--output-dir", str(out), f"model.name_or_path={model_dir}",
            f"data.train={HH}", f"reference.cache_dir={tmp_path / 'rc'}", *ARGS, *extra]


def _run(args: list[str], capsys) -> tuple[int, str]:
    return run_cli(args, capsys)


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- which directories are refused ------------------------------------------------------------------------------

def test_root_home_and_project_roots_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    assert "filesystem root" in output_dir_problem(Path("/"))
    assert "home directory" in output_dir_problem(tmp_path / "home")
    assert "project root" in output_dir_problem(REPO)
    proj = tmp_path / "proj"
    (proj / ".git").mkdir(parents=True)
    assert "project root" in output_dir_problem(proj)
    assert "project root" in output_dir_problem(REPO / "align" / "..")


def test_directories_a_run_may_use(tmp_path):
    assert output_dir_problem(tmp_path / "new") is None
    (tmp_path / "empty").mkdir()
    assert output_dir_problem(tmp_path / "empty") is None
    legacy = tmp_path / "legacy"  # a run written before the marker existed: only a run's own outputs
    (legacy / "checkpoints").mkdir(parents=True)
    (legacy / "summary.json").write_text("{}")
    assert output_dir_problem(legacy) is None
    (legacy / "notes.txt").write_text("mine")
    assert "no align run wrote (notes.txt)" in output_dir_problem(legacy)
    (legacy / MARKER).write_text("{}")  # an align run wrote here; the user's notes beside it are fine
    assert output_dir_problem(legacy) is None
    (tmp_path / "file").write_text("x")
    assert "not a directory" in output_dir_problem(tmp_path / "file")


def test_home_and_a_foreign_directory_are_refused_before_anything_is_written(small_model_dir, tmp_path, capsys,
                                                                              monkeypatch):
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    code, err = _run(_train(small_model_dir, home, tmp_path), capsys)
    assert code == 2 and err.strip().endswith("it is your home directory"), err
    assert sorted(p.name for p in home.iterdir()) == ["docs"]
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    code, err = _run(_train(small_model_dir, foreign, tmp_path), capsys)
    assert code == 2 and "holds files no align run wrote (cat.jpg)" in err, err
    assert [p.name for p in foreign.iterdir()] == ["cat.jpg"]


def test_a_link_among_the_outputs_is_never_written_through(small_model_dir, tmp_path, capsys):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "model").symlink_to(elsewhere)
    code, err = _run(_train(small_model_dir, out, tmp_path), capsys)
    assert code == 2 and "model is a symbolic link" in err and err.count("\n") == 1, err
    assert list(elsewhere.iterdir()) == []
    (out / "model").unlink()
    (out / "checkpoints" / "checkpoint-9").mkdir(parents=True)
    (out / "checkpoints" / "checkpoint-9" / "optimizer.pt").symlink_to(elsewhere / "x")
    with pytest.raises(OutputDirError, match="optimizer.pt is a symbolic link"):
        check_no_links(out)


# --- one run at a time -------------------------------------------------------------------------------------------

def _lock_held_by(out: Path, pid: int, start: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("{}")
    (out / LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "start": start,
                                        "time": time.time(), "command": "align train ..."}))


def test_a_live_holder_refuses_a_second_run_even_with_overwrite(small_model_dir, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    assert _run(_train(small_model_dir, out, tmp_path), capsys)[0] == 0
    before = _hash(out / "model" / "model.safetensors")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _lock_held_by(out, holder.pid)
        code, err = _run(_train(small_model_dir, out, tmp_path, "--overwrite"), capsys)
        assert code == 2 and f"in use by another run (pid {holder.pid} on {socket.gethostname()}" in err, err
        assert _hash(out / "model" / "model.safetensors") == before and (out / "summary.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without removing its lock (kill -9): the next run takes it over
    code, err = _run(_train(small_model_dir, out, tmp_path, "--overwrite", "train.max_steps=1"), capsys)
    assert code == 0 and f"taking over the lock of pid {holder.pid}, which is no longer running" in caplog.text, err
    assert json.loads((out / "summary.json").read_text())["steps"] == 1 and not (out / LOCK).exists()


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    _lock_held_by(tmp_path, os.getppid(), start="1")  # a live pid, but not the process that took the lock
    with OutputDirLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid() and lock.held
    assert not (tmp_path / LOCK).exists()


def test_two_runs_started_together_one_is_refused(small_model_dir, tmp_path):
    """The row as reported: a run into X, and a second one (--overwrite) while the first writes."""
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    first = subprocess.Popen([sys.executable, "-m", "align", *_train(small_model_dir, out, tmp_path,
                                                                      "train.max_steps=100000")],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / LOCK).exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "align", *_train(small_model_dir, out, tmp_path,
                                                                        "--overwrite")],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert first.poll() is None  # the first is still training
        assert second.returncode == 2 and f"(pid {first.pid} on" in second.stderr, second.stderr[-3000:]
        assert "Traceback" not in second.stderr and not (out / "summary.json").exists()
    finally:
        first.kill()
        first.wait()


# --- resume ------------------------------------------------------------------------------------------------------

def test_resume_of_a_finished_run_does_nothing(small_model_dir, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    assert _run(_train(small_model_dir, out, tmp_path), capsys)[0] == 0
    model, summary = _hash(out / "model" / "model.safetensors"), (out / "summary.json").read_bytes()
    history = (out / "log_history.json").read_bytes()
    code, err = _run(_train(small_model_dir, out, tmp_path, "--resume", "loss.beta=0.5"), capsys)
    assert code == 0 and "holds a finished run (2 steps): nothing to do" in caplog.text, err
    assert "loss.beta changed 0.1 → 0.5: not applied" in caplog.text
    assert _hash(out / "model" / "model.safetensors") == model
    assert (out / "summary.json").read_bytes() == summary and (out / "log_history.json").read_bytes() == history


def _pickle_file(path: Path) -> None:
    """A torch file holding a pickled object whose load would call a function (``builtins.print`` here)."""
    import torch

    class Payload:
        def __reduce__(self):
            return print, ("this must never run",)

    torch.save({"state": Payload()}, path)


def test_a_pickled_optimizer_state_is_refused_naming_the_file(small_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(_train(small_model_dir, out, tmp_path), capsys)[0] == 0
    (out / "summary.json").unlink()  # as if killed before the end
    _pickle_file(out / "checkpoints" / "checkpoint-2" / "optimizer.pt")
    code, err = _run(_train(small_model_dir, out, tmp_path, "--resume"), capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and "checkpoint-2/optimizer.pt: refused: it holds pickled objects" in last, err
    assert "this must never run" not in capsys.readouterr().out


def test_pickled_weights_are_refused_naming_the_file(small_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    for f in small_model_dir.iterdir():
        if f.suffix != ".safetensors":
            (model / f.name).write_bytes(f.read_bytes())
    _pickle_file(model / "pytorch_model.bin")
    code, err = _run(_train(model, tmp_path / "run", tmp_path), capsys)
    assert code == 2 and "pytorch_model.bin: refused: it holds pickled objects" in err.strip().splitlines()[-1], err
