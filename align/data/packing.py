"""Shared-prompt packed rows: each list's prompt once, then its K responses; several lists per row, no padding
between them.

One row holding two lists (P = prompt token, R_k = token of response k, · = tail padding):

    tokens      P  P  P  R0 R0 R1 R1 R1 | P  P  R0 R1 R1 | ·  ·
    positions   0  1  2  3  4  3  4  5  | 0  1  2  2  3  | 0  1
    block ids   0  0  0  0  0  0  0  0  | 1  1  1  1  1  | -1 -1
    segment ids -1 -1 -1 0  0  1  1  1  | -1 -1 2  3  3  | -1 -1

Why every response then gets exactly the log-probs of its own unpadded row ``prompt + response``:

* Tokens interact only through attention; embeddings, norms and MLPs act on each token alone.
* The mask (:func:`packed_attention_mask`) lets a token attend to an earlier-or-equal key of its own block (list)
  that is a prompt token or belongs to its own segment (response). For a prompt token that is the earlier prompt
  tokens; for a response token, the whole prompt plus the earlier tokens of its own response. That is exactly
  the key set it has in its unpadded row (causal over prompt + response); the order of keys in the row does not
  change a softmax-weighted sum.
* Position ids restart at ``len(prompt)`` for every response, so each token carries the position it has in its
  unpadded row: rotary attention scores (a function of the query/key position difference) and absolute position
  embeddings alike are the same. By induction over layers every hidden state equals the unpadded one.
* The hidden state predicting response token ``j > 0`` is token ``j - 1`` of the same response; token 0 is
  predicted by the prompt's LAST token, which for the second and later responses is not the previous position
  in the row. The ``token_*`` keys give the gather index for every response token explicitly.
* Tail padding is a block of its own (block id -1) that attends causally within itself, so no query has an
  empty key set (an all-masked softmax would give NaN, and NaN times a zero gradient is still NaN).

A list whose prompt is empty has no prediction for its responses' first token; it is left out, as
:class:`align.data.collate.ListCollator` leaves out position 0 of a row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from align.data.collate import list_layout
from align.data.tokenize import TokenizedList


def _pack(sizes: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: list indices per row, each row's total size <= capacity (a larger list gets a row)."""
    rows: list[list[int]] = []
    used: list[int] = []
    for b in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        r = next((r for r in range(len(rows)) if used[r] + sizes[b] <= capacity), None)
        if r is None:
            rows.append([])
            used.append(0)
            r = len(rows) - 1
        rows[r].append(b)
        used[r] += sizes[b]
    return rows


@dataclass
class PackedListCollator:
    """Collate ``{"list": TokenizedList, "ref_logps": [K] | None, "index": int}`` items into shared-prompt rows.

    Attributes:
        pad_token_id: the id put on tail padding (never attended to by real tokens, never scored).
        max_row_tokens: tokens per packed row; None packs up to the longest list of the batch. A list longer
            than this gets a row of its own (a list cannot be split: its responses need its prompt).
        pad_to_multiple_of: round the row width up to a multiple of this.

    Output keys (R packed rows of width W, N responses, T scored response tokens, B lists, K = longest list):
        input_ids, position_ids, block_ids, segment_ids: ``[R, W]`` (see the module docstring; build the mask
            with :func:`packed_attention_mask`)
        token_row, token_pos, token_target, token_response: ``[T]`` for each scored response token: the row and
            position of the hidden state that predicts it, its id, and its response (0..N-1); in response order,
            token order within a response (the order of ``ListCollator``'s ``loss_mask`` tokens)
        row_list, row_slot: ``[N]`` list and slot of each response, in the order of ``ListCollator``'s rows, so
            :func:`align.data.collate.to_list_layout` works on per-response values
        labels, list_mask, lengths, index, ref_logps: as :class:`align.data.collate.ListCollator`
        num_real_tokens, num_pad_tokens, pad_fraction, num_unshared_tokens, num_unshared_real_tokens,
        max_sequence_tokens: 0-dim counts: tokens in the packed rows (real / tail padding / padding share), what
            the one-row-per-response layout feeds (padded to its longest row / without padding), and the longest
            ``prompt + response`` (what a sliding-window check needs)
    """

    pad_token_id: int
    max_row_tokens: int | None = None
    pad_to_multiple_of: int | None = None

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lists: list[TokenizedList] = [it["list"] for it in items]
        if not lists:
            raise ValueError("cannot collate an empty batch")
        sizes = [len(t.prompt_ids) + sum(len(r) for r in t.response_ids) for t in lists]
        rows = _pack(sizes, self.max_row_tokens or max(sizes))
        width = max(sum(sizes[b] for b in row) for row in rows)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        R = len(rows)
        input_ids = torch.full((R, width), self.pad_token_id, dtype=torch.long)
        block_ids = torch.full((R, width), -1, dtype=torch.long)
        segment_ids = torch.full((R, width), -1, dtype=torch.long)
        position_ids = torch.zeros((R, width), dtype=torch.long)
        first_response = [0]  # response index n of each list's slot 0: ListCollator's row order
        for t in lists:
            first_response.append(first_response[-1] + len(t.response_ids))
        tok_row: list[int] = []
        tok_pos: list[int] = []
        tok_target: list[int] = []
        tok_resp: list[int] = []
        place: dict[int, tuple[int, int]] = {}  # list -> (row, offset)
        for r, row in enumerate(rows):
            at = 0
            for b in row:
                place[b] = (r, at)
                at += sizes[b]
            position_ids[r, at:] = torch.arange(width - at)
        for b, t in enumerate(lists):  # in list order, so the token_* keys run response by response (n ascending)
            r, at = place[b]
            p = t.prompt_ids
            input_ids[r, at : at + len(p)] = torch.tensor(p, dtype=torch.long)
            position_ids[r, at : at + len(p)] = torch.arange(len(p))
            block_ids[r, at : at + len(p)] = b
            last_prompt, at = at + len(p) - 1, at + len(p)
            for k, resp in enumerate(t.response_ids):
                n, m = first_response[b] + k, len(resp)
                input_ids[r, at : at + m] = torch.tensor(resp, dtype=torch.long)
                position_ids[r, at : at + m] = torch.arange(len(p), len(p) + m)
                block_ids[r, at : at + m] = b
                segment_ids[r, at : at + m] = n
                # token j is predicted by token j-1 of this response, token 0 by the prompt's last token
                # (none when the prompt is empty: that first token is not scored)
                preds = ([last_prompt] if p and m else []) + list(range(at, at + m - 1))
                tok_row += [r] * len(preds)
                tok_pos += preds
                tok_target += resp[m - len(preds) :]
                tok_resp += [n] * len(preds)
                at += m
        real = sum(sizes)
        seq_lens = [len(t.prompt_ids) + len(resp) for t in lists for resp in t.response_ids]
        return {
            "input_ids": input_ids,
            "position_ids": position_ids,
            "block_ids": block_ids,
            "segment_ids": segment_ids,
            "token_row": torch.tensor(tok_row, dtype=torch.long),
            "token_pos": torch.tensor(tok_pos, dtype=torch.long),
            "token_target": torch.tensor(tok_target, dtype=torch.long),
            "token_response": torch.tensor(tok_resp, dtype=torch.long),
            "row_list": torch.tensor([b for b, t in enumerate(lists) for _ in t.response_ids], dtype=torch.long),
            "row_slot": torch.tensor([k for t in lists for k in range(len(t.response_ids))], dtype=torch.long),
            **list_layout(items),
            "num_real_tokens": torch.tensor(real),
            "num_pad_tokens": torch.tensor(R * width - real),
            "pad_fraction": torch.tensor((R * width - real) / (R * width)),
            "num_unshared_tokens": torch.tensor(len(seq_lens) * max(seq_lens)),
            "num_unshared_real_tokens": torch.tensor(sum(seq_lens)),
            "max_sequence_tokens": torch.tensor(max(seq_lens)),
        }


def packed_attention_mask(batch: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
    """The ``[R, 1, W, W]`` attention mask of a packed batch (query × key), on the batch's device.

    Query q may attend to key k iff k <= q, both are in the same block (list, or the tail padding), and k is a
    prompt/padding token or in q's own response (see the module docstring for why this reproduces the unpadded
    rows). Boolean (True = attend) by default, as ``sdpa`` takes it; with ``dtype``, additive: 0 where allowed and
    ``finfo(dtype).min`` elsewhere, as the ``eager`` attention adds it to the scores.
    """
    block, seg = batch["block_ids"], batch["segment_ids"]
    idx = torch.arange(block.shape[1], device=block.device)
    causal = idx[None, :, None] >= idx[None, None, :]
    same_block = block[:, :, None] == block[:, None, :]
    visible = (seg[:, None, :] == -1) | (seg[:, :, None] == seg[:, None, :])
    mask = (causal & same_block & visible)[:, None]
    if dtype is None:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
