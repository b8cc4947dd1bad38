"""Configurations in separate processes, taking turns so that only one computes at a time.

A benchmark script runs each configuration in its own interpreter (``<script> --worker CONFIG --spec FILE
--result FILE``), so that its peak memory is its own. ``run_interleaved`` starts them one at a time and then hands
a single turn around: the first worker keeps the turn through its imports and setup to the start of its first
optimizer step, then the next one is started the same way, then each worker in turn runs one step. A slow minute
of a shared machine then hits every configuration alike instead of whichever ran during it. The worker side is
:class:`Turns` (module attribute :data:`TURNS`, set by :func:`set_turns` from the ``--turns`` file descriptors);
:mod:`benchlib.timing`'s loop clock waits for the turn at every step's start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
              "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}


class Turns:
    """This worker's side of the interleaving: the coordinator (:func:`run_interleaved`) gives one worker at a time
    the turn, so no two configurations ever compute at once and each step of each one is timed on an otherwise
    idle machine, a few seconds from the others' same step. A worker starts when it is handed the turn, hands it
    back at the start of every optimizer step (:meth:`wait`) and keeps it from its last step to its exit. Without
    file descriptors (in-process runs) there is nobody to wait for."""

    def __init__(self, fds: str | None = None):
        self.read_fd, self.write_fd = (int(x) for x in fds.split(",")) if fds else (None, None)
        self.waited = 0.0
        self.intervals: list[tuple[float, float]] = []  # (start, end) of each turn, time.monotonic()
        self._since = time.monotonic()

    def _take(self) -> None:
        if self.read_fd is not None and not os.read(self.read_fd, 1):
            raise SystemExit("the benchmark's coordinator is gone")
        self._since = time.monotonic()

    def start(self) -> None:
        """Block until the first turn."""
        self._take()

    def wait(self) -> float:
        """Hand the turn back, block until it comes again; returns (and adds up) the seconds spent waiting."""
        if self.read_fd is None:
            return 0.0
        t = time.perf_counter()
        self.intervals.append((self._since, time.monotonic()))
        os.write(self.write_fd, b"y")
        self._take()
        waited = time.perf_counter() - t
        self.waited += waited
        return waited

    def finish(self) -> list[tuple[float, float]]:
        """The turns taken, the last one (to now) included."""
        return [*self.intervals, (self._since, time.monotonic())] if self.read_fd is not None else []


TURNS = Turns()


def set_turns(fds: str | None) -> Turns:
    """Install this process's :data:`TURNS` (``--turns R,W``; None for a fresh in-process one)."""
    global TURNS
    TURNS = Turns(fds)
    return TURNS


def one_time_init() -> None:
    """What either side would otherwise do lazily inside its first step, done before any clock, on both sides:
    importing the Trainer's optional back-ends and DeepSpeed's accelerator detection."""
    import transformers.trainer  # noqa: F401

    try:
        from deepspeed.accelerator import get_accelerator
    except ImportError:
        return
    get_accelerator()


def worker_cmd(script: Path, config: str, spec_file: Path, result_file: Path) -> list[str]:
    """The command line of one worker of ``script``."""
    return [sys.executable, str(script), "--worker", config, "--spec", str(spec_file), "--result", str(result_file)]


def worker_result(config: str, returncode: int | None, result_file: Path, log_file: Path) -> dict[str, Any]:
    """A finished worker's JSON result, or a RuntimeError with the end of its log."""
    if returncode != 0 or not result_file.exists():
        tail = log_file.read_text()[-3000:] if log_file.exists() else ""
        raise RuntimeError(f"worker {config} failed (exit {returncode}); end of {log_file}:\n{tail}")
    return json.loads(result_file.read_text())


def spawn_worker(script: Path, config: str, spec_file: Path, result_file: Path, log_file: Path,
                 timeout: float | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """One worker alone in a fresh interpreter (its own peak RSS); its output goes to ``log_file``."""
    with open(log_file, "w") as log:
        proc = subprocess.run(worker_cmd(script, config, spec_file, result_file), cwd=cwd,
                              env={**os.environ, **WORKER_ENV}, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    return worker_result(config, proc.returncode, result_file, log_file)


def run_interleaved(script: Path, configs: list[str], spec_file: Path, work: Path, tag: str,
                    cwd: Path | None = None) -> dict[str, dict[str, Any]]:
    """Run one worker of ``script`` per configuration, each in its own interpreter (its own peak memory), taking
    turns (see the module docstring); returns each configuration's result. Worker ``c`` logs to
    ``work/log-{c}-{tag}.txt`` and writes ``work/result-{c}-{tag}.json``."""
    running: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}

    def turn(w: dict[str, Any]) -> bool:
        """Give ``w`` the turn until it hands it back (True) or exits (False)."""
        os.write(w["go"], b"g")
        if os.read(w["ready"], 1):
            return True
        w["proc"].wait()
        w["log"].close()
        os.close(w["go"])
        os.close(w["ready"])
        results[w["config"]] = worker_result(w["config"], w["proc"].returncode, w["result"], w["log_file"])
        return False

    try:
        for config in configs:
            go_r, go_w = os.pipe()
            ready_r, ready_w = os.pipe()
            result, log_file = work / f"result-{config}-{tag}.json", work / f"log-{config}-{tag}.txt"
            log = open(log_file, "w")
            proc = subprocess.Popen(worker_cmd(script, config, spec_file, result) + ["--turns", f"{go_r},{ready_w}"],
                                    cwd=cwd, env={**os.environ, **WORKER_ENV}, stdout=log,
                                    stderr=subprocess.STDOUT, pass_fds=(go_r, ready_w))
            os.close(go_r)
            os.close(ready_w)
            w = {"config": config, "proc": proc, "go": go_w, "ready": ready_r, "result": result, "log": log,
                 "log_file": log_file}
            if turn(w):
                running.append(w)
        while running:
            running = [w for w in running if turn(w)]
    finally:
        for w in running:
            w["proc"].kill()
            w["proc"].wait()
            w["log"].close()
        for w in running:
            os.close(w["go"])
            os.close(w["ready"])
    return results


def run_configs(script: Path, groups: list[list[str]], spec: dict[str, Any], spec_file: Path, work: Path, tag: str,
                *, run_worker, in_process: bool = False, sequential: bool = False,
                cwd: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every configuration of ``groups``: in this process (``run_worker(config, spec)``; debugging only, memory is
    then not per configuration), each alone in its own interpreter one after another (``sequential``), or the
    configurations of each group taking turns (:func:`run_interleaved`) and the groups one after another."""
    spec_file.write_text(json.dumps(spec))
    got: dict[str, dict[str, Any]] = {}
    for group in groups:
        if in_process:
            got.update({c: run_worker(c, spec) for c in group})
        elif sequential:
            got.update({c: spawn_worker(script, c, spec_file, work / f"result-{c}-{tag}.json",
                                        work / f"log-{c}-{tag}.txt", cwd=cwd) for c in group})
        else:
            got.update(run_interleaved(script, group, spec_file, work, tag, cwd=cwd))
    return got


def start_worker(trl_side: bool, align_modules: tuple[str, ...], threads: int | None) -> None:
    """A worker's start, the same on both sides: its turn, its own side's imports before the memory baseline
    (TRL with ``datasets``, or ``align_modules``), :func:`one_time_init`, the torch thread count."""
    import importlib

    import torch

    TURNS.start()
    for module in ("datasets", "trl") if trl_side else align_modules:
        importlib.import_module(module)
    one_time_init()
    if threads:
        torch.set_num_threads(threads)


def in_work_dir(run, prefix: str, parent: str | None, keep: bool, log) -> dict[str, Any]:
    """``run(work)`` in a fresh temporary directory under ``parent`` (removed after, unless ``keep``); the result
    gets ``wall_seconds``."""
    import shutil
    import tempfile

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        summary = run(work)
    finally:
        if keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary["wall_seconds"] = time.perf_counter() - t_start
    return summary
