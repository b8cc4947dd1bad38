"""The policy / reference forward over collated lists, with and without gradients.

Two layouts: :func:`policy_forward` takes :class:`align.data.collate.ListCollator` batches (one padded row
``prompt + response`` per response, full logits); :func:`packed_forward` takes
:class:`align.data.packing.PackedListCollator` batches (each prompt once, no padding between lists, log-probs
from the hidden states in chunks, never the full-vocabulary logits) and gives the same values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from align.data.collate import ListCollator, to_list_layout
from align.data.packing import PackedListCollator, packed_attention_mask
from align.data.tokenize import TokenizedList
from align.distributed import full_weights, score_sharded
from align.logprobs import UnsupportedHeadError, chunked_token_logprobs, output_head, segment_sums, sequence_logprobs

log = logging.getLogger("align")


@dataclass
class PolicyOutput:
    """One forward over a batch of lists.

    Attributes:
        logps: ``[B, K]`` summed response log-probs (0 on padded slots).
        logits: ``[N, L, V]`` the raw logits, row ``r`` being list ``row_list[r]``, slot ``row_slot[r]``; kept
            only when asked for (token-level objectives such as Cringe) in the padded layout, else None.
        token_logps: per response (``row_list`` order) its ``[len]`` float32 token log-probs, when asked for.
        response_logits: in the packed layout, :meth:`PackedOutput.response_logits` bound to the batch: the
            next-token logits at the scored tokens of given responses (what a token-level loss reads there).
    """

    logps: torch.Tensor
    logits: torch.Tensor | None = None
    token_logps: list[torch.Tensor] | None = None
    response_logits: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None


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


def _eval_batches(model: torch.nn.Module, lists: Sequence[TokenizedList], batch_size: int, collate: Any,
                  progress: bool, desc: str) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """``(list indices, batch on the model's device)`` over ``lists`` in eval mode, longest lists first (less
    padding; peak memory shows at once); the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(lists)), key=lambda i: -lists[i].num_tokens)
    try:
        for b in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress):
            idx = order[b : b + batch_size]
            yield idx, {k: v.to(device) for k, v in collate([{"list": lists[i]} for i in idx]).items()}
    finally:
        model.train(was_training)


def _empty(lists: Sequence[TokenizedList]) -> torch.Tensor:
    return torch.full((len(lists), max((len(t.response_ids) for t in lists), default=1)), math.nan)


@torch.no_grad()  # not inference_mode: ZeRO-3 writes gathered weights into parameters during the forward
def reward_scores(model: torch.nn.Module, lists: Sequence[TokenizedList], *, batch_size: int = 16,
                  pad_token_id: int = 0, progress: bool = False, desc: str = "rewards") -> torch.Tensor:
    """Rewards ``[n, K_max]`` (NaN on empty slots) of every response under a reward model, in eval mode."""
    values = _empty(lists)
    for idx, batch in _eval_batches(model, lists, batch_size, ListCollator(pad_token_id), progress, desc):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
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
    packing: bool = True,
) -> tuple[torch.Tensor, list[list[torch.Tensor]] | None]:
    """Summed log-probs ``[n, K_max]`` (NaN on empty slots) of every response, in eval mode, no gradients.

    Lists are run longest first, in the shared-prompt packed layout when ``packing`` and the model can take it
    (:func:`packing_plan`; else one padded row per response, as with ``packing=False``). With ``per_token`` also
    returns, for each list, one tensor of per-token log-probs per response.
    """
    plan = packing_plan(model, enabled=packing)
    values = _empty(lists)
    tokens: list[list[torch.Tensor]] | None = [[] for _ in lists] if per_token else None
    for idx, batch in _eval_batches(model, lists, batch_size, plan.collator(pad_token_id), progress, desc):
        out = lists_forward(model, batch, plan, per_token=per_token)
        layout = out.logps.float().masked_fill(~batch["list_mask"], math.nan).cpu()
        values[idx, : layout.shape[1]] = layout
        if tokens is not None:
            for r, values_r in enumerate(out.token_logps):  # rows are in list order, slot order
                tokens[idx[int(batch["row_list"][r])]].append(values_r.float().cpu())
    return values, tokens


def sharded_scores(model: torch.nn.Module, lists: Sequence[TokenizedList], *, reward: bool = False,
                   batch_size: int = 16, pad_token_id: int = 0, engine_managed: bool = False,
                   progress: bool = False, desc: str = "scoring", packing: bool = True) -> torch.Tensor:
    """:func:`score_lists` (or :func:`reward_scores`) in a distributed run: the lists are split across ranks, every
    rank gets all ``[n, K_max]`` values. In one process it is the plain call. Under ZeRO-3 every rank must call it
    (see :func:`align.distributed.score_sharded`); ``engine_managed`` as in :func:`align.distributed.full_weights`.
    """

    def score(items: Sequence[TokenizedList]) -> tuple[torch.Tensor, None]:
        if reward:
            return reward_scores(model, items, batch_size=batch_size, pad_token_id=pad_token_id, progress=progress,
                                 desc=desc), None
        return score_lists(model, items, batch_size=batch_size, pad_token_id=pad_token_id, progress=progress,
                           desc=desc, packing=packing)[0], None

    def dummy() -> None:
        with torch.no_grad():
            model(input_ids=torch.full((1, 2), pad_token_id, device=next(model.parameters()).device), use_cache=False)

    with full_weights(model, engine_managed):
        return score_sharded(score, lists, batch_size=batch_size, dummy_forward=dummy)[0]


# ---------------------------------------------------------------------------------------------------------------
# Shared-prompt packed forward
# ---------------------------------------------------------------------------------------------------------------

# Architectures whose forward is ``lm_head(norm(decoder(...)))`` and whose decoder hands a 4D mask to every layer
# unchanged (transformers' create_causal_mask returns a 4D mask as is) with rotary positions from position_ids;
# each is checked against policy_forward in tests/test_packed_forward.py. Add one only with such a test.
PACKED_MODEL_TYPES: tuple[str, ...] = ("llama", "qwen2", "qwen3", "mistral")
# Attention implementations that apply an arbitrary 4D mask: sdpa (boolean) and eager (additive). Flash-attention
# takes no mask (only per-sequence boundaries) and flex_attention needs a BlockMask.
PACKED_ATTENTION: tuple[str, ...] = ("sdpa", "eager")


class PackingUnsupportedError(ValueError):
    """The model cannot run the packed layout exactly; use :func:`policy_forward` instead."""


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` without DDP, DeepSpeed, FSDP or torch.compile wrappers."""
    if isinstance(model, PreTrainedModel) or hasattr(model, "peft_config"):
        return model  # the usual single-process case: no need to import deepspeed to check
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)


def _causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM inside distributed wrappers and a PEFT model (LoRA layers stay in place)."""
    m = _unwrap(model)
    return m.get_base_model() if hasattr(m, "peft_config") and hasattr(m, "get_base_model") else m


def _sliding_window(config: Any) -> int | None:
    """The attention window some layers use (Mistral, Qwen2/3 with use_sliding_window), else None."""
    types = getattr(config, "layer_types", None)
    if types and "sliding_attention" not in types:
        return None
    return getattr(config, "sliding_window", None)


def packed_unsupported_reason(model: torch.nn.Module, batch: dict[str, torch.Tensor] | None = None, *,
                              chunked: bool = True) -> str | None:
    """Why :func:`packed_forward` cannot reproduce :func:`policy_forward` on ``model`` (None when it can).

    One line, for a fallback log. Checks the architecture (``PACKED_MODEL_TYPES``), the attention implementation
    (``PACKED_ATTENTION``), PEFT prompt-learning adapters (virtual tokens shift every position), a sliding window
    shorter than the batch's longest ``prompt + response`` (the 4D mask replaces the window; when every sequence
    fits in it the window changes nothing), and with ``chunked`` the LM head (:func:`align.logprobs.output_head`).
    """
    peft_config = getattr(_unwrap(model), "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return f"the PEFT adapter ({peft_config.peft_type}) adds virtual tokens"
    lm = _causal_lm(model)
    config = getattr(lm, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in PACKED_MODEL_TYPES:
        return f"model type {model_type!r} is not one checked with the packed layout {PACKED_MODEL_TYPES}"
    attn = getattr(config, "_attn_implementation", None)
    if attn not in PACKED_ATTENTION:
        return f"attention implementation {attn!r} cannot take a custom 4D mask (needs one of {PACKED_ATTENTION})"
    window = _sliding_window(config)
    if window is not None and batch is not None and int(batch["max_sequence_tokens"]) > window:
        return f"a sequence of {int(batch['max_sequence_tokens'])} tokens exceeds the sliding window {window}"
    if chunked:
        try:
            output_head(lm)
        except UnsupportedHeadError as e:
            return str(e)
    return None


@dataclass
class PackedOutput:
    """One packed forward over a batch of lists.

    Attributes:
        logps: ``[B, K]`` summed response log-probs (0 on padded slots), as :attr:`PolicyOutput.logps`.
        token_logps: ``[T]`` float32 log-prob of every scored response token (order of the batch's ``token_*``
            keys: response by response) when asked for, else None.
        hidden: ``[R, W, H]`` final hidden states of the packed rows (for :meth:`response_logits`); None when the
            log-probs came from the model's own logits.
        head: the model's output head module.
        logits: ``[R, W, V]`` the model's own logits of the packed rows (``model_logits=True``), else None.
        token_entropy: ``[T]`` float32 entropy of the distribution predicting each scored token (``entropy=True``;
            no gradient), else None.
    """

    logps: torch.Tensor
    token_logps: torch.Tensor | None
    hidden: torch.Tensor | None
    head: torch.nn.Module
    logits: torch.Tensor | None = None
    token_entropy: torch.Tensor | None = None

    def per_response(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """``token_logps`` split into one ``[len]`` tensor per response, responses in ``row_list`` order."""
        if self.token_logps is None:
            raise ValueError("run packed_forward(..., per_token=True) for per-token log-probs")
        counts = torch.bincount(batch["token_response"], minlength=batch["row_list"].numel())
        return list(self.token_logps.split(counts.tolist()))

    def response_logits(self, batch: dict[str, torch.Tensor], responses: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Next-token logits at the scored tokens of the given responses only (e.g. Cringe's losers).

        Args:
            responses: ``[n]`` response indices (positions in ``row_list``).

        Returns:
            ``logits [T_sel, V]`` (model dtype, differentiable), ``targets [T_sel]`` the tokens they predict and
            ``owner [T_sel]`` the response of each; in the batch's token order.
        """
        keep = torch.isin(batch["token_response"], responses)
        at = batch["token_row"][keep], batch["token_pos"][keep]
        logits = self.logits[at] if self.logits is not None else self.head(self.hidden[at])
        return logits, batch["token_target"][keep], batch["token_response"][keep]


def packed_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, per_token: bool = False,
                   chunked: bool = True, chunk_size: int = 1024, model_logits: bool = False,
                   entropy: bool = False) -> PackedOutput:
    """Summed response log-probs ``[B, K]`` of a :class:`align.data.packing.PackedListCollator` batch.

    The model runs once over the packed rows with the block mask and the rows' position ids (through its own
    ``forward``, so DDP / DeepSpeed / PEFT wrappers do their work), returning only the final hidden states and
    one position's logits; the log-probs of the response tokens then come from those hidden states: with
    ``chunked``, :func:`align.logprobs.chunked_token_logprobs` (``chunk_size`` tokens of ``[c, V]`` logits at a
    time); else the head on the ``[T, H]`` scored positions at once (``[T, V]`` logits, still no padding or prompt
    positions). With ``model_logits`` the model computes its own ``[R, W, V]`` logits instead and the head never
    runs outside its forward (what a ZeRO-3-partitioned head needs). Equal to :func:`policy_forward` on the same
    lists (tests/test_packed_forward.py). With ``entropy`` also the entropy at every scored position.

    Raises :class:`PackingUnsupportedError` when :func:`packed_unsupported_reason` gives a reason.
    """
    reason = packed_unsupported_reason(model, batch, chunked=chunked and not model_logits)
    if reason:
        raise PackingUnsupportedError(reason)
    lm = _causal_lm(model)
    eager = lm.config._attn_implementation == "eager"
    mask = packed_attention_mask(batch, lm.get_input_embeddings().weight.dtype if eager else None)
    targets, head = batch["token_target"], lm.get_output_embeddings()
    ent = None
    if model_logits:
        out = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"],
                    use_cache=False)
        hidden, logits = None, out.logits
        rows = logits[batch["token_row"], batch["token_pos"]]
        tok = -F.cross_entropy(rows.float(), targets, reduction="none")
        ent = _entropy(rows) if entropy else None
    else:
        out = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"],
                    use_cache=False, logits_to_keep=1, output_hidden_states=-1)
        hidden, logits = out.hidden_states[-1], None  # [R, W, H], after the final norm
        index = batch["token_row"] * hidden.shape[1] + batch["token_pos"]
        if chunked:
            weight, bias = output_head(lm)
            tok = chunked_token_logprobs(hidden, weight, targets, index, bias, chunk_size=chunk_size,
                                         with_entropy=entropy)
            tok, ent = tok if entropy else (tok, None)
        else:
            rows = head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, index))
            tok = -F.cross_entropy(rows.float(), targets, reduction="none")
            ent = _entropy(rows) if entropy else None
    sums = segment_sums(tok, batch["token_response"], batch["row_list"].numel())
    return PackedOutput(to_list_layout(sums, batch), tok if per_token else None, hidden, head, logits, ent)


@torch.no_grad()
def _entropy(logits: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """``[T]`` float32 entropy of each row of ``logits [T, V]``, a block of rows at a time (no gradient)."""
    out = logits.new_empty(logits.shape[0], dtype=torch.float32)
    for s in range(0, logits.shape[0], chunk_size):
        block = logits[s : s + chunk_size].float()
        out[s : s + chunk_size] = torch.logsumexp(block, -1) - (block.softmax(-1) * block).sum(-1)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Choosing the layout: packed where the model can take it, else padded rows, with one logged line saying why
# ---------------------------------------------------------------------------------------------------------------

_LOGGED: set[str] = set()


def log_once(message: str) -> None:
    """Log ``message`` at INFO the first time this process sees it (fallback notes, not one per batch)."""
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.info(message)


@dataclass
class ForwardCollator:
    """Packed shared-prompt rows (:class:`PackedListCollator`, up to ``max_row_tokens`` per row) when ``packed``,
    else padded rows (:class:`ListCollator`); a packed batch whose longest ``prompt + response`` exceeds ``window``
    (a sliding attention window the block mask would override) is collated padded instead."""

    pad_token_id: int
    packed: bool = True
    window: int | None = None
    max_row_tokens: int | None = None

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.packed:
            batch = PackedListCollator(self.pad_token_id, max_row_tokens=self.max_row_tokens)(items)
            if self.window is None or int(batch["max_sequence_tokens"]) <= self.window:
                return batch
            log_once(f"padded forward for batches with a sequence longer than the sliding window {self.window} "
                     "(the packed block mask would replace the window)")
        return ListCollator(self.pad_token_id)(items)


@dataclass(frozen=True)
class PackingPlan:
    """How lists go through a model: ``packed`` rows or padded ones; in the packed layout, log-probs from the
    ``chunked`` head (else from the model's own logits); ``reason`` says why something is off (None: all on)."""

    packed: bool
    chunked: bool = True
    window: int | None = None
    reason: str | None = None

    def collator(self, pad_token_id: int) -> ForwardCollator:
        """The collator of this layout."""
        return ForwardCollator(pad_token_id, self.packed, self.window)


def packing_plan(model: torch.nn.Module, enabled: bool = True) -> PackingPlan:
    """The layout for ``model``: packed unless ``enabled`` is False or :func:`packed_unsupported_reason` gives a
    reason (then padded, with one logged line saying why); the chunked head unless the head cannot take it (a
    ZeRO-3-partitioned or adapted head, post-processed logits: then the model's own logits, logged likewise)."""
    if not enabled:
        return PackingPlan(False, reason="turned off (train.packing: false)")
    reason = packed_unsupported_reason(model, chunked=False)
    if reason:
        log_once(f"shared-prompt packed forward off, padded rows instead: {reason}")
        return PackingPlan(False, reason=reason)
    window = _sliding_window(getattr(_causal_lm(model), "config", None))
    head = packed_unsupported_reason(model, chunked=True)
    if head:
        log_once(f"packed forward takes log-probs from the model's own logits, not the chunked head: {head}")
    return PackingPlan(True, chunked=head is None, window=window, reason=head)


def lists_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], plan: PackingPlan | None = None, *,
                  keep_logits: bool = False, per_token: bool = False) -> PolicyOutput:
    """One forward over every response of ``batch`` in whichever layout it was collated in (a packed batch has
    ``block_ids``): ``[B, K]`` summed log-probs; with ``per_token`` each response's token log-probs; a token-level
    loss gets ``logits`` (padded, with ``keep_logits``) or ``response_logits`` (packed)."""
    if "block_ids" in batch:
        chunked = plan is None or plan.chunked
        # the head may differ from when the plan was made (ZeRO-3 partitions it after the trainer is built)
        head = packed_unsupported_reason(model, chunked=True) if chunked else None
        if head:
            log_once(f"packed forward takes log-probs from the model's own logits, not the chunked head: {head}")
            chunked = False
        out = packed_forward(model, batch, per_token=per_token, chunked=chunked, model_logits=not chunked)
        return PolicyOutput(out.logps, None, out.per_response(batch) if per_token else None,
                            partial(out.response_logits, batch))
    if not per_token:
        return policy_forward(model, batch, keep_logits=keep_logits)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    sums, per_tok = sequence_logprobs(out.logits, batch["input_ids"], batch["loss_mask"], per_token=True)
    mask = batch["loss_mask"][:, 1:].bool()
    tokens = [per_tok[r][mask[r]] for r in range(per_tok.shape[0])]
    return PolicyOutput(to_list_layout(sums, batch), out.logits if keep_logits else None, tokens)
