"""GRPO's clipped per-token policy-gradient loss with the k3 KL to the reference, as a pure function.

Shao et al. 2024, "DeepSeekMath" (arXiv 2402.03300), §4.1; variants as TRL's ``GRPOTrainer`` names them. For every
completion token t of sequence i (advantage Â_i, the same for all its tokens):
    ρ_t   = π_θ(y_t) / π_old(y_t)                                   (importance ratio; 1 when π_old = π_θ)
    ℓ_t   = −min(ρ_t·Â_i, clip(ρ_t, 1 − ε, 1 + ε_high)·Â_i) + β·k3_t
    k3_t  = π_ref(y_t)/π_θ(y_t) − log(π_ref(y_t)/π_θ(y_t)) − 1       (Schulman's unbiased, non-negative KL estimator)
With ``importance_sampling_level="sequence"`` (GSPO, Zheng et al. 2025, "Group Sequence Policy Optimization",
arXiv 2507.18071; TRL's ``importance_sampling_level="sequence"``) the ratio is one per sequence, the exponential of
the mean log-ratio over its completion tokens, s_i = exp(Σ_t m_t·(log π_θ − log π_old) / max(Σ_t m_t, 1)), used in
place of ρ_t at every token of sequence i (the clip then acts per sequence; the KL term stays per token).
How the token losses become one number (the ``loss_type``; the item count is what gradient accumulation sums):
    grpo     mean over sequences of each sequence's token mean        items: sequences
    bnpo     token sum / token count of this process's step           items: tokens (this process)
    dapo     token sum / token count of the whole step, all processes items: tokens (all processes)
    dr_grpo  token sum / (sequences × max_completion_length)          items: sequences × max_completion_length
(Yu et al. 2025 "DAPO", arXiv 2503.14476; Liu et al. 2025 "Understanding R1-Zero-Like Training" (Dr. GRPO), arXiv
2503.20783.) The formulas and our conventions are in ``docs/algorithms.md`` (GRPO).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from align.losses.base import LossOutput, LossSpec
from align.rewards.spec import RewardSpec
from align.validation import COUNT, NON_NEGATIVE, POSITIVE, Range, check_fields

GRPO_LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dapo", "dr_grpo")
GRPOLossType = Literal["grpo", "bnpo", "dapo", "dr_grpo"]
ImportanceSamplingLevel = Literal["token", "sequence"]
IMPORTANCE_SAMPLING_LEVELS: tuple[str, ...] = ("token", "sequence")


def grpo_count(mask: torch.Tensor, loss_type: GRPOLossType, max_completion_length: int) -> float:
    """The item count of :func:`grpo_loss` for a completion ``mask`` ``[N, T]`` (known right after generation)."""
    if loss_type == "grpo":
        return float(mask.shape[0])  # every sequence, a fully masked one too (it adds 0), as TRL
    if loss_type in ("bnpo", "dapo"):
        return float(mask.sum())
    if loss_type == "dr_grpo":
        return float(mask.shape[0] * max_completion_length)
    raise ValueError(f"unknown GRPO loss_type {loss_type!r}; choose from {GRPO_LOSS_TYPES}")


def grpo_loss(
    logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: GRPOLossType = "dapo",
    max_completion_length: int | None = None,
    importance_sampling_level: ImportanceSamplingLevel = "token",
) -> LossOutput:
    """The GRPO loss of a batch of completions (see the module docstring for every formula).

    Args:
        logps: ``[N, T]`` per-token log-probs of the completions under the policy (with gradients).
        advantages: ``[N]`` one advantage per completion.
        mask: ``[N, T]`` 1 on the completion tokens that count (0 on prompt, padding, masked-out completions).
        old_logps: ``[N, T]`` under the policy that sampled them (π_old); None means π_old = π_θ (one update per
            generation), i.e. ``logps.detach()``.
        ref_logps: ``[N, T]`` under the reference; required when ``beta > 0``.
        beta: β, the weight of the k3 KL term (0: no reference needed).
        epsilon, epsilon_high: the clip range [1 − ε, 1 + ε_high]; ``epsilon_high`` defaults to ε.
        loss_type: ``grpo`` | ``bnpo`` | ``dapo`` | ``dr_grpo``.
        max_completion_length: the generation length limit (``dr_grpo``'s constant normaliser).
        importance_sampling_level: ``token`` (GRPO: one ratio per token) or ``sequence`` (GSPO: one ratio per
            sequence, from its mean token log-ratio; see the module docstring).

    Returns:
        :class:`~align.losses.base.LossOutput`: per-item losses (per sequence for ``grpo``, its token mean; per
        sequence for ``dr_grpo``, its token sum, each sequence counting ``max_completion_length`` items; per token
        for ``bnpo`` and ``dapo``), their count, the mean over completion tokens ``kl`` and the clipped fractions
        ``clip_ratio/low``, ``clip_ratio/high``, ``clip_ratio/region`` (over completion tokens; at sequence level
        over sequences, as TRL).
    """
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"unknown GRPO loss_type {loss_type!r}; choose from {GRPO_LOSS_TYPES}")
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(f"unknown importance_sampling_level {importance_sampling_level!r}; choose from "
                         f"{IMPORTANCE_SAMPLING_LEVELS}")
    if beta > 0 and ref_logps is None:
        raise ValueError("beta > 0 needs the reference's per-token log-probs")
    if loss_type == "dr_grpo" and not max_completion_length:
        raise ValueError("dr_grpo needs max_completion_length")
    eps_high = epsilon if epsilon_high is None else epsilon_high
    mask = mask.to(logps.dtype)
    old = logps.detach() if old_logps is None else old_logps
    adv = advantages.to(logps.dtype)[:, None]  # [N, 1]
    log_ratio = logps - old  # [N, T]
    if importance_sampling_level == "sequence":  # GSPO: one ratio per sequence, [N, 1], broadcast over its tokens
        log_ratio = (log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)  # [N, T] (a [N, 1] ratio broadcasts)
    kl = None
    if beta > 0:
        delta = ref_logps - logps  # log(π_ref / π_θ)
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
    per_token = per_token * mask
    if loss_type == "grpo":
        losses = per_token.sum(-1) / mask.sum(-1).clamp(min=1)
    elif loss_type == "dr_grpo":
        losses = per_token.sum(-1)
    else:  # bnpo, dapo: one item per token
        losses = per_token[mask.bool()]
    count = grpo_count(mask, loss_type, max_completion_length or 0)
    with torch.no_grad():
        n_tok = mask.sum().clamp(min=1)
        low = ((ratio < 1 - epsilon) & (adv < 0)).to(mask.dtype)
        high = ((ratio > 1 + eps_high) & (adv > 0)).to(mask.dtype)
        if importance_sampling_level == "sequence":  # per sequence, every sequence counted (as TRL)
            n_clip = max(ratio.shape[0], 1)
        else:
            low, high, n_clip = low * mask, high * mask, n_tok
        metrics = {"clip_ratio/low": float(low.sum() / n_clip), "clip_ratio/high": float(high.sum() / n_clip),
                   "clip_ratio/region": float((low + high).sum() / n_clip)}
        if kl is not None:
            metrics["kl"] = float((kl * mask).sum() / n_tok)
    return LossOutput(losses, count, metrics)


@dataclass
class GRPOLossConfig:
    """GRPO settings; names and defaults follow TRL's ``GRPOConfig`` where the two agree.

    Attributes:
        rewards: the reward sources, each a function ``module:function`` or a reward ``model``, with a weight (a run
            needs at least one here or passed as ``reward_funcs`` / the trainer's ``rewards``, e.g.
            :func:`align.online.scoring.reward_sources` of callables).
        num_generations: G, completions per prompt (TRL 8).
        temperature, top_p: sampling settings.
        max_completion_length: completion length limit (tokens).
        beta: β, the weight of the k3 KL term; 0 loads no reference at all (TRL's default). Not the β of DPO and
            the other preference losses, which scales their implicit reward β·log(π/π_ref).
        epsilon, epsilon_high: the clip range [1 − ε, 1 + ε_high] (ε_high defaults to ε; TRL ε = 0.2).
        num_iterations: μ, optimizer steps per generation against π_old (TRL 1).
        scale_rewards: ``group`` (divide by the group's std), ``batch`` (by the batch's), ``none``.
        loss_type: ``grpo``, ``bnpo``, ``dapo`` (TRL's default) or ``dr_grpo``.
        mask_truncated_completions: leave completions that hit the length limit out of the loss.
        unlikeliness: β_rank of He et al.'s unlikeliness reward (0.25 in their recipe; 0 is plain GRPO).
        drop_zero_variance_groups: leave groups whose rewards are all equal out of the loss (they have zero
            advantage; otherwise they still carry the KL term and count in the normaliser).
        generation_batch_size: prompts per generation call (TRL's field of that name is the number of
            completions sampled per generation round; align samples once per optimizer step).
        generation_engine: ``shared_prefix`` (each prompt prefilled once, its cache copied to its G samples, every
            sample on its own seeded stream) or ``generate`` (Hugging Face ``generate`` on G copies of each prompt);
            see :mod:`align.online.engines`.
        importance_sampling_level: ``token`` (GRPO) or ``sequence`` (GSPO, Zheng et al. 2025), as TRL's field.
        multi_objective_aggregation: how several rewards make one advantage, as TRL's field:
            ``sum_then_normalize`` (weighted sum, then group advantages by ``scale_rewards``) or
            ``normalize_then_sum`` (each reward normalised in its group, weighted sum, then normalised over the
            batch); see :func:`align.rewards.aggregate_advantages`.
        log_completions: log a table of sampled completions (prompt, completion, each reward, advantage) at every
            logging step: to the console, ``completions.jsonl`` in the run directory and TensorBoard
            (:class:`align.online.completions.CompletionLog`).
        num_completions_to_print: rows of that table printed to the console (all of them go to the file); None
            prints every row, 0 none.
    """

    rewards: list[RewardSpec] = field(default_factory=list)
    num_generations: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 256
    beta: float = 0.0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    num_iterations: int = 1
    scale_rewards: Literal["group", "batch", "none"] = "group"
    loss_type: GRPOLossType = "dapo"
    mask_truncated_completions: bool = False
    unlikeliness: float = 0.0
    drop_zero_variance_groups: bool = False
    generation_batch_size: int = 64
    generation_engine: Literal["shared_prefix", "generate"] = "shared_prefix"
    importance_sampling_level: ImportanceSamplingLevel = "token"
    multi_objective_aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = "sum_then_normalize"
    log_completions: bool = False
    num_completions_to_print: int | None = 8

    def __post_init__(self) -> None:
        if not isinstance(self.rewards, list):
            raise ValueError(f"loss.rewards: expected a list of rewards, got {self.rewards!r}")
        self.rewards = [RewardSpec.of(r) for r in self.rewards]  # may be empty in Python: the trainer's rewards=
        check_fields(self, "loss", num_generations=Range(2, integer=True), max_completion_length=COUNT,
                     temperature=POSITIVE, top_p=Range(0, 1, low_open=True), beta=NON_NEGATIVE,
                     epsilon=Range(0, 1, low_open=True, high_open=True), epsilon_high=POSITIVE,
                     num_iterations=COUNT, unlikeliness=Range(0, 1), generation_batch_size=COUNT,
                     num_completions_to_print=Range(0, integer=True))
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(f"loss.loss_type: expected one of {GRPO_LOSS_TYPES}, got {self.loss_type!r}")
        if self.generation_engine not in ("shared_prefix", "generate"):
            raise ValueError("loss.generation_engine: expected 'shared_prefix' or 'generate', "
                             f"got {self.generation_engine!r}")


@dataclass
class RolloutScores:
    """One micro-batch of sampled completions, as GRPO's loss reads it (rows are completions).

    Attributes:
        logps: ``[N, T]`` per-token log-probs under the policy (with gradients).
        advantages: ``[N]``.
        mask: ``[N, T]`` 1 on the completion tokens that count.
        old_logps / ref_logps: ``[N, T]`` under π_old / the reference, or None.
    """

    logps: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    old_logps: torch.Tensor | None = None
    ref_logps: torch.Tensor | None = None


def _compute(scores: RolloutScores, c: GRPOLossConfig) -> LossOutput:
    return grpo_loss(scores.logps, scores.advantages, scores.mask, old_logps=scores.old_logps,
                     ref_logps=scores.ref_logps, beta=c.beta, epsilon=c.epsilon, epsilon_high=c.epsilon_high,
                     loss_type=c.loss_type, max_completion_length=c.max_completion_length,
                     importance_sampling_level=c.importance_sampling_level)


# needs_reference is about the cache filled before training: GRPO's reference (β > 0) scores samples live.
GRPO = LossSpec(name="grpo", config=GRPOLossConfig, compute=_compute,
                count=lambda labels, mask, c: grpo_count(mask, c.loss_type, c.max_completion_length),
                needs_reference=False, unit="token", token_level=True,
                unit_for=lambda c: "sequence" if c.loss_type in ("grpo", "dr_grpo") else "token")
