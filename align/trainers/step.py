"""The loss step both trainer bases share (:class:`~align.trainers.base.PreferenceTrainer` on ranked lists and
:class:`~align.trainers.rollout.RolloutTrainer` on its own samples).

One place for what every objective does after its forward: divide the summed per-item losses by the item count of
the whole optimizer step (all micro-batches, all ranks), undo DDP's gradient averaging, stop or skip a non-finite
loss, and record the batch's metrics and token counts for the next log line.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch

from align.losses import LossOutput
from align.trainers.guards import GradientGuardCallback, NonFiniteGuard


class TokenCounts:
    """Tokens of the training micro-batches: fed to the model (padding included), padding, and the sequences'
    own tokens, over the run (``run``) and since the last log line (``log``)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        self.seen = 0  # the sequences' tokens (a shared prompt counted once per sequence)
        self.fed = {"run": [0, 0], "log": [0, 0]}  # [fed, padding]
        self.micro_batches = {"run": 0, "log": 0}

    def add(self, fed: int, pad: int, real: int) -> None:
        """One micro-batch: ``fed`` tokens through the model, ``pad`` of them padding, ``real`` sequence tokens."""
        self.seen += real
        for k in ("run", "log"):
            self.fed[k][0] += fed
            self.fed[k][1] += pad
            self.micro_batches[k] += 1

    def add_batch(self, inputs: dict[str, torch.Tensor]) -> None:
        """The counts of a collated batch, packed (``block_ids``) or padded rows."""
        if "block_ids" in inputs:
            self.add(inputs["input_ids"].numel(), int(inputs["num_pad_tokens"]),
                     int(inputs["num_unshared_real_tokens"]))
        else:
            real = int(inputs["attention_mask"].sum())
            self.add(inputs["attention_mask"].numel(), inputs["attention_mask"].numel() - real, real)

    def stats(self, which: str, accumulation_steps: int) -> dict[str, float]:
        """``padding_fraction`` (padding share of the tokens fed) and ``tokens_per_step`` (tokens fed per optimizer
        step, padding included, this process) over ``which``; empty before any training micro-batch."""
        fed, pad = self.fed[which]
        if not self.micro_batches[which]:
            return {}
        steps = self.micro_batches[which] / max(accumulation_steps, 1)
        return {"padding_fraction": round(pad / max(fed, 1), 4), "tokens_per_step": round(fed / steps, 1)}

    def end_log_window(self) -> None:
        """Start a new ``log`` window."""
        self.fed["log"], self.micro_batches["log"] = [0, 0], 0


class LossStepMixin:
    """Mixed into a ``transformers.Trainer`` subclass (before ``Trainer`` in the bases): the shared loss step,
    metric buffers, token counts and the non-finite guard. Call :meth:`_init_loss_step` after ``Trainer.__init__``.
    """

    def _init_loss_step(self, on_non_finite: str) -> None:
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.tokens = TokenCounts()
        self._train_start: float | None = None
        self._train_end: float | None = None
        self.guard = NonFiniteGuard(on_non_finite)
        self.add_callback(GradientGuardCallback(self.guard, self))
        # compute_loss divides by the global item count itself (see finish_loss).
        self.loss_is_scaled_for_ga = True

    def finish_loss(self, model: torch.nn.Module, out: LossOutput, num_items_in_batch: torch.Tensor | float | None,
                    *, metrics: dict[str, float] | None = None, rows: list[int] | None = None,
                    rescale: bool = True) -> torch.Tensor:
        """The micro-batch's share of the step's loss: ``Σ losses / num_items_in_batch`` (the whole step's items;
        the batch's own count when None, as in evaluation; a count of 0 gives a loss of 0, not 0/0), times the
        number of processes in training when ``rescale`` (DDP averages gradients over ranks, and the count is
        already global), checked by the non-finite guard (``rows``: the data rows, for its message); ``metrics``
        (default ``out.metrics``) are recorded for the next log line."""
        mode = "train" if model.training else "eval"
        if num_items_in_batch is None:
            num_items_in_batch = max(out.count, 1.0)
        elif torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.clamp(min=1)
        else:
            num_items_in_batch = max(num_items_in_batch, 1.0)
        loss = out.losses.sum() / num_items_in_batch
        if mode == "train" and rescale and self.args.world_size > 1:
            loss = loss * self.accelerator.num_processes
        if mode == "train":
            loss = self.guard.check_loss(loss, model, self.state.global_step + 1, rows or [])
        for k, v in (out.metrics if metrics is None else metrics).items():
            self._metrics[mode][k].append(v)
        return loss

    def record_metrics(self, values: dict[str, float], mode: str = "train") -> None:
        """Record ``values`` for the next ``mode`` log line (averaged over the micro-batches since the last)."""
        for k, v in values.items():
            self._metrics[mode][k].append(v)

    def token_stats(self, which: str = "run") -> dict[str, float]:
        """``padding_fraction`` and ``tokens_per_step`` over the run (``run``) or since the last log (``log``)."""
        return self.tokens.stats(which, self.args.gradient_accumulation_steps)

    def tokens_per_second(self) -> float:
        """The sequences' tokens (without padding; a shared prompt counted once per sequence, so either layout
        gives the same count) trained on per second (this process; evaluation excluded)."""
        if not self._train_start:
            return 0.0
        end = self._train_end or time.perf_counter()
        return self.tokens.seen / max(end - self._train_start, 1e-9)

    def _timed_train(self, train, *args, **kwargs):
        self._train_start, self._train_end = time.perf_counter(), None
        self.tokens.reset()
        try:
            return train(*args, **kwargs)
        finally:
            self._train_end = time.perf_counter()

    def _issue_warnings_after_load(self, load_result):
        # A checkpoint stores a tied weight (lm_head = embeddings) once; its other name is not really missing.
        # Tied names share one Parameter object (keyed by the object: a gathered ZeRO-3 buffer's address is reused).
        seen: dict[int, str] = {}
        tied = set()
        for name, p in self.model.named_parameters(remove_duplicate=False):
            if id(p) in seen:
                tied.update((name, seen[id(p)]))
            seen.setdefault(id(p), name)
        missing = [k for k in load_result.missing_keys if k not in tied]
        if len(missing) != len(load_result.missing_keys):
            self.model.tie_weights()
        return super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        mode = "train" if "loss" in logs else "eval"
        prefix = "eval_" if mode == "eval" else ""
        for k, vals in self._metrics[mode].items():
            if vals:
                logs[prefix + k] = sum(vals) / len(vals)
        if mode == "train" and self._train_start:
            logs["tokens_per_second"] = round(self.tokens_per_second(), 1)
        if mode == "train":
            logs.update(self.token_stats("log"))
            self.tokens.end_log_window()
        self._metrics[mode].clear()
        super().log(logs, *args, **kwargs)
