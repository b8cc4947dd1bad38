"""The shared reference log-prob cache: computed once, stored as verified shards, reused by every run.

Layout under ``root/<key>/``:
    manifest.json            what the key was made of, the shard layout, the list sizes
    shard-00000.safetensors  ``logps [n, K_max]`` (NaN on empty slots), optionally ``token_logps`` (flat) and
    shard-00000.json         its sha256, row range and count — written after the shard, so its presence means
                             the shard is complete; a kill between the two only costs recomputing that shard.
The key is sha256 of: reference weights fingerprint, tokenizer fingerprint, the tokenized data fingerprint (ids
after template and truncation, so max lengths and truncation are in it), dtype, per-token flag, and the
settings given. Any change gives another directory: a different reference, tokenizer or data never hits.
Every file is written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from align.data.tokenize import TokenizedList, data_fingerprint
from align.forward import score_lists
from align.reference.fingerprint import config_fingerprint, tokenizer_fingerprint, weights_fingerprint

log = logging.getLogger("align.reference")
FORMAT_VERSION = 1


class CacheError(RuntimeError):
    """A cache that cannot be trusted and was not allowed to be recomputed."""


@dataclass
class CacheStats:
    """What one :meth:`ReferenceCache.ensure` did. ``hits``/``computed`` count lists (examples); in a distributed
    run ``computed`` is what the whole group computed and ``computed_here`` this rank's part of it."""

    key: str = ""
    hits: int = 0
    computed: int = 0
    seconds: float = 0.0
    corrupted_shards: int = 0
    computed_here: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "hits": self.hits, "computed": self.computed, "seconds": round(self.seconds, 3),
                "corrupted_shards": self.corrupted_shards}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


@dataclass
class ReferenceCache:
    """Reference log-probs of a tokenized data set under one reference model.

    Build with :meth:`for_model` (computes the key), fill with :meth:`ensure`, read with :meth:`logps`.
    """

    root: Path
    key: str
    components: dict[str, Any]
    sizes: list[int]
    shard_size: int = 512
    per_token: bool = False
    stats: CacheStats = field(default_factory=CacheStats)
    _values: list[torch.Tensor] | None = None
    _tokens: list[tuple[torch.Tensor, torch.Tensor] | None] | None = None
    # What for_model fingerprinted, so ensure() can recognise the same model and lists without hashing again
    # (profiling a cold build: the second weights fingerprint was its largest cost after the forward).
    _keyed_on: tuple[list[tuple[int, int]], list[TokenizedList]] | None = field(default=None, repr=False,
                                                                                  compare=False)

    @classmethod
    def for_model(
        cls,
        root: str | os.PathLike,
        model: torch.nn.Module,
        tokenizer: Any,
        lists: Sequence[TokenizedList],
        *,
        per_token: bool = False,
        shard_size: int = 512,
        settings: dict[str, Any] | None = None,
    ) -> ReferenceCache:
        """Key the cache by everything that changes the numbers and return it (nothing is computed yet)."""
        dtype = str(next(model.parameters()).dtype)
        components = {
            "format": FORMAT_VERSION,
            "weights": weights_fingerprint(model),
            "config": config_fingerprint(model),
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "data": data_fingerprint(list(lists)),
            "dtype": dtype,
            "per_token": per_token,
            "settings": settings or {},
        }
        key = hashlib.sha256(json.dumps(components, sort_keys=True, default=str).encode()).hexdigest()[:32]
        sizes = [len(t.response_ids) for t in lists]
        cache = cls(Path(root), key, components, sizes, shard_size, per_token, CacheStats(key=key))
        cache._keyed_on = (_weights_state(model), list(lists))
        return cache

    @property
    def dir(self) -> Path:
        return self.root / self.key

    @property
    def num_shards(self) -> int:
        return max(1, math.ceil(len(self.sizes) / self.shard_size))

    def _range(self, s: int) -> tuple[int, int]:
        return s * self.shard_size, min((s + 1) * self.shard_size, len(self.sizes))

    def _write_manifest(self) -> None:
        path = self.dir / "manifest.json"
        manifest = {"key": self.key, "components": self.components, "shard_size": self.shard_size,
                    "num_shards": self.num_shards, "sizes": self.sizes}
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise CacheError(f"{path} is unreadable ({type(e).__name__}); remove {self.dir} to rebuild") from e
            if not isinstance(old, dict) or old.get("components") != self.components or old.get("sizes") != self.sizes:
                raise CacheError(f"{path} belongs to other data or another reference (key collision?)")
            if old.get("shard_size") != self.shard_size:  # the entry's layout wins: its shards stay usable
                self.shard_size = int(old["shard_size"])
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_json(path, manifest)

    def _verify(self, s: int) -> tuple[torch.Tensor, torch.Tensor | None] | str:
        """Load shard ``s`` and check it; the loaded tensors, or why it is not usable."""
        meta_path, data_path = self.dir / f"shard-{s:05d}.json", self.dir / f"shard-{s:05d}.safetensors"
        if not meta_path.exists():
            return "missing"
        try:
            meta = json.loads(meta_path.read_text())
            if not data_path.exists():
                return "data file missing"
            if _sha256(data_path) != meta["sha256"]:
                return "checksum mismatch"
            tensors = load_file(str(data_path))
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:  # torn or foreign: recompute
            return f"unreadable ({type(e).__name__})"
        start, end = self._range(s)
        sizes = torch.tensor(self.sizes[start:end])
        values = tensors.get("logps")
        if values is None or values.ndim != 2 or values.shape[0] != end - start or meta.get("range") != [start, end]:
            return "wrong shape"
        slot = torch.arange(values.shape[1])[None, :] < sizes[:, None]
        if values.shape[1] < int(sizes.max()) or not torch.isfinite(values[slot]).all():
            return "wrong shape or non-finite values"
        if not self.per_token:
            return values, None
        flat, counts = tensors.get("token_logps"), tensors.get("token_counts")
        if flat is None or counts is None or counts.shape != values.shape or int(counts.sum()) != flat.numel():
            return "per-token values missing or inconsistent"
        return values, (flat, counts)

    def ensure(self, model: torch.nn.Module, lists: Sequence[TokenizedList], *, batch_size: int = 16,
               pad_token_id: int = 0, on_corrupt: str = "recompute", progress: bool = True) -> CacheStats:
        """Load every verified shard; compute, write and verify the missing or corrupted ones.

        ``on_corrupt="error"`` raises :class:`CacheError` on a bad shard instead of recomputing it.
        In a distributed run each rank computes shards ``s % world == rank`` and all ranks then read them all.
        """
        sizes = [len(t.response_ids) for t in lists]
        keyed_model, keyed_lists = self._keyed_on or (None, [])
        same_lists = len(keyed_lists) == len(lists) and all(a is b for a, b in zip(keyed_lists, lists))
        if sizes != self.sizes or not same_lists and data_fingerprint(list(lists)) != self.components["data"]:
            raise CacheError("the lists given are not the ones this cache was keyed on")
        t0 = time.perf_counter()
        self._write_manifest()
        rank, world = _dist_rank_world()
        _dist_barrier()  # every rank scans the same state, before any rank writes a shard
        todo = []
        for s in range(self.num_shards):
            status = self._verify(s)
            if isinstance(status, str):
                if status != "missing":
                    if on_corrupt == "error":
                        raise CacheError(f"{self.dir} shard {s}: {status}")
                    log.warning("reference cache shard %d is not usable (%s): recomputing it", s, status)
                    self.stats.corrupted_shards += 1
                todo.append(s)
        _dist_barrier()  # ... and no rank writes before every rank has finished scanning
        mine = [s for s in todo if s % world == rank]
        self.stats.computed_here = sum(self._range(s)[1] - self._range(s)[0] for s in mine)
        if mine:
            same_model = keyed_model is not None and _weights_state(model) == keyed_model
            if not same_model and weights_fingerprint(model) != self.components["weights"]:
                raise CacheError("the model given to ensure() is not the one this cache was keyed on")
            self._compute(model, lists, mine, batch_size, pad_token_id, progress and rank == 0)
        _dist_barrier()
        values, tokens = [], []
        for s in range(self.num_shards):
            loaded = self._verify(s)
            if isinstance(loaded, str):
                raise CacheError(f"{self.dir} shard {s} is not usable right after it was written: {loaded}")
            values.append(loaded[0])
            tokens.append(loaded[1])
        self._values, self._tokens = values, tokens
        computed = sum(self._range(s)[1] - self._range(s)[0] for s in todo)
        self.stats.computed, self.stats.hits = computed, len(self.sizes) - computed
        self.stats.seconds = time.perf_counter() - t0
        return self.stats

    def _compute(self, model, lists, shards, batch_size, pad_token_id, progress) -> None:
        for s in tqdm(shards, desc="reference log-probs", unit="shard", disable=not progress):
            start, end = self._range(s)
            values, tokens = score_lists(model, lists[start:end], batch_size=batch_size, pad_token_id=pad_token_id,
                                         per_token=self.per_token)
            tensors = {"logps": values.contiguous()}
            if tokens is not None:
                counts = torch.zeros(values.shape, dtype=torch.long)
                for r, per_response in enumerate(tokens):
                    counts[r, : len(per_response)] = torch.tensor([t.numel() for t in per_response])
                tensors["token_logps"] = torch.cat([t for per in tokens for t in per]).contiguous()
                tensors["token_counts"] = counts
            self._write_shard(s, tensors)

    def _write_shard(self, s: int, tensors: dict[str, torch.Tensor]) -> None:
        data_path = self.dir / f"shard-{s:05d}.safetensors"
        tmp = data_path.with_name(f".{data_path.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, data_path)
        _atomic_json(self.dir / f"shard-{s:05d}.json", {"sha256": _sha256(data_path), "range": list(self._range(s))})

    def logps(self, i: int) -> list[float]:
        """The K reference log-probs of list ``i`` (after :meth:`ensure`)."""
        if self._values is None:
            raise CacheError("call ensure() before reading the cache")
        s, r = divmod(i, self.shard_size)
        return self._values[s][r, : self.sizes[i]].tolist()

    def token_logps(self, i: int) -> list[torch.Tensor]:
        """Per-token reference log-probs of each response of list ``i`` (``per_token=True`` caches only)."""
        if not self.per_token or self._tokens is None:
            raise CacheError("this cache holds no per-token values (build it with per_token=True)")
        s, r = divmod(i, self.shard_size)
        flat, counts = self._tokens[s]
        offsets = torch.cumsum(counts.reshape(-1), 0) - counts.reshape(-1)
        k_max = counts.shape[1]
        return [flat[int(offsets[r * k_max + k]) : int(offsets[r * k_max + k]) + int(counts[r, k])]
                for k in range(self.sizes[i])]


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _dist_barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _weights_state(model: torch.nn.Module) -> list[tuple[int, int]]:
    """Storage address and in-place version counter of every parameter and buffer. Another model, a replaced
    tensor or an in-place update (an optimizer step bumps every version) changes it; only writes through
    ``.data``, which autograd does not track, would not. Then ensure() hashes the weights in full, as before.
    (TokenizedList is frozen, so the same list objects mean the same data.)"""
    return [(t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers())]
