"""The state of a run's output directory: refuse to mix two runs, resume from the last whole checkpoint, and say
what a resumed run takes from its checkpoint and what from the command line."""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.distributed import barrier, is_main
from align.errors import ConfigError

log = logging.getLogger("align")

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
        changes: settings that differ from the resumed run's recipe: ``{key: {"old", "new", "effect"}}``.
    """

    resume_from: str | None = None
    skipped: list[str] = field(default_factory=list)
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"resumed_from": self.resume_from, "skipped_checkpoints": self.skipped,
                "changed_settings": self.changes}


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


def prepare_output_dir(out: Path, recipe: dict[str, Any], *, resume: bool, overwrite: bool = False) -> RunState:
    """Check ``out`` before a run writes into it; returns where the run starts.

    - A directory holding another run (a summary or checkpoints) is refused unless ``resume`` (continue it) or
      ``overwrite`` (its outputs are removed first).
    - With ``resume``: the newest whole checkpoint (incomplete ones skipped with a warning); with none, the run
      starts fresh and says so. Settings that differ from the resumed run's ``recipe.json`` are listed with their
      effect; for those the checkpoint decides, ``recipe`` is given the old values, so the ``recipe.json`` written
      is what actually ran.
    """
    state = RunState()
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
    state.resume_from, state.skipped = last_whole_checkpoint(out / "checkpoints")
    if state.resume_from is None:
        log.warning("--resume: no whole checkpoint in %s; starting from the beginning", out / "checkpoints")
        return state
    log.info("resuming from %s", state.resume_from)
    try:
        old = json.loads((out / "recipe.json").read_text())
    except (OSError, ValueError):
        return state
    before, now = _flat(old), _flat(recipe)
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            state.changes[key] = {"old": before.get(key), "new": now.get(key), "effect": _effect(key)}
            log.warning("--resume: %s changed %r → %r: %s", key, before.get(key), now.get(key),
                        state.changes[key]["effect"])
            if state.changes[key]["effect"].startswith("ignored"):
                _set(recipe, key, before.get(key))
    return state


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[last] = value
