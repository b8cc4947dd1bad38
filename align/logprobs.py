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
