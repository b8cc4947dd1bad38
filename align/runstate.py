"""The state of a run's output directory: refuse directories a run must not write into (the filesystem root, the
home directory, a project root, a directory holding files no align run wrote, a symbolic link among the run's
outputs), one run at a time per directory (a lock file), refuse to mix two runs, resume from the last whole
checkpoint, and say what a resumed run takes from its checkpoint and what from the command line."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align import leases
from align.distributed import barrier, is_main
from align.errors import AlignError, ConfigError, ModelError

log = logging.getLogger("align")

MARKER = ".align-run"  # written first into every output directory: "an align run wrote here"
LOCK = ".align.lock"  # held while a run writes: {"pid", "host", "start", "time", "command"}
_OUTPUTS = ("checkpoints", "model", "adapter", "summary.json", "log_history.json", "recipe.json", "report.md",
            "report_plots")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin",
            "adapter_model.bin")

# What a resumed run does with a setting that differs from the run it continues.
_FROM_CHECKPOINT = ("train.learning_rate", "train.lr_scheduler_type", "train.warmup_steps", "train.weight_decay",
                    "train.optim", "train.adam_beta1", "train.adam_beta2", "model.", "peft.", "sft.")
_CHANGES_DATA = ("data.", "train.per_device_train_batch_size", "train.gradient_accumulation_steps", "train.seed")


@dataclass
class RunState:
    """Where a run starts: ``resume_from`` is the checkpoint directory it continues (None: from the start).

    Attributes:
        skipped: incomplete checkpoint directories passed over.
        finished: with ``--resume`` of a run that finished, its ``summary.json`` (nothing is left to do).
        changes: settings that differ from the resumed run's recipe: ``{key: {"old", "new", "effect"}}``.
    """

    resume_from: str | None = None
    skipped: list[str] = field(default_factory=list)
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    finished: dict[str, Any] | None = None  # the summary of a finished run that --resume leaves as it is

    def to_dict(self) -> dict[str, Any]:
        return {"resumed_from": self.resume_from, "skipped_checkpoints": self.skipped,
                "changed_settings": self.changes}


class OutputDirError(AlignError):
    """An output directory a run must not write into, or one that another live run holds."""


def _project_roots() -> set[Path]:
    """The checkout this package runs from (the folder above ``align/`` holding ``pyproject.toml``)."""
    root = Path(__file__).resolve().parents[1]
    return {root} if (root / "pyproject.toml").is_file() else set()


def output_dir_problem(out: Path) -> str | None:
    """Why ``out`` must not be a run's output directory, or None.

    Refused: the filesystem root; the home directory; a project root (a directory holding ``.git`` or
    ``pyproject.toml``, or the checkout this package runs from); and an existing, non-empty directory that no
    align run wrote: one without the run marker (``.align-run``) whose entries are not all a run's own outputs
    (directories written before the marker existed hold only those)."""
    r = Path(out).expanduser().resolve()
    if r == Path(r.anchor):
        return "it is the filesystem root"
    if r == Path.home().resolve():
        return "it is your home directory"
    if (r / ".git").exists() or (r / "pyproject.toml").exists() or r in _project_roots():
        return "it is a project root (it holds .git or pyproject.toml)"
    if r.exists() and not r.is_dir():
        return "it is a file, not a directory"
    if r.is_dir() and not (r / MARKER).exists():
        own = {*_OUTPUTS, "state.json", LOCK}
        foreign = sorted(e.name for e in r.iterdir() if e.name not in own and not e.name.startswith(
            ("round-", ".summary.json.", ".recipe.json.", ".state.json.")))
        if foreign:
            return (f"it holds files no align run wrote ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})"
                    "; choose a new or empty directory")
    return None


def check_no_links(out: Path) -> None:
    """Refuse (:class:`OutputDirError`) a symbolic link among the run's outputs in ``out``: the run would write
    through it, outside the output directory. Checked before a run starts and again before it saves."""
    out = Path(out)
    names = (*_OUTPUTS, "state.json", MARKER, LOCK)
    links = [out / n for n in names if (out / n).is_symlink()]
    for d in ("checkpoints", "model", "adapter"):
        if (out / d).is_dir() and not (out / d).is_symlink():
            for root, dirs, files in os.walk(out / d):
                links += [Path(root) / n for n in dirs + files if (Path(root) / n).is_symlink()]
    if links:
        raise OutputDirError(f"{links[0]} is a symbolic link (to {os.readlink(links[0])}): a run never writes "
                             f"through a link in its output directory; remove it or choose another --output-dir")


class OutputDirLock:
    """One run at a time in a directory: the lease ``DIR/.align.lock`` (:mod:`align.leases`: pid, host, process
    start, time, and the run's command). A second run is refused with the holder's pid while the holder lives; the
    lock of a process that died (kill -9) is taken over. A context manager; ``release`` gives the lease up."""

    def __init__(self, out: Path, command: str | None = None):
        self.path, self.command, self.lease = Path(out) / LOCK, command, None

    @property
    def held(self) -> bool:
        return self.lease is not None

    def acquire(self) -> OutputDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_symlink():
            check_no_links(self.path.parent)

        def taken_over(dead: dict[str, Any]) -> None:
            log.warning("%s: taking over the lock of pid %s, which is no longer running", self.path.parent,
                        dead.get("pid"))

        deadline = time.time() + 10
        while True:
            self.lease = leases.acquire(self.path, info={"command": self.command}, taken_over=taken_over)
            if self.lease is not None:
                return self
            holder = leases.holder(self.path)
            if holder == {} and time.time() < deadline:  # being written by its taker right now
                time.sleep(0.1)
                continue
            if holder is None:  # released between the two looks
                continue
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
            raise OutputDirError(f"{self.path.parent} is in use by another run (pid {holder.get('pid')} on "
                                 f"{holder.get('host')}, since {since}): wait for it to finish, or choose "
                                 "another --output-dir")

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
        self.lease = None

    def __enter__(self) -> OutputDirLock:
        # a lock that claim_output_dir did not take (another rank than the main process) stays untaken
        return self if self.held or not is_main() else self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def claim_output_dir(out: Path, command: str | None = None, kind: str = "train") -> OutputDirLock:
    """Check ``out`` (:func:`output_dir_problem`, :func:`check_no_links`), take its lock and write the run marker;
    returns the held lock (release it, or use it as a context manager). On ranks other than the main process the
    lock is not taken (they write nothing of their own)."""
    problem = output_dir_problem(out)
    if problem:
        raise OutputDirError(f"refusing --output-dir {out}: {problem}")
    lock = OutputDirLock(out, command)
    if not is_main():
        return lock
    out.mkdir(parents=True, exist_ok=True)
    check_no_links(out)
    lock.acquire()
    marker = out / MARKER
    if not marker.exists():
        from align.io import write_json

        write_json(marker, {"kind": kind, "created": time.time()})
    return lock


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole checkpoint (a kill while it was written), or None."""
    state = path / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return "no readable trainer_state.json"
    deepspeed = any(p.is_dir() and p.name.startswith("global_step") for p in path.iterdir())
    if not deepspeed and not any((path / w).is_file() for w in _WEIGHTS):
        return "no model weights"
    if not deepspeed and not (path / "optimizer.pt").is_file():
        return "no optimizer state"
    return None


def check_pickled_files(path: Path) -> None:
    """Refuse, naming the file, a checkpoint file that is not plain tensors (``optimizer.pt``, ``scheduler.pt``,
    ``rng_state*.pth``, ``*.bin`` weights): loading it as Transformers does (``weights_only``) would fail deep in
    ``train()``; a forged pickle never runs here either. Read memory-mapped, so a large optimizer state costs little."""
    import pickle

    import torch

    try:
        from transformers.trainer import safe_globals  # the numpy types Transformers allows in rng_state.pth
    except ImportError:  # pragma: no cover - older Transformers
        from contextlib import nullcontext as safe_globals
    for f in sorted(path.iterdir()):
        if not f.is_file() or f.suffix not in (".pt", ".pth", ".bin") or f.name == "training_args.bin":
            continue
        try:
            with safe_globals():
                try:
                    torch.load(f, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as e:
                    if "mmap" not in str(e):
                        raise
                    torch.load(f, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ImportError) as e:
            why = " ".join(str(e).split())
            if "Weights only load failed" in why or isinstance(e, pickle.UnpicklingError):
                found = re.search(r"Unsupported global: GLOBAL [\w.]+|unsupported GLOBAL [\w.]+", why)
                why = "it holds pickled objects, not plain tensors" + (f" ({found.group(0)})" if found else "")
            raise ModelError(f"{f}: refused: {why[:300]}; delete this checkpoint (or the run) to start over") from None


def last_whole_checkpoint(checkpoints: Path) -> tuple[str | None, list[str]]:
    """The newest whole ``checkpoint-N`` under ``checkpoints``, and the incomplete ones passed over (warned)."""
    found = []
    if checkpoints.is_dir():
        for p in checkpoints.iterdir():
            m = re.fullmatch(r"checkpoint-(\d+)", p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
    skipped = []
    for _, p in sorted(found, reverse=True):
        problem = checkpoint_problem(p)
        if problem is None:
            return str(p), skipped
        log.warning("checkpoint %s is incomplete (%s; a kill while it was written?): skipping it", p, problem)
        skipped.append(str(p))
    return None, skipped


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _effect(key: str) -> str:
    if key.startswith(_FROM_CHECKPOINT) or key in _FROM_CHECKPOINT:
        return "ignored: the checkpoint's weights, optimizer and scheduler win"
    if key.startswith(_CHANGES_DATA) or key in _CHANGES_DATA:
        return "takes effect, but the resumed run no longer sees the data in the order the checkpoint expects"
    return "takes effect"


def setting_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Settings that differ between two recipes (as dicts): ``{dotted key: {"old", "new", "effect"}}``."""
    before, now = _flat(old), _flat(new)
    return {key: {"old": before.get(key), "new": now.get(key), "effect": _effect(key)}
            for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _asks_for_more(summary: dict[str, Any], old: Any, new: dict[str, Any]) -> bool:
    """Whether ``new`` trains past the finished run: a higher ``train.max_steps`` than the steps it ran, or (with
    no step limit) more ``train.num_train_epochs`` than it ran with."""
    train, before = new.get("train") or {}, (old.get("train") if isinstance(old, dict) else None) or {}
    steps = train.get("max_steps")
    if isinstance(steps, int) and steps > 0:
        return steps > int(summary.get("steps") or 0)
    epochs, ran = train.get("num_train_epochs"), before.get("num_train_epochs")
    return isinstance(epochs, (int, float)) and isinstance(ran, (int, float)) and epochs > ran


def prepare_output_dir(out: Path, recipe: dict[str, Any], *, resume: bool, overwrite: bool = False) -> RunState:
    """Check ``out`` before a run writes into it; returns where the run starts.

    - A directory holding another run (a summary or checkpoints) is refused unless ``resume`` (continue it) or
      ``overwrite`` (its outputs are removed first).
    - With ``resume``: a finished run (its ``summary.json`` written) is left as it is, unless ``recipe`` trains
      past it (a higher ``train.max_steps`` or more epochs): ``finished`` holds its summary and nothing is to be
      done. Otherwise the newest whole checkpoint (incomplete ones skipped with a
      warning); with none, the run starts fresh and says so. Settings that differ from the resumed run's
      ``recipe.json`` are listed with their effect; for those the checkpoint decides, ``recipe`` is given the old
      values, so the ``recipe.json`` written is what actually ran.
    """
    state = RunState()
    check_no_links(out)
    used = (out / "summary.json").exists() or any((out / "checkpoints").glob("checkpoint-*"))
    if used and not resume:
        if not overwrite:
            raise ConfigError(f"{out} holds another run (summary.json or checkpoints): pass --resume to continue it, "
                             "--overwrite to replace it, or choose another --output-dir")
        if is_main():
            for name in _OUTPUTS:
                p = out / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            log.info("--overwrite: removed the earlier run's outputs in %s", out)
        barrier()
    if not resume:
        return state
    old = _read_json(out / "recipe.json")
    summary = _read_json(out / "summary.json")
    if isinstance(summary, dict) and not _asks_for_more(summary, old, recipe):
        state.finished = summary
        log.warning("--resume: %s holds a finished run (%s steps): nothing to do; its model and outputs are left "
                    "as they are (raise train.max_steps to train further)", out, summary.get("steps"))
        for key, c in setting_changes(old, recipe).items() if isinstance(old, dict) else ():
            log.warning("--resume: %s changed %r → %r: not applied (the run is finished)", key, c["old"], c["new"])
        return state
    state.resume_from, state.skipped = last_whole_checkpoint(out / "checkpoints")
    if state.resume_from is None:
        log.warning("--resume: no whole checkpoint in %s; starting from the beginning", out / "checkpoints")
        return state
    log.info("resuming from %s", state.resume_from)
    check_pickled_files(Path(state.resume_from))
    if not isinstance(old, dict):
        return state
    state.changes = setting_changes(old, recipe)
    for key, c in state.changes.items():
        log.warning("--resume: %s changed %r → %r: %s", key, c["old"], c["new"], c["effect"])
        if c["effect"].startswith("ignored"):
            _set(recipe, key, c["old"])
    return state


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[last] = value
