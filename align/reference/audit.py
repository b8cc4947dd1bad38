"""The audit of cached values: a random sample of a run's cache hits, spread over their shards, is scored again
by the reference model itself (before training the policy is the reference) and compared.

A signature keeps out edits by anyone who cannot read the cache's secret; the audit also catches values written
by someone who can (or by code that computed them differently): a run stops, naming the shards, when any sampled
value differs beyond the dtype's tolerance. ``reference.audit_samples: 0`` turns it off.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Sequence
from typing import Any

from align.data.tokenize import TokenizedList
from align.reference.store import CacheError, Entry

DEFAULT_SAMPLES = 64

# (absolute, relative) tolerance of a summed log-prob per compute dtype: what batching and padding change.
_TOLERANCE = {"torch.float64": (1e-6, 1e-8), "torch.float32": (1e-3, 1e-4), "torch.float16": (0.5, 1e-2),
              "torch.bfloat16": (1.0, 2e-2)}


def tolerance(dtype: str) -> tuple[float, float]:
    """(absolute, relative) tolerance of a recomputed value in ``dtype`` (``str(torch.dtype)``)."""
    return _TOLERANCE.get(dtype, _TOLERANCE["torch.bfloat16"])


def pick(shard_of: dict[bytes, str], n: int, seed: int) -> list[bytes]:
    """Up to ``n`` keys spread over their shards: shards in random order, one key from each in turn."""
    rng = random.Random(seed)
    by_shard: dict[str, list[bytes]] = {}
    for k, s in shard_of.items():
        by_shard.setdefault(s, []).append(k)
    order = sorted(by_shard)
    rng.shuffle(order)
    picks: dict[str, list[bytes]] = {s: rng.sample(by_shard[s], min(len(by_shard[s]), n)) for s in order}
    out: list[bytes] = []
    while len(out) < n and any(picks.values()):
        for s in order:
            if picks[s] and len(out) < n:
                out.append(picks[s].pop())
    return out


def new_seed() -> int:
    """A fresh seed per run: a fixed one would tell a forger which entries are never checked."""
    return secrets.randbits(32)


def run_audit(live: Any, sample: Sequence[bytes], cached: dict[bytes, Entry], shard_of: dict[bytes, str],
              sequences: dict[bytes, tuple[tuple[int, ...], tuple[int, ...]]], *, samples: int, seed: int
              ) -> dict[str, Any]:
    """Score ``sample`` (keys of cache hits) with ``live`` (the reference model) and compare with ``cached``.

    Returns the ``audit`` record of ``reference_cache``; raises :class:`CacheError` naming the shards whose
    sampled values differ beyond the tolerance.
    """
    t0 = time.perf_counter()
    atol, rtol = tolerance(live.identity.dtype)
    lists = [TokenizedList(sequences[k][0], (sequences[k][1],), (0.0,)) for k in sample]
    scored = [row[0] for row in live.score(lists)] if lists else []
    worst, bad = 0.0, {}
    for k, fresh in zip(sample, scored):
        old = cached[k]
        diff = abs(old.logp - fresh.logp)
        if old.tokens is not None and fresh.tokens is not None:
            a, b = old.tokens.float().reshape(-1), fresh.tokens.float().cpu().reshape(-1)
            diff = max(diff, float((a - b).abs().max()) if a.shape == b.shape and a.numel() else float("inf"))
        worst = max(worst, diff)
        if not diff <= atol + rtol * abs(fresh.logp):
            bad[shard_of[k]] = max(bad.get(shard_of[k], 0.0), diff)
    report = {"samples": samples, "checked": len(sample), "shards": len({shard_of[k] for k in sample}),
              "max_abs_diff": worst, "tolerance": {"abs": atol, "rel": rtol}, "failed_shards": sorted(bad),
              "seed": seed, "seconds": round(time.perf_counter() - t0, 3)}
    if bad:
        names = ", ".join(f"{s} (|diff| {d:.3g})" for s, d in sorted(bad.items()))
        raise CacheError(f"reference cache audit: cached values differ from the reference model beyond the "
                         f"{live.identity.dtype} tolerance in shard(s) {names}: this cache holds values that are "
                         "not this reference's (edited, or written by other code); remove those shards, or the "
                         "cache, and rerun (reference.audit_samples=0 turns the audit off)")
    return report
