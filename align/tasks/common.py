"""Task-independent measures: the true preference probability of a pair, and unbiased pass@k."""

from __future__ import annotations

import math

import torch


def preference_probability(score_a: float | torch.Tensor, score_b: float | torch.Tensor,
                           temperature: float = 1.0) -> float | torch.Tensor:
    """P(a ≻ b) under a Bradley–Terry model on the true scores (Bradley & Terry 1952):
    σ((s_a − s_b) / temperature). Floats give a float, tensors an elementwise tensor. ``temperature`` > 0;
    small temperatures approach the deterministic preference, large ones a coin flip."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if isinstance(score_a, torch.Tensor) or isinstance(score_b, torch.Tensor):
        return torch.sigmoid((torch.as_tensor(score_a) - torch.as_tensor(score_b)) / temperature)
    z = (score_a - score_b) / temperature
    # the two branches of the logistic never overflow exp
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, "Evaluating Large Language Models
    Trained on Code"): 1 − C(n − c, k) / C(n, k), computed as 1 − Π_{i=n−c+1}^{n} (1 − k / i), which avoids
    huge binomials. Exactly 1 when n − c < k (every k-subset holds a correct sample)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
