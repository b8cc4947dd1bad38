"""Batch lists of K responses into one padded forward: ``[N, L]`` rows and a ``[B, K]`` list layout."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from align.data.tokenize import TokenizedList


@dataclass
class ListCollator:
    """Collate ``{"list": TokenizedList, "ref_logps": [K] | None, "index": int}`` items.

    Every response of every list becomes one row ``prompt + response`` (right-padded), so all K responses of a
    list share one forward pass. Output keys:
        input_ids, attention_mask, loss_mask: ``[N, L]`` (loss_mask marks response tokens)
        row_list, row_slot: ``[N]`` which list and which slot each row is
        labels, list_mask, lengths: ``[B, K]`` (K = longest list in the batch; padded slots masked)
        ref_logps: ``[B, K]`` when items carry them; index: ``[B]`` position in the dataset
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lists: list[TokenizedList] = [it["list"] for it in items]
        rows = [(b, k, t.prompt_ids, r) for b, t in enumerate(lists) for k, r in enumerate(t.response_ids)]
        width = max(len(p) + len(r) for _, _, p, r in rows)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        loss_mask = torch.zeros((n, width), dtype=torch.long)
        for i, (_, _, p, r) in enumerate(rows):
            seq = p + r
            input_ids[i, : len(seq)] = torch.tensor(seq)
            attention_mask[i, : len(seq)] = 1
            loss_mask[i, len(p) : len(seq)] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "loss_mask": loss_mask,
            "row_list": torch.tensor([b for b, *_ in rows]),
            "row_slot": torch.tensor([k for _, k, *_ in rows]),
            **list_layout(items),
        }
        return batch


def list_layout(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The ``[B, K]`` part of a batch of list items (K = longest list; padded slots masked): ``labels``,
    ``list_mask``, ``lengths`` (response tokens), ``index`` ``[B]`` (-1 when absent) and, when the items carry
    them, ``ref_logps`` (NaN on padded slots)."""
    lists: list[TokenizedList] = [it["list"] for it in items]
    B, K = len(lists), max(len(t.response_ids) for t in lists)
    labels = torch.zeros((B, K), dtype=torch.float32)
    list_mask = torch.zeros((B, K), dtype=torch.bool)
    lengths = torch.zeros((B, K), dtype=torch.long)
    for b, t in enumerate(lists):
        k = len(t.response_ids)
        labels[b, :k] = torch.tensor(t.labels)
        list_mask[b, :k] = True
        lengths[b, :k] = torch.tensor([len(r) for r in t.response_ids])
    out = {"labels": labels, "list_mask": list_mask, "lengths": lengths,
           "index": torch.tensor([it.get("index", -1) for it in items])}
    if items[0].get("ref_logps") is not None:
        ref = torch.full((B, K), math.nan, dtype=torch.float32)
        for b, it in enumerate(items):
            ref[b, : len(it["ref_logps"])] = torch.as_tensor(it["ref_logps"], dtype=torch.float32)
        out["ref_logps"] = ref
    return out


def to_list_layout(values: torch.Tensor, batch: dict[str, torch.Tensor], fill: float = 0.0) -> torch.Tensor:
    """Scatter per-row values ``[N]`` into the ``[B, K]`` list layout of ``batch`` (``fill`` on padded slots)."""
    B, K = batch["list_mask"].shape
    out = values.new_full((B, K), fill)
    return out.index_put((batch["row_list"], batch["row_slot"]), values)


def pad_values(values: Sequence[Sequence[float]]) -> torch.Tensor:
    """Per-list values of different lengths → ``[n, K_max]`` with NaN on empty slots."""
    k = max((len(v) for v in values), default=1)
    out = torch.full((len(values), k), math.nan)
    for i, v in enumerate(values):
        out[i, : len(v)] = torch.tensor(list(v), dtype=torch.float32)
    return out
