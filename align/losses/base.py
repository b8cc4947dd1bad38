"""The loss contract: what a loss reads (:class:`ListScores`), what it returns (:class:`LossOutput`) and what its
registry entry declares (:class:`LossSpec`). Conventions and formulas: ``docs/algorithms.md`` §0.

Every loss is a pure function ``compute(scores, config) -> LossOutput``. Its value on a batch is
``losses.sum() / count``; under gradient accumulation the trainer divides each micro-batch's ``losses.sum()`` by the
step's total ``count`` over micro-batches and processes instead, which ``LossSpec.count`` knows before the forward.
So a mean over items is exact however the step is split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import torch

from align.losses.pairs import Pairs

Unit = Literal["pair", "list", "sequence", "token"]
UNITS: tuple[str, ...] = ("pair", "list", "sequence", "token")


@dataclass
class LossOutput:
    """One loss on one batch, before its reduction: the loss is ``losses.sum() / count``.

    Attributes:
        losses: ``[N]`` per-item losses, items being pairs, lists, sequences or tokens as the loss's unit says. An
            entry may also be a group of items: LiPO's ``rax`` normalisation keeps one entry per list (its sum over
            pairs) and counts pairs. The invariant is only ``loss = losses.sum() / count``.
        count: how many items this batch holds, the plain mean's normaliser (0 when the batch has nothing to learn;
            ``losses.sum()`` is then 0).
        metrics: floats to average into the logs (means over this batch's items).
        pairs: for pairwise losses, which (list, winner, loser) each entry of ``losses`` is; else None.
        extras: detached per-entry ``[N]`` tensors a loss exposes by name (e.g. ``chosen_rewards``,
            ``rejected_rewards``; Cringe's ``ce``, ``cringe``, ``gate``, ``margin``).
    """

    losses: torch.Tensor
    count: int
    metrics: dict[str, float] = field(default_factory=dict)
    pairs: Pairs | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def mean(self) -> torch.Tensor:
        """``losses.sum() / count``, 0 when there is nothing to count."""
        return self.losses.sum() / max(self.count, 1)


@dataclass
class ListScores:
    """The per-response values of a batch of B lists of up to K responses, after the forward: what a list loss reads.

    Attributes:
        policy_logps: ``[B, K]`` summed response log-probs under the policy; for a reward model, its rewards r(x, y).
            Padded slots may hold anything (NaN too): every loss masks them before use.
        labels: ``[B, K]`` the human labels, higher is better (ranks stored as -rank, or quality scores); equal
            labels form no pair.
        mask: ``[B, K]`` bool, False on padded slots.
        lengths: ``[B, K]`` response token counts, or None (needed by IPO and Cringe).
        ref_logps: ``[B, K]`` summed response log-probs under the reference, or None for losses without one.
        logits: ``[N, L, V]`` the policy's logits of every response row, for token-level losses; else None.
        input_ids: ``[N, L]`` each row's token ids (prompt + response, padded), with ``logits``.
        loss_mask: ``[N, L]`` True on response tokens, with ``logits``.
        row_list / row_slot: ``[N]`` the list b and the slot k of each row (response), with ``logits`` or
            ``response_logits``.
        response_logits: in the packed layout (no ``[N, L, V]`` logits), ``f(responses [n])`` giving the next-token
            logits ``[T, V]`` at the scored tokens of those responses (indices into ``row_list``), the tokens
            ``[T]`` they predict and the response ``[T]`` of each; for token-level losses; else None.
    """

    policy_logps: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor | None = None
    ref_logps: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None
    loss_mask: torch.Tensor | None = None
    row_list: torch.Tensor | None = None
    row_slot: torch.Tensor | None = None
    response_logits: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def __post_init__(self) -> None:
        self.mask = self.mask.bool()
        named = {"policy_logps": self.policy_logps, "labels": self.labels, "mask": self.mask,
                 "lengths": self.lengths, "ref_logps": self.ref_logps}
        shapes = {k: tuple(v.shape) for k, v in named.items() if v is not None}
        if self.policy_logps.dim() != 2 or len(set(shapes.values())) != 1:
            raise ValueError(f"ListScores needs [B, K] tensors of one shape; got {shapes}")

    def log_ratios(self, *, length_normalized: bool = False) -> torch.Tensor:
        """``[B, K]`` log π_θ(y) − log π_ref(y) (without a reference: ``policy_logps`` itself), 0 on padded slots.

        ``length_normalized`` divides each by its response's token count (clamped at 1), IPO's h̄
        (``docs/algorithms.md`` §1). No β here: :meth:`implicit_rewards` is where β scales scores.
        """
        x = self.policy_logps if self.ref_logps is None else self.policy_logps - self.ref_logps
        if length_normalized:
            if self.lengths is None:
                raise ValueError("length normalisation needs response lengths (pass ones for the summed form)")
            x = x / self.lengths.to(x.dtype).clamp(min=1)
        # where, not multiply: NaN on a padded slot reaches neither the value nor (0·NaN) the gradient
        return torch.where(self.mask, x, 0)

    def implicit_rewards(self, beta: float, *, length_normalized: bool = False) -> torch.Tensor:
        """``[B, K]`` β·(log π_θ(y) − log π_ref(y)), 0 on padded slots: the one place β scales a loss's scores.

        Without a reference this is β·``policy_logps`` (a reward model's rewards at β = 1).
        """
        if not beta > 0:  # also rejects NaN
            raise ValueError(f"beta must be > 0, got {beta}")
        return beta * self.log_ratios(length_normalized=length_normalized)

    def row_of(self) -> torch.Tensor:
        """``[B, K]`` the row of each (list, slot) in ``logits`` / ``input_ids``, -1 on padded slots."""
        if self.row_list is None or self.row_slot is None:
            raise ValueError("row_of needs the rows' row_list and row_slot")
        rows = torch.full(self.mask.shape, -1, dtype=torch.long, device=self.mask.device)
        rows[self.row_list, self.row_slot] = torch.arange(self.row_list.numel(), device=rows.device)
        return rows


ScoresT = TypeVar("ScoresT")
ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class LossSpec(Generic[ScoresT, ConfigT]):
    """A loss's registry entry: what a trainer needs to run it, so no trainer branches on a loss name.

    Attributes:
        name: the registry key recipes name the algorithm by (``dpo``, ``lipo``, ...).
        config: the dataclass a recipe's ``loss`` section loads into (it validates itself).
        compute: ``(scores, config) -> LossOutput``. ``scores`` is the loss's batch record: :class:`ListScores` for
            the list losses; a loss over rollouts (GRPO) computes from its own record.
        count: ``(labels, mask, config) -> int``, the items a batch holds, known before the forward (the step's
            normaliser under gradient accumulation); equal to ``compute(...).count`` on the same batch. List losses
            read ``[B, K]`` labels and mask; a loss over rollouts reads its own (e.g. a completion mask).
        needs_reference: the loss reads reference log-probs (a cache is built before training).
        unit: what one item is under the default config: ``pair``, ``list``, ``sequence`` or ``token``.
        token_level: the loss needs per-token values (the policy's logits, or per-token log-probs).
        unit_for: the unit under a given config, where it depends on it (the reward model's pair vs list losses).
    """

    name: str
    config: type
    compute: Callable[[ScoresT, ConfigT], LossOutput]
    count: Callable[[torch.Tensor, torch.Tensor, ConfigT], int]
    needs_reference: bool
    unit: Unit
    token_level: bool = False
    unit_for: Callable[[ConfigT], Unit] | None = None

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")

    def unit_of(self, config: Any) -> Unit:
        """What one item is under ``config``."""
        return self.unit_for(config) if self.unit_for is not None else self.unit
