"""Numerical guards: a NaN or infinite loss or gradient never trains on silently.

By default a non-finite loss (checked before its backward) or gradient (checked before the optimizer step) stops
the run with :class:`NonFiniteError`, naming the step, the source rows of the batch and the cause. With
``train.on_non_finite: skip`` the batch or step is skipped instead (its gradient is zero / the optimizer step
does nothing) and counted; ``summary.json`` lists every such step. A gradient is checked only where it lives in
the model (not inside a DeepSpeed engine, which keeps its own partitions).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers import TrainerCallback

from align.errors import AlignError

log = logging.getLogger("align")


class NonFiniteError(AlignError, RuntimeError):
    """Training produced a NaN or infinite loss or gradient (and the recipe did not ask to skip it)."""


class NonFiniteGuard:
    """Checks losses and gradients of one trainer; ``events`` records what was found (step, rows, cause)."""

    def __init__(self, policy: str = "error"):
        if policy not in ("error", "skip"):
            raise ValueError(f"on_non_finite must be 'error' or 'skip', got {policy!r}")
        self.policy = policy
        self.events: list[dict[str, Any]] = []

    def check_loss(self, loss: torch.Tensor, model: torch.nn.Module, step: int, rows: Sequence[int]) -> torch.Tensor:
        """``loss`` if finite; else raise, or (skip) a zero loss that still reaches every trainable parameter, so
        every rank runs the same backward and gradients stay finite."""
        if bool(torch.isfinite(loss.detach()).all()):
            return loss
        self._found(step, rows, f"non-finite loss ({loss.detach().item()})")
        params = [p for p in model.parameters() if p.requires_grad]
        return sum((p.sum() * 0.0 for p in params), torch.zeros((), device=loss.device))

    def check_gradients(self, model: torch.nn.Module, step: int) -> None:
        """Raise, or (skip) drop every gradient so the optimizer step leaves the weights alone, when a gradient is
        not finite."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads or all(bool(torch.isfinite(g).all()) for g in grads):
            return
        self._found(step, [], "non-finite gradient")
        for p in model.parameters():
            p.grad = None

    def _found(self, step: int, rows: Sequence[int], cause: str) -> None:
        event = {"step": step, "rows": [int(r) for r in rows], "cause": cause}
        where = f"step {step}" + (f", source rows {event['rows']}" if rows else "")
        if self.policy == "error":
            raise NonFiniteError(f"{cause} at {where}; training stopped (set train.on_non_finite=skip to skip such "
                                 "batches and count them)")
        self.events.append(event)
        log.warning("%s at %s: skipped (train.on_non_finite=skip)", cause, where)


class GradientGuardCallback(TrainerCallback):
    """Runs :meth:`NonFiniteGuard.check_gradients` right before each optimizer step."""

    def __init__(self, guard: NonFiniteGuard, trainer: Any):
        self.guard, self.trainer = guard, trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if not self.trainer.is_deepspeed_enabled:
            self.guard.check_gradients(self.trainer.model, state.global_step + 1)
