"""Per-subset accuracy for RewardBench-style files (``prompt, chosen, rejected, subset``), and section means.

Sections follow RewardBench (Lambert et al. 2024, arXiv 2403.13787): which subsets make up Chat, Chat Hard,
Safety and Reasoning. A section's accuracy is the example-weighted mean over its subsets (docs/algorithms.md §8),
i.e. pooled over its pairs; subsets we do not know go to ``other``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from align.evaluation.bootstrap import bootstrap_weights, percentile_interval

REWARDBENCH_SECTIONS: dict[str, tuple[str, ...]] = {
    "chat": ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"),
    "chat-hard": ("mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"),
    "safety": ("refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"),
    "reasoning": ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"),
}
_SECTION_OF = {s: sec for sec, subsets in REWARDBENCH_SECTIONS.items() for s in subsets}


def section_of(subset: str) -> str:
    """The RewardBench section of ``subset``, or ``other``."""
    return _SECTION_OF.get(subset, "other")


def _accuracy(correct: torch.Tensor, n_pairs: torch.Tensor, idx: list[int], resamples: int, seed: int,
              level: float) -> dict[str, Any]:
    c, n = correct[idx].double(), n_pairs[idx].double()
    total = float(n.sum())
    out: dict[str, Any] = {"pairwise_accuracy": float(c.sum()) / total if total else None,
                           "n_pairs": int(total), "n_lists": len(idx)}
    if resamples and total:
        w = bootstrap_weights(len(idx), resamples, seed)  # resampled within the group: its own size is fixed
        den = (w * n).sum(-1)
        out["ci"] = percentile_interval(torch.where(den > 0, (w * c).sum(-1) / den.clamp(min=1e-300),
                                                    torch.full_like(den, float("nan"))), level)
    return out


def subset_report(subsets: Sequence[str | None], correct: torch.Tensor, n_pairs: torch.Tensor, *,
                  resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, dict[str, Any]]:
    """``{"by_subset": {name: {...}}, "by_section": {name: {...}}}`` of strict pairwise accuracy with bootstrap
    CIs, from per-list correct-pair and pair counts (lists without a subset are left out)."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(subsets):
        if s is not None:
            groups.setdefault(s, []).append(i)
    sections: dict[str, list[int]] = {}
    for s, idx in groups.items():
        sections.setdefault(section_of(s), []).extend(idx)
    by_subset = {s: {**_accuracy(correct, n_pairs, idx, resamples, seed, level), "section": section_of(s)}
                 for s, idx in sorted(groups.items())}
    by_section = {s: {**_accuracy(correct, n_pairs, sorted(idx), resamples, seed, level),
                      "subsets": sorted({x for x in groups if section_of(x) == s})}
                  for s, idx in sorted(sections.items())}
    return {"by_subset": by_subset, "by_section": by_section}
