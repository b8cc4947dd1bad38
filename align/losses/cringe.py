"""The Cringe token loss and the Pairwise Cringe loss (pure functions over logits and per-pair sums), their config
and registry entry.

Binary Cringe (Adolphs et al., "The CRINGE Loss: Learning what language not to model", arXiv 2211.05826, ACL 2023).
Positive sequences get cross-entropy; for every token y_t of a negative sequence, "a *positive* prediction is sampled
from the language model to contrast against it" (their Fig. 1). With x_t the logits at step t: take the top-(k+1)
logits, drop y_t if among them (else drop the (k+1)-th), sample c_t from the softmax over the k left, and
    CT_t = -log(e^{x_t[c_t]} / (e^{x_t[c_t]} + e^{x_t[y_t]})) = softplus(x_t[y_t] - x_t[c_t]),
which lowers the negative token's logit below the sampled one. Checked against the reference code, ParlAI
``projects/cringe/cringe_loss.py`` (``ContrastiveCrossEntropyLoss``): the same top-(k+1) masking and
``Categorical(logits=...)`` sample; the contrastive term is a 2-way cross-entropy on ``[x_target, x_sample]`` with
label 1; defaults ``--ct-num-pos-predictions 1`` (k = 1: c_t is the top non-target token, deterministic),
``--ct-loss-weight 1.0`` (α), ``--ct-detach-positives False`` (gradients reach x[c] as well as x[y]); and
``compute_loss`` sums the token losses and divides by the number of target tokens ("average loss per token").

Pairwise Cringe (Xu, Lee, Sukhbaatar, Weston, "Some things are more CRINGE than others: Iterative Preference
Optimization with the Pairwise Cringe Loss", arXiv 2312.16682). The abstract: binary Cringe "can be generalized to
the pairwise preference setting using a simple soft margin extension". As docs/algorithms.md §4 states it:
    L = CE(x, y_w) + α·g·CT(x, y_l),   g = σ((b - M)/τ),   M = log p_θ(y_w|x) - log p_θ(y_l|x).
No reference model: the gate switches the loser's Cringe term off once the winner leads by more than about b.
Not checked against the paper's §3 and appendix (where its exact margin and gate settings are given), so these are
our choices:
    - M uses summed log-probs (``margin="sum"``), the literal log p_θ(y|x) of the formula; ``"mean"`` (per-token
      means) is available, as length-normalised margins are a common alternative.
    - g is detached (``detach_gate=True``): the gate is a switch. Without the stop-gradient, ∂(α g CT)/∂M =
      -α CT g(1-g)/τ adds an unintended margin-raising term whose strength grows with the Cringe loss itself.
    - α = 1 and k = 1 follow the binary Cringe defaults above; b and τ have no default, recipes must set them.
Normalisation ("token losses are summed and divided by the number of target tokens"): per pair, CE is the winner's
mean token NLL and CT the loser's mean token Cringe loss; reduce the per-pair losses with a mean over pairs. (ParlAI
divides the batch's summed token losses by the batch's token count instead, which weighs long sequences more.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from align.losses.base import ListScores, LossOutput, LossSpec
from align.losses.pairs import pair_count, preference_pairs
from align.validation import COUNT, NON_NEGATIVE, POSITIVE, Range, check_fields

CRINGE_MARGINS: tuple[str, ...] = ("sum", "mean")


@dataclass
class CringeLossConfig:
    """Pairwise Cringe settings. ``b`` and ``tau`` have no default: the paper's values could not be verified
    (see the module docstring), so a recipe must choose them.

    Attributes:
        b: the gate's margin, in nats of M (any finite number).
        tau: the gate's temperature (finite, > 0).
        alpha: weight of the Cringe term (finite, >= 0; 1 as binary Cringe); 0 is SFT on the preferred response.
        k: top-k positives sampled per token (1: the top non-target token, deterministic).
        margin: M on summed (``sum``) or per-token mean (``mean``) log-probs.
        detach_gate: stop the gradient through the gate.
    """

    b: float
    tau: float
    alpha: float = 1.0
    k: int = 1
    margin: Literal["sum", "mean"] = "sum"
    detach_gate: bool = True

    def __post_init__(self) -> None:
        check_fields(self, "loss", b=Range(), tau=POSITIVE, alpha=NON_NEGATIVE, k=COUNT)


def _check_tokens(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, k: int) -> None:
    if logits.dim() != 3 or targets.shape != logits.shape[:2] or mask.shape != targets.shape:
        raise ValueError(
            f"need logits [N, L, V], targets and mask [N, L]; got {tuple(logits.shape)}, {tuple(targets.shape)}, "
            f"{tuple(mask.shape)}"
        )
    if not 1 <= k < logits.shape[-1]:
        raise ValueError(f"k must be in [1, V - 1] = [1, {logits.shape[-1] - 1}], got {k}")


@torch.no_grad()
def cringe_positive_tokens(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    k: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The contrast token c_t of every position: sampled from the top-k logits other than the target.

    Args:
        logits: ``[N, L, V]`` next-token logits aligned with ``targets``.
        targets: ``[N, L]`` the negative sequence's tokens (any value where ``mask`` is False).
        mask: ``[N, L]`` bool, True on the tokens to penalise.
        k: how many top non-target tokens to sample from; k = 1 is deterministic (the top non-target token).
        generator: for the sample when k > 1.

    Returns:
        ``[N, L]`` token ids (meaningless where ``mask`` is False).
    """
    _check_tokens(logits, targets, mask, k)
    mask = mask.bool()
    y = torch.where(mask, targets, 0).long()
    top_vals, top_idx = logits.topk(k + 1, dim=-1)  # [N, L, k+1]
    is_y = top_idx == y[..., None]
    last = torch.arange(k + 1, device=logits.device) == k
    drop = is_y | (~is_y.any(-1, keepdim=True) & last)  # drop the target, else the (k+1)-th
    cand = torch.where(mask[..., None], top_vals, 0).float().masked_fill(drop, -math.inf)
    if k == 1:
        pick = cand.argmax(-1, keepdim=True)
    else:
        probs = torch.softmax(cand, dim=-1).reshape(-1, k + 1)
        pick = torch.multinomial(probs, 1, generator=generator).reshape(*cand.shape[:-1], 1)
    return top_idx.gather(-1, pick).squeeze(-1)


def cringe_token_losses(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    k: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Binary Cringe loss of every token of negative sequences, softplus(x[y] - x[c]).

    Only the choice of c is sampled (without gradient); the loss's gradient reaches both x[y] and x[c].

    Args:
        logits: ``[N, L, V]`` next-token logits aligned with ``targets``; NaN where ``mask`` is False is harmless.
        targets: ``[N, L]`` the negative sequence's tokens (any value, e.g. -100, where ``mask`` is False).
        mask: ``[N, L]`` bool, True on the response tokens to penalise.
        k: top-k size of the contrast sample (see :func:`cringe_positive_tokens`).
        generator: for the sample when k > 1.

    Returns:
        ``[N, L]`` token losses, exactly 0 (with zero gradient) where ``mask`` is False. Sum over L and divide by the
        token count for a sequence's Cringe loss.
    """
    mask = mask.bool()
    c = cringe_positive_tokens(logits.detach(), targets, mask, k=k, generator=generator)
    y = torch.where(mask, targets, 0).long()
    x_y = logits.gather(-1, y[..., None]).squeeze(-1)
    x_c = logits.gather(-1, c[..., None]).squeeze(-1)
    # where before softplus: NaN logits on masked positions must not reach its value or its backward (0·NaN)
    return torch.where(mask, F.softplus(torch.where(mask, x_y - x_c, 0)), 0)


def pairwise_cringe_loss(
    chosen_logps: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_logps: torch.Tensor,
    rejected_tokens: torch.Tensor,
    rejected_cringe: torch.Tensor,
    *,
    alpha: float = 1.0,
    b: float,
    tau: float,
    margin: Literal["sum", "mean"] = "sum",
    detach_gate: bool = True,
) -> LossOutput:
    """Pairwise Cringe loss L = CE(y_w) + α·g·CT(y_l), g = σ((b - M)/τ), per pair.

    From ``[B, K]`` lists, ``preference_pairs(labels, mask).take(x)`` gives the winner and loser ``[P]`` entries.

    Args:
        chosen_logps: ``[P]`` summed token log-probs of the winner under the policy.
        chosen_tokens: ``[P]`` the winner's token count.
        rejected_logps: ``[P]`` summed token log-probs of the loser (used only in M).
        rejected_tokens: ``[P]`` the loser's token count.
        rejected_cringe: ``[P]`` the loser's summed token Cringe loss, ``cringe_token_losses(...).sum(-1)``.
        alpha: α ≥ 0, the weight of the Cringe term; α = 0 is SFT on the winner.
        b: the margin b of the gate, in nats of M.
        tau: τ > 0, the gate's temperature.
        margin: ``sum`` (M on summed log-probs) | ``mean`` (on per-token means).
        detach_gate: stop the gradient through g (see the module docstring).

    Returns:
        :class:`LossOutput` with ``[P]`` per-pair losses (reduce with a mean over pairs), ``count`` = P, the means
        over pairs of each part as ``cringe/*`` metrics, and the parts per pair, detached, as extras: ``ce`` (the
        winner's mean token NLL), ``cringe`` (the loser's mean token Cringe loss), ``gate`` and ``margin`` (M).
    """
    tensors = (chosen_logps, chosen_tokens, rejected_logps, rejected_tokens, rejected_cringe)
    if len({tuple(x.shape) for x in tensors}) != 1 or chosen_logps.dim() != 1:
        raise ValueError(f"need five [P] tensors; got {[tuple(x.shape) for x in tensors]}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if margin not in CRINGE_MARGINS:
        raise ValueError(f"unknown margin {margin!r}; choose from {CRINGE_MARGINS}")
    n_w = chosen_tokens.to(chosen_logps.dtype).clamp(min=1)
    n_l = rejected_tokens.to(chosen_logps.dtype).clamp(min=1)
    ce = -chosen_logps / n_w
    ct = rejected_cringe / n_l
    m = chosen_logps - rejected_logps if margin == "sum" else chosen_logps / n_w - rejected_logps / n_l
    gate = torch.sigmoid((b - (m.detach() if detach_gate else m)) / tau)
    losses = ce + alpha * gate * ct
    extras = {"ce": ce.detach(), "cringe": ct.detach(), "gate": gate.detach(), "margin": m.detach()}
    metrics = {} if losses.numel() == 0 else {
        "cringe/ce": extras["ce"].mean().item(),
        "cringe/token_cringe": extras["cringe"].mean().item(),
        "cringe/gate": extras["gate"].mean().item(),
        "cringe/margin": extras["margin"].mean().item(),
    }
    return LossOutput(losses, losses.numel(), metrics, extras=extras)


def cringe_loss(scores: ListScores, config: CringeLossConfig) -> LossOutput:
    """Pairwise Cringe on every preferred/dispreferred pair of a batch of lists (no reference).

    The token-level Cringe loss is computed only on rows that are some pair's loser.

    Args:
        scores: ``policy_logps``, ``labels``, ``mask``, ``lengths`` (``[B, K]``), ``row_list`` and ``row_slot``
            ``[N]``, and either the rows' ``logits`` ``[N, L, V]`` with ``input_ids`` and ``loss_mask`` ``[N, L]``
            (padded layout) or ``response_logits`` (packed layout).
        config: α, b, τ, k, the margin and whether the gate is detached.

    Returns:
        :class:`LossOutput` of :func:`pairwise_cringe_loss`, with the pairs.
    """
    c = config
    packed = scores.logits is None and scores.response_logits is not None
    need = ("row_list", "row_slot", "lengths") + (() if packed else ("logits", "input_ids", "loss_mask"))
    missing = [k for k in need if getattr(scores, k) is None]
    if missing:
        raise ValueError(f"cringe_loss is token-level: ListScores lacks {', '.join(missing)}")
    pairs = preference_pairs(scores.labels, scores.mask)
    row_of = scores.row_of()  # [B, K]
    rows = row_of[pairs.batch, pairs.loser].unique()  # [R] token Cringe only where a row is some pair's loser
    if packed:  # the losers' scored tokens only, as one flat sequence; each token's loss summed into its row
        logits, targets, owner = scores.response_logits(rows)
        token = cringe_token_losses(logits[None], targets[None], torch.ones_like(targets, dtype=torch.bool)[None],
                                    k=c.k)[0]  # [T]
        per_row = torch.zeros(row_of.numel(), dtype=token.dtype, device=token.device).index_add(0, owner, token)
    else:
        token = cringe_token_losses(scores.logits[rows, :-1], scores.input_ids[rows, 1:],
                                    scores.loss_mask[rows, 1:].bool(), k=c.k)  # [R, L-1]
        per_row = torch.zeros(row_of.numel(), dtype=token.dtype, device=token.device)
        per_row[rows] = token.sum(-1)
    w_logps, l_logps = pairs.take(scores.policy_logps)
    w_len, l_len = pairs.take(scores.lengths)
    out = pairwise_cringe_loss(w_logps, w_len, l_logps, l_len, per_row[row_of[pairs.batch, pairs.loser]],
                               alpha=c.alpha, b=c.b, tau=c.tau, margin=c.margin, detach_gate=c.detach_gate)
    out.pairs = pairs
    return out


CRINGE = LossSpec(name="cringe", config=CringeLossConfig, compute=cringe_loss, count=pair_count,
                  needs_reference=False, unit="pair", token_level=True)
