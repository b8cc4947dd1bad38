"""The few collective operations the reference and evaluation passes need, as no-ops in a single process.

They use ``torch.distributed`` directly (not accelerate) because they also run where no Accelerator exists, such
as ``align cache`` and a reference pass before the Trainer prepares its engine.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def rank_world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on the process that writes outputs (rank 0, or the only process). Before the process group exists
    (the start of a run under ``accelerate launch`` / ``torchrun``), the launcher's ``RANK`` says which it is."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0") or 0) == 0


def barrier() -> None:
    if rank_world()[1] > 1:
        dist.barrier()


def shutdown() -> None:
    """Destroy the process group at the end of a launched command that finished (every rank, after the run's last
    collective). Left to the interpreter's exit, the gloo group's worker threads can be torn down in the wrong
    order and abort the process (``terminate called without an active exception``) after the run succeeded."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    _, world = rank_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def max_over_ranks(value: int) -> int:
    return max(gather_objects(value))


def agree(value: Any, what: str) -> None:
    """Raise unless every rank holds the same ``value``."""
    values = gather_objects(value)
    if any(v != values[0] for v in values):
        raise RuntimeError(f"ranks disagree on the {what}: {values}")


def is_zero3_partitioned(model: torch.nn.Module) -> bool:
    """True when ``model``'s parameters are DeepSpeed ZeRO-3 partitions (each rank holds a slice)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


@contextlib.contextmanager
def full_weights(model: torch.nn.Module, engine_managed: bool) -> Iterator[None]:
    """Make a plain forward of ``model`` possible for the duration of the block.

    Under ZeRO-3 a model that a DeepSpeed engine manages gathers each layer's parameters itself during the
    forward (hooks the engine installed); a partitioned model with no engine yet (before ``Trainer.train``, or in
    ``align cache``) has its parameters gathered here, all at once, for the block. Elsewhere a no-op.
    """
    if engine_managed or not is_zero3_partitioned(model):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield


def score_sharded(score: Callable[[Sequence[T]], tuple[torch.Tensor, list | None]], items: Sequence[T], *,
                  batch_size: int, dummy_forward: Callable[[], None]) -> tuple[torch.Tensor, list | None]:
    """``score(items)`` with the items split across ranks and the results gathered on every rank.

    ``score`` must run exactly ``ceil(len(items) / batch_size)`` forwards and return ``([n, K] values, per-item
    extras or None)`` in the order given. Each rank scores items ``rank, rank + world, ...``; ranks with fewer
    batches run ``dummy_forward`` until every rank has run the same number of forwards, because under ZeRO-3 each
    forward gathers parameters collectively and a rank that stops early would leave the others waiting.
    """
    rank, world = rank_world()
    if world == 1:
        return score(items)
    mine = list(range(rank, len(items), world))
    n_here = math.ceil(len(mine) / batch_size)
    target = max_over_ranks(n_here)
    values, extras = score([items[i] for i in mine]) if mine else (torch.zeros(0, 1), None)
    for _ in range(target - n_here):
        dummy_forward()
    parts = gather_objects((mine, values, extras))
    out = torch.full((len(items), max(v.shape[1] for _, v, _ in parts)), math.nan)
    has_extras = any(e is not None for _, _, e in parts)
    gathered: list | None = [None] * len(items) if has_extras else None
    for idx, v, e in parts:
        if idx:
            out[idx, : v.shape[1]] = v
        if gathered is not None and e is not None:
            for j, i in enumerate(idx):
                gathered[i] = e[j]
    return out, gathered
