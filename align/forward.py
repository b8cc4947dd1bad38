"""The policy / reference forward over collated lists, with and without gradients."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from align.data.collate import ListCollator, to_list_layout
from align.data.tokenize import TokenizedList
from align.distributed import full_weights, score_sharded
from align.logprobs import sequence_logprobs


@dataclass
class PolicyOutput:
    """One forward over a batch of lists.

    Attributes:
        logps: ``[B, K]`` summed response log-probs (0 on padded slots).
        logits: ``[N, L, V]`` the raw logits, row ``r`` being list ``row_list[r]``, slot ``row_slot[r]``; kept
            only when asked for (token-level objectives such as Cringe), else None.
    """

    logps: torch.Tensor
    logits: torch.Tensor | None = None


def policy_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], keep_logits: bool = False) -> PolicyOutput:
    """All responses of all lists of ``batch`` through ``model`` in one forward."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    sums = sequence_logprobs(out.logits, batch["input_ids"], batch["loss_mask"])  # [N]
    return PolicyOutput(to_list_layout(sums, batch), out.logits if keep_logits else None)


def reward_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> PolicyOutput:
    """Scalar rewards ``[B, K]`` of every response from a sequence-classification model with one output.

    ``transformers`` pools the score at the last token that is not the pad token, so the pad id must differ
    from the end-of-response token (:func:`align.models.loading.load_reward_model` warns when they are equal).
    """
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    if out.logits.dim() != 2 or out.logits.shape[-1] != 1:
        raise ValueError(f"a reward model must output one score per sequence; got logits {tuple(out.logits.shape)}")
    return PolicyOutput(to_list_layout(out.logits[:, 0], batch))


def list_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed response log-probs ``[B, K]`` for every response of every list, in one forward.

    Padded slots hold 0 (they are masked by ``batch["list_mask"]`` everywhere downstream).
    """
    return policy_forward(model, batch).logps


def _eval_batches(model: torch.nn.Module, lists: Sequence[TokenizedList], batch_size: int, pad_token_id: int,
                  progress: bool, desc: str) -> Iterator[tuple[list[int], dict[str, torch.Tensor], Any]]:
    """``(list indices, batch, model output)`` over ``lists`` in eval mode, longest lists first (less padding; peak
    memory shows at once); the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = ListCollator(pad_token_id)
    order = sorted(range(len(lists)), key=lambda i: -lists[i].num_tokens)
    try:
        for b in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress):
            idx = order[b : b + batch_size]
            batch = {k: v.to(device) for k, v in collate([{"list": lists[i]} for i in idx]).items()}
            yield idx, batch, model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    use_cache=False)
    finally:
        model.train(was_training)


def _empty(lists: Sequence[TokenizedList]) -> torch.Tensor:
    return torch.full((len(lists), max((len(t.response_ids) for t in lists), default=1)), math.nan)


@torch.no_grad()  # not inference_mode: ZeRO-3 writes gathered weights into parameters during the forward
def reward_scores(model: torch.nn.Module, lists: Sequence[TokenizedList], *, batch_size: int = 16,
                  pad_token_id: int = 0, progress: bool = False, desc: str = "rewards") -> torch.Tensor:
    """Rewards ``[n, K_max]`` (NaN on empty slots) of every response under a reward model, in eval mode."""
    values = _empty(lists)
    for idx, batch, out in _eval_batches(model, lists, batch_size, pad_token_id, progress, desc):
        layout = to_list_layout(out.logits[:, 0].float(), batch, fill=math.nan).cpu()
        values[idx, : layout.shape[1]] = layout
    return values


@torch.no_grad()
def score_lists(
    model: torch.nn.Module,
    lists: Sequence[TokenizedList],
    *,
    batch_size: int = 16,
    pad_token_id: int = 0,
    per_token: bool = False,
    progress: bool = False,
    desc: str = "scoring",
) -> tuple[torch.Tensor, list[list[torch.Tensor]] | None]:
    """Summed log-probs ``[n, K_max]`` (NaN on empty slots) of every response, in eval mode, no gradients.

    Lists are run longest first. With ``per_token`` also returns, for each list, one tensor of per-token
    log-probs per response.
    """
    values = _empty(lists)
    tokens: list[list[torch.Tensor]] | None = [[] for _ in lists] if per_token else None
    for idx, batch, out in _eval_batches(model, lists, batch_size, pad_token_id, progress, desc):
        sums, per_tok = sequence_logprobs(out.logits, batch["input_ids"], batch["loss_mask"], per_token=True)
        layout = to_list_layout(sums.float(), batch, fill=math.nan).cpu()
        values[idx, : layout.shape[1]] = layout
        if tokens is not None:
            mask = batch["loss_mask"][:, 1:].bool()
            for r in range(per_tok.shape[0]):  # rows are in list order, slot order
                tokens[idx[int(batch["row_list"][r])]].append(per_tok[r][mask[r]].float().cpu())
    return values, tokens


def sharded_scores(model: torch.nn.Module, lists: Sequence[TokenizedList], *, reward: bool = False,
                   batch_size: int = 16, pad_token_id: int = 0, engine_managed: bool = False,
                   progress: bool = False, desc: str = "scoring") -> torch.Tensor:
    """:func:`score_lists` (or :func:`reward_scores`) in a distributed run: the lists are split across ranks, every
    rank gets all ``[n, K_max]`` values. In one process it is the plain call. Under ZeRO-3 every rank must call it
    (see :func:`align.distributed.score_sharded`); ``engine_managed`` as in :func:`align.distributed.full_weights`.
    """

    def score(items: Sequence[TokenizedList]) -> tuple[torch.Tensor, None]:
        if reward:
            return reward_scores(model, items, batch_size=batch_size, pad_token_id=pad_token_id, progress=progress,
                                 desc=desc), None
        return score_lists(model, items, batch_size=batch_size, pad_token_id=pad_token_id, progress=progress,
                           desc=desc)[0], None

    def dummy() -> None:
        with torch.no_grad():
            model(input_ids=torch.full((1, 2), pad_token_id, device=next(model.parameters()).device), use_cache=False)

    with full_weights(model, engine_managed):
        return score_sharded(score, lists, batch_size=batch_size, dummy_forward=dummy)[0]
