"""The training-loop clock of a benchmark worker: steady state, on a clock that stops while the worker waits for
its turn (:mod:`benchlib.process`)."""

from __future__ import annotations

from typing import Any

import torch

from benchlib import process


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA), so that a clock read after it covers that work."""
    if device == "cuda":
        torch.cuda.synchronize()


def timer_callback(device: str):
    """A ``TrainerCallback`` recording the loop's begin and end and each optimizer step's end (``step_ends``), on a
    clock that stops while this worker waits for its turn (at each step's start: the step's own work, its logging
    included, is timed)."""
    import time

    from transformers import TrainerCallback

    class LoopTimer(TrainerCallback):
        def __init__(self):
            self.begin = self.end = None
            self.step_ends: list[float] = []
            self.paused = 0.0

        def clock(self) -> float:
            return time.perf_counter() - self.paused

        def on_train_begin(self, args, state, control, **kw):
            sync(device)
            self.begin = self.clock()

        def on_step_begin(self, args, state, control, **kw):
            sync(device)
            self.paused += process.TURNS.wait()

        def on_step_end(self, args, state, control, **kw):
            sync(device)
            self.step_ends.append(self.clock())

        def on_train_end(self, args, state, control, **kw):
            sync(device)
            self.end = self.clock()

    return LoopTimer()


def timing_warmup(spec: dict[str, Any], steps: int) -> int:
    """Untimed warm-up steps: ``spec["timing_warmup"]``, leaving at least one timed step."""
    return max(0, min(spec.get("timing_warmup", 0), steps - 1))


def step_seconds(timer) -> list[float]:
    """Each optimizer step's seconds (the first from the loop's begin)."""
    return [b - a for a, b in zip([timer.begin, *timer.step_ends[:-1]], timer.step_ends)]


def steady_state(timer, steps: int, warmup: int) -> dict[str, Any]:
    """Rates after ``warmup`` untimed steps, from the end of the last warm-up step (the loop's begin when there is
    none) to the end of the last step; the whole loop's rate as ``steps_per_second_all``."""
    seconds = timer.end - timer.begin
    start = timer.step_ends[warmup - 1] if warmup else timer.begin
    timed = timer.step_ends[-1] - start
    after_first = (steps - 1) / (timer.end - timer.step_ends[0]) if steps > 1 else None
    return {"steps": steps, "timed_steps": steps - warmup, "warmup_steps": warmup, "train_seconds": seconds,
            "timed_seconds": timed, "steps_per_second": (steps - warmup) / timed,
            "steps_per_second_all": steps / seconds, "steps_per_second_after_first": after_first,
            "step_seconds": step_seconds(timer)}


def quiet(trainer) -> None:
    """No per-step printing of the logs (disable_tqdm installs a PrinterCallback), on both sides alike."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
