"""The forward over sampled groups (a prompt and its G completions), for rollout trainers such as GRPO.

A group is a ranked list (:class:`~align.data.tokenize.TokenizedList`): the prompt once, then its completions. In
the packed layout (:class:`~align.data.packing.PackedListCollator`) each prompt goes through the model once, its
completions attend to it through the block mask, several groups share a row, and only the completion positions
reach the LM head, chunk by chunk (never ``[N, L, V]`` logits, never a float32 copy of them). Where a model
cannot take the mask (:func:`align.forward.packing_plan` logs why, once) the groups run as padded
``prompt + completion`` rows instead; the values are the same (tests/test_group_forward.py).

Either way the result is in the *completion layout* the GRPO loss reads: ``[N, T]``, row n the n-th completion
(groups in order, completions in order), column j its j-th token, zero past its end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from align.data.tokenize import TokenizedList
from align.forward import PackingPlan, _entropy, log_once, packed_forward, packed_unsupported_reason


def collate_groups(groups: Sequence[TokenizedList], plan: PackingPlan, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Collate groups in ``plan``'s layout and add the completion-layout index of every scored token.

    Added keys (T scored completion tokens, N completions): ``token_response [T]`` and ``token_col [T]`` (row and
    column of each token in the completion layout), ``completion_lengths [N]`` (scored tokens per completion) and,
    in the padded layout, ``token_target [T]``.
    """
    batch = plan.collator(pad_token_id)([{"list": g} for g in groups])
    n = int(batch["row_list"].numel())
    if "block_ids" in batch:
        resp = batch["token_response"]
    else:  # padded rows: the scored tokens are where loss_mask[:, 1:] is 1, row by row, in token order
        mask = batch["loss_mask"][:, 1:].bool()
        resp, pos = mask.nonzero(as_tuple=True)
        batch["token_response"], batch["token_pos"] = resp, pos
        batch["token_target"] = batch["input_ids"][:, 1:][mask]
    lengths = torch.bincount(resp, minlength=n)
    starts = torch.cumsum(lengths, 0) - lengths
    batch["token_col"] = torch.arange(resp.numel()) - starts[resp]
    batch["completion_lengths"] = lengths
    return batch


@dataclass
class CompletionLogps:
    """Per-token values of a batch of completions in the completion layout.

    Attributes:
        logps: ``[N, T]`` float32 log-probs (differentiable when the forward had gradients); 0 past each end.
        mask: ``[N, T]`` 1.0 on each completion's scored tokens.
        entropy: ``[N, T]`` float32 entropy of the policy at each scored token (no gradient), when asked for.
    """

    logps: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor | None = None


def to_completion_layout(values: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[T]`` per-token values (the batch's token order) as ``[N, max length]``, zero-filled; differentiable."""
    lengths = batch["completion_lengths"]
    out = values.new_zeros(int(lengths.numel()), max(int(lengths.max()), 1) if lengths.numel() else 1)
    return out.index_put((batch["token_response"].to(values.device), batch["token_col"].to(values.device)), values)


def completion_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor], plan: PackingPlan | None = None, *,
                     entropy: bool = False, chunk_size: int = 1024) -> CompletionLogps:
    """Log-probs of every completion token of a :func:`collate_groups` batch under ``model``.

    The packed layout runs the model once over the packed rows and the chunked head over the completion positions
    (``plan.chunked``; a head the chunked path cannot take, e.g. a ZeRO-3-partitioned one, uses the model's own
    logits at those positions). Padded rows use the model's logits at the completion positions only. Gradients flow
    when the caller has them on; ``entropy`` adds the per-token entropy (no gradient).
    """
    if "block_ids" in batch:
        chunked = plan is None or plan.chunked
        head = packed_unsupported_reason(model, chunked=True) if chunked else None
        if head:  # the head may have changed since the plan (ZeRO-3 partitions it when the engine starts)
            log_once(f"packed forward takes log-probs from the model's own logits, not the chunked head: {head}")
            chunked = False
        out = packed_forward(model, batch, per_token=True, chunked=chunked, model_logits=not chunked,
                             chunk_size=chunk_size, entropy=entropy)
        flat, ent = out.token_logps, out.token_entropy
    else:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        rows = out.logits[batch["token_response"], batch["token_pos"]]  # [T, V]: completion positions only
        flat = -F.cross_entropy(rows.float(), batch["token_target"], reduction="none")
        ent = _entropy(rows) if entropy else None
    logps = to_completion_layout(flat, batch)
    lengths = batch["completion_lengths"].to(logps.device)
    mask = (torch.arange(logps.shape[1], device=logps.device)[None, :] < lengths[:, None]).float()
    return CompletionLogps(logps, mask, to_completion_layout(ent, batch) if ent is not None else None)
