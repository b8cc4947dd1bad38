"""The one way to turn logits into log-probs of given tokens. Every trainer and the reference cache use it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Log-prob of each next token under ``logits``.

    Args:
        logits: ``[N, L, V]`` model outputs.
        input_ids: ``[N, L]`` the tokens that were fed in.

    Returns:
        ``[N, L-1]``: entry ``t`` is ``log p(input_ids[:, t+1] | input_ids[:, :t+1])``.
    """
    # cross_entropy computes log_softmax + gather in one fused kernel without keeping an [N, L, V] copy.
    shifted = logits[:, :-1, :]
    targets = input_ids[:, 1:]
    return -F.cross_entropy(shifted.float().transpose(1, 2), targets, reduction="none")


def sequence_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor, per_token: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sum of log-probs over the positions where ``loss_mask`` is 1 (the response tokens).

    Args:
        logits: ``[N, L, V]``.
        input_ids: ``[N, L]``.
        loss_mask: ``[N, L]``, 1 on tokens whose log-prob counts (response tokens), 0 on prompt and padding.
            ``loss_mask[:, 0]`` is ignored (the first token has no prediction).
        per_token: also return the masked per-token values.

    Returns:
        ``[N]`` sums, and with ``per_token`` also ``[N, L-1]`` masked per-token log-probs (0 where masked).
    """
    mask = loss_mask[:, 1:].to(torch.float32)
    per_tok = token_logprobs(logits, input_ids) * mask
    sums = per_tok.sum(-1)
    return (sums, per_tok) if per_token else sums


# ---------------------------------------------------------------------------------------------------------------
# Log-probs straight from final hidden states, a chunk of tokens at a time
# ---------------------------------------------------------------------------------------------------------------
#
# The full-logits path above materialises ``[N, L, V]`` logits and a float32 copy of them; with a 152k vocabulary
# that dwarfs the rest of the forward. Only the response tokens' log-probs are needed, so the functions below take
# the final hidden states at the positions that predict those tokens and run the LM head over ``chunk_size`` of
# them at a time: one ``[c, V]`` logit block (model dtype, upcast to float32) lives at once, in forward and, since
# the backward recomputes it, in backward too.

# Config keys of models whose logits are post-processed after the LM head (Gemma-2/3 soft-capping, Cohere's
# logit_scale, Granite's logits_scaling, Grok-style output caps, muP multipliers): log-softmax of hidden @ W.T alone
# would be wrong for them. A key counts when present and not its neutral value (None, False, 0 or 1).
LOGIT_POSTPROCESSING_KEYS: tuple[str, ...] = (
    "final_logit_softcapping", "logit_scale", "logits_scaling", "output_logit_soft_cap", "output_multiplier_scale",
    "mup_enabled",
)  # fmt: skip


class UnsupportedHeadError(ValueError):
    """The model's logits are not exactly ``F.linear(hidden, weight, bias)`` of a plain head whose whole weight is
    in hand; the caller should fall back to the full-logits path (:func:`sequence_logprobs`)."""


def output_head(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LM head's ``weight [V, H]`` and ``bias [V]`` (or None) when logits are exactly ``hidden @ weight.T + bias``.

    ``model`` is a causal LM (a PEFT model works: attribute lookups reach its base model). Raises
    :class:`UnsupportedHeadError` with the reason when the logits are post-processed (see
    ``LOGIT_POSTPROCESSING_KEYS``), the head is not a plain ``torch.nn.Linear`` (an adapter or a wrapper on it), or
    its weight is partitioned (DeepSpeed ZeRO-3, FSDP) so the whole ``[V, H]`` matrix is not available here.
    """
    config = getattr(model, "config", None)
    for key in LOGIT_POSTPROCESSING_KEYS:
        value = getattr(config, key, None)
        if value not in (None, False, 0, 1):
            raise UnsupportedHeadError(f"the model post-processes its logits ({key}={value!r})")
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if type(head) is not torch.nn.Linear:
        raise UnsupportedHeadError(f"the output head is {type(head).__name__}, not a plain torch.nn.Linear")
    weight = head.weight
    if hasattr(weight, "ds_id") or weight.dim() != 2 or weight.shape[1] != head.in_features:
        raise UnsupportedHeadError(f"the head weight is partitioned (shape {tuple(weight.shape)})")
    return weight, head.bias


def _compute_dtype(device: torch.device, weight: torch.Tensor) -> torch.dtype:
    """The dtype ``F.linear`` would run the head in: autocast's when it is on, else the weight's."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


def _chunk_logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``[c, V]`` float32 logits of ``c`` hidden rows, the matmul in ``w``'s dtype (what the model's head does)."""
    return F.linear(h.to(w.dtype), w, b).float()


class _ChunkedLogprobs(torch.autograd.Function):
    """``log_softmax(rows @ W.T + b)[t, targets[t]]`` per row, chunk by chunk; backward recomputes each chunk.

    d logp_t / d logits_t = onehot(y_t) - softmax(logits_t), so the backward needs only the saved log-sum-exp
    ``[T]`` and one recomputed ``[c, V]`` block per chunk: grad_rows = G W, grad_W = Gᵀ rows, grad_b = Σ G.
    """

    @staticmethod
    def forward(ctx, rows, weight, bias, targets, chunk_size, dtype, with_entropy=False):  # type: ignore[override]
        T = rows.shape[0]
        out = rows.new_empty(T, dtype=torch.float32)
        lse = rows.new_empty(T, dtype=torch.float32)
        ent = rows.new_empty(T if with_entropy else 0, dtype=torch.float32)
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        with torch.autocast(rows.device.type, enabled=False):
            for s in range(0, T, chunk_size):
                logits = _chunk_logits(rows[s : s + chunk_size], w, b)
                lse[s : s + chunk_size] = torch.logsumexp(logits, -1)
                out[s : s + chunk_size] = logits.gather(1, targets[s : s + chunk_size, None])[:, 0]
                if with_entropy:  # H = lse − Σ p·logit, from the block already in hand
                    ent[s : s + chunk_size] = lse[s : s + chunk_size] - (logits.softmax(-1) * logits).sum(-1)
        out -= lse
        ctx.save_for_backward(rows, weight, bias, targets, lse)
        ctx.chunk_size, ctx.dtype = chunk_size, dtype
        ctx.mark_non_differentiable(ent)
        return out, ent

    @staticmethod
    def backward(ctx, grad_out, grad_entropy=None):  # type: ignore[override]
        rows, weight, bias, targets, lse = ctx.saved_tensors
        c, dtype = ctx.chunk_size, ctx.dtype
        need_rows, need_w, need_b = ctx.needs_input_grad[:3]
        grad_rows = torch.zeros_like(rows) if need_rows else None
        # Accumulated in the weight's dtype, one rounding per chunk, as the fused kernels (e.g. Liger) do.
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b and bias is not None else None
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        with torch.autocast(rows.device.type, enabled=False):
            for s in range(0, rows.shape[0], c):
                h, g_out = rows[s : s + c].to(dtype), grad_out[s : s + c, None].float()
                g = _chunk_logits(h, w, b).sub_(lse[s : s + c, None]).exp_().mul_(-g_out)
                g.scatter_add_(1, targets[s : s + c, None], g_out)  # G = grad · (onehot(y) − softmax)
                if grad_b is not None:
                    grad_b += g.sum(0).to(grad_b.dtype)
                g = g.to(dtype)
                if grad_rows is not None:
                    grad_rows[s : s + c] = (g @ w).to(rows.dtype)
                if grad_w is not None:
                    grad_w += (g.t() @ h).to(grad_w.dtype)
        return grad_rows, grad_w, grad_b, None, None, None, None


def chunked_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    index: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    chunk_size: int = 1024,
    with_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target token from the final hidden state that predicts it, without full-vocabulary logits.

    Args:
        hidden: ``[N, L, H]`` final hidden states (after the last norm), or ``[T, H]`` rows already aligned with
            ``targets``.
        weight: ``[V, H]`` the LM head weight; ``bias``: ``[V]`` or None.
        targets: ``[T]`` token ids.
        index: ``[T]`` for each target, the flat index into ``hidden.reshape(-1, H)`` of the hidden state that
            predicts it (``row * L + position``); None when ``hidden`` is already ``[T, H]``.
        chunk_size: tokens per logit block; memory is O(chunk_size · V) in forward and backward.
        with_entropy: also return the entropy of each predicted distribution (no gradient), from the same blocks.

    Returns:
        ``[T]`` float32 log-probs, differentiable w.r.t. ``hidden``, ``weight`` and ``bias``. The head runs in the
        weight's dtype (autocast's when autocast is on), the log-softmax in float32, as :func:`token_logprobs` does
        with the model's own logits.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows = hidden.reshape(-1, hidden.shape[-1])
    if index is not None:
        rows = rows.index_select(0, index)
    if rows.shape[0] != targets.shape[0]:
        raise ValueError(f"{rows.shape[0]} hidden rows for {targets.shape[0]} targets")
    dtype = _compute_dtype(rows.device, weight)
    out, entropy = _ChunkedLogprobs.apply(rows, weight, bias, targets.long(), chunk_size, dtype, with_entropy)
    return (out, entropy) if with_entropy else out


def segment_sums(values: torch.Tensor, segments: torch.Tensor, num_segments: int) -> torch.Tensor:
    """``[S]`` sums of ``values [T]`` grouped by ``segments [T]`` (ids in ``[0, S)``); 0 for an empty segment."""
    return values.new_zeros(num_segments).index_add(0, segments, values)
