"""Evaluation by sampling: draw n completions of each held-out prompt, score them with the reward sources (a
built-in task's true rule, a reward model), and report mean rewards with bootstrap intervals over prompts and
pass@k for every source whose rewards are 0/1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from align.data.prompts import TokenizedPrompt
from align.evaluation.bootstrap import bootstrap_weights, percentile_interval
from align.online.generation import Samples, seeded_sample
from align.online.scoring import RewardSource
from align.tasks.common import pass_at_k


def score_samples(samples: Samples, prompts: Sequence[TokenizedPrompt], sources: Sequence[RewardSource], *,
                  ks: Sequence[int] = (1, 2, 4, 8), resamples: int = 1000, level: float = 0.95, seed: int = 0
                  ) -> dict[str, Any]:
    """Rewards of ``samples`` (``[B][n]`` completions of ``prompts``) under every source, as a report."""
    examples = [p.example for p in prompts]
    n = len(samples.completion_ids[0]) if samples.completion_ids else 0
    weights = bootstrap_weights(len(prompts), resamples, seed) if resamples and prompts else None
    out: dict[str, Any] = {"n_prompts": len(prompts), "samples_per_prompt": n, "reward": {}, "reward_ci": {},
                           "reward_per_prompt": {},
                           "pass_at_k": {}, "mean_length": float(torch.tensor(
                               [len(c) for g in samples.completion_ids for c in g], dtype=torch.float32).mean())
                           if n else None, "truncated": float(samples.truncated.float().mean()) if n else None}
    for s in sources:
        r = s(examples, samples.texts, completion_ids=samples.completion_ids).double()  # [B, n]
        per_prompt = torch.nan_to_num(r).mean(-1)
        out["reward"][s.name] = float(per_prompt.mean()) if len(prompts) else None
        out["reward_per_prompt"][s.name] = [round(float(v), 6) for v in per_prompt]
        if weights is not None:
            out["reward_ci"][s.name] = percentile_interval((weights * per_prompt).sum(-1) / len(prompts), level)
        valid = r[~torch.isnan(r)]
        if valid.numel() and bool(((valid == 0) | (valid == 1)).all()):
            correct = (r == 1).sum(-1).tolist()
            out["pass_at_k"][s.name] = {str(k): sum(pass_at_k(n, int(c), k) for c in correct) / len(prompts)
                                        for k in ks if k <= n}
    return out


def evaluate_by_sampling(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[TokenizedPrompt],
                         sources: Sequence[RewardSource], *, n: int, max_new_tokens: int, temperature: float = 1.0,
                         top_p: float = 1.0, batch_size: int = 64, ks: Sequence[int] = (1, 2, 4, 8),
                         seed: int = 0, resamples: int = 1000, level: float = 0.95) -> dict[str, Any]:
    """Sample ``n`` completions of each prompt from ``model`` and :func:`score_samples` them (seeded, so two
    models are compared on the same random stream; ``resamples`` and ``level`` are the bootstrap's)."""
    samples = seeded_sample(model, tokenizer, [p.prompt_ids for p in prompts], n=n, max_new_tokens=max_new_tokens,
                            temperature=temperature, top_p=top_p, batch_size=batch_size, seed=seed)
    report = score_samples(samples, prompts, sources, ks=ks, resamples=resamples, level=level, seed=seed)
    report["temperature"] = temperature
    report["seconds"] = samples.seconds
    return report


def paired_gain(before: dict[str, Any], after: dict[str, Any], *, resamples: int = 1000, level: float = 0.95,
                seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per reward source, the held-out change ``after − before`` of two :func:`evaluate_by_sampling` reports on the
    same prompts: its mean and a bootstrap interval over prompts of the paired per-prompt differences (both
    reports drew their samples on the same seeded stream, so a prompt's difference is the model's doing)."""
    out = {}
    for name, a in after.get("reward_per_prompt", {}).items():
        b = before.get("reward_per_prompt", {}).get(name)
        if b is None or len(a) != len(b) or not a:
            continue
        d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
        w = bootstrap_weights(len(d), resamples, seed)
        out[name] = {"mean": float(d.mean()), "ci": percentile_interval((w * d).sum(-1) / len(d), level)}
    return out
