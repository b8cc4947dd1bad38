"""DPO and its common pairwise variants over a batch of lists: the loss, its config and its registry entry.

Rafailov et al. 2023, "Direct Preference Optimization" (arXiv 2305.18290), Eq. 7:
    L = -log σ(β h),  h = [log π_θ(y_w) - log π_ref(y_w)] - [log π_θ(y_l) - log π_ref(y_l)]
Variants, with h as above (``docs/algorithms.md`` §1; TRL's ``DPOTrainer`` computes the same):
    sigmoid  -(1-ε) log σ(βh) - ε log σ(-βh)              (ε = label_smoothing > 0 is cDPO)
    robust   [-(1-ε) log σ(βh) + ε log σ(-βh)] / (1-2ε)    (rDPO, Chowdhury et al. 2024, Eq. 8)
    hinge    max(0, 1 - βh)                                (SLiC / RSO, Liu et al. 2023)
    ipo      (h̄ - 1/(2β))²                                 (IPO, Azar et al. 2023, Eq. 17)
    sigmoid_norm  -log σ(β h̄)                             (TRL's ``sigmoid_norm``: DPO on per-token log-ratios)
βh is the difference of the implicit rewards β·(log π_θ - log π_ref) of :meth:`ListScores.implicit_rewards`. For
IPO we length-normalise, as TRL does and as the IPO authors confirmed to TRL: h̄ uses each response's log-ratio
divided by its token count, so β means the same at any response length. Lengths of 1 give the summed form of the
original DPO repository. ``sigmoid_norm`` is the DPO loss on h̄, h̄ = (log-ratio of y_w)/|y_w| − (log-ratio of
y_l)/|y_l| with |y| the response's token count (at least 1), as TRL 1.16 computes it; a summed log-ratio grows
with the length of a response, so on data whose preferred responses are mostly the longer ones it ranks by length.

On lists of K > 2 responses every ordered pair (ties excluded) is one term; the loss is the mean over pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from align.losses.base import ListScores, LossOutput, LossSpec
from align.losses.pairs import Pairs, pair_count, preference_pairs
from align.losses.reward_metrics import pair_reward_metrics
from align.validation import POSITIVE, Range, check_fields

DPOLossType = Literal["sigmoid", "ipo", "hinge", "robust", "sigmoid_norm"]
DPO_LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo", "hinge", "robust", "sigmoid_norm")


@dataclass
class DPOLossConfig:
    """DPO objective settings.

    Attributes:
        beta: β, the scale of the implicit reward β·log(π/π_ref) (the strength of the implicit KL constraint); 0.1
            as in the DPO paper and TRL. GRPO's ``beta`` is another quantity: the weight of its explicit KL term.
        loss_type: ``sigmoid`` (DPO; cDPO with ``label_smoothing``), ``ipo`` (length-normalised), ``hinge``,
            ``robust`` (rDPO), ``sigmoid_norm`` (DPO on length-normalised log-ratios, TRL's ``sigmoid_norm``).
        label_smoothing: ε for cDPO / rDPO, in [0, 0.5); the other loss types have none.
    """

    beta: float = 0.1
    loss_type: DPOLossType = "sigmoid"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "loss", beta=POSITIVE, label_smoothing=Range(0, 0.5, high_open=True))
        if self.label_smoothing and self.loss_type not in ("sigmoid", "robust"):
            raise ValueError(f"loss.label_smoothing applies to loss_type sigmoid (cDPO) and robust (rDPO), "
                             f"not {self.loss_type!r}")


def pairwise_output(losses: torch.Tensor, pairs: Pairs, chosen: torch.Tensor, rejected: torch.Tensor) -> LossOutput:
    """The :class:`LossOutput` of a pairwise loss: one entry per pair, the shared reward metrics, and the pairs'
    rewards (``[P]``, detached) as the ``chosen_rewards`` / ``rejected_rewards`` extras."""
    chosen, rejected = chosen.detach(), rejected.detach()
    return LossOutput(losses, len(pairs), pair_reward_metrics(chosen, rejected), pairs,
                      {"chosen_rewards": chosen, "rejected_rewards": rejected})


def dpo_loss(scores: ListScores, config: DPOLossConfig) -> LossOutput:
    """DPO-family loss for every preferred/dispreferred pair of a batch of lists.

    Args:
        scores: ``policy_logps``, ``ref_logps``, ``labels``, ``mask`` (all ``[B, K]``); ``lengths`` for ``ipo`` and
            ``sigmoid_norm``.
        config: β, loss type and label smoothing.

    Returns:
        :class:`LossOutput` with ``[P]`` per-pair losses, ``count`` = P, the pairs and their (summed) implicit
        rewards, as TRL reports them for every loss type.

    >>> import torch
    >>> s = ListScores(torch.tensor([[-10., -12.]]), torch.tensor([[1., 0.]]), torch.ones(1, 2, dtype=torch.bool),
    ...                ref_logps=torch.tensor([[-11., -11.]]))
    >>> round(dpo_loss(s, DPOLossConfig(beta=0.1)).losses.item(), 6)
    0.598139
    """
    c = config
    if c.loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"unknown DPO loss_type {c.loss_type!r}; choose from {DPO_LOSS_TYPES}")
    pairs = preference_pairs(scores.labels, scores.mask)
    s_w, s_l = pairs.take(scores.implicit_rewards(c.beta))  # [P] β·r of winner and loser
    z = s_w - s_l  # βh
    if c.loss_type == "sigmoid_norm":  # βh̄: per-token log-ratios (the reported rewards stay summed, as TRL's)
        n_w, n_l = pairs.take(scores.implicit_rewards(c.beta, length_normalized=True))
        z = n_w - n_l
    eps = c.label_smoothing
    if c.loss_type in ("sigmoid", "sigmoid_norm"):  # sigmoid_norm has no label smoothing (the config checks)
        losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
    elif c.loss_type == "robust":
        losses = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
    elif c.loss_type == "hinge":
        losses = torch.relu(1 - z)
    else:  # ipo: β enters only through the target 1/(2β); h̄ is unscaled
        h_w, h_l = pairs.take(scores.log_ratios(length_normalized=True))
        losses = (h_w - h_l - 1 / (2 * c.beta)) ** 2
    return pairwise_output(losses, pairs, s_w, s_l)


DPO = LossSpec(name="dpo", config=DPOLossConfig, compute=dpo_loss, count=pair_count, needs_reference=True,
               unit="pair")
