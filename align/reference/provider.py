"""Reference log-probs behind one interface, with two implementations.

- :class:`LiveReference` scores token ids on demand with a reference model (or a PEFT policy in reference mode:
  adapters disabled, or a frozen copy of the adapter the run started from). Samples made during training (GRPO,
  iterative rounds) get their reference values this way; it can write through to a store.
- :class:`CachedReference` reads a content-addressed :class:`~align.reference.store.ReferenceStore` and computes
  what is missing once, with a live reference, before training (:meth:`CachedReference.prefetch`). In a
  distributed run the missing entries are split across ranks, gathered on every rank and written once by rank 0.

Both return, for each tokenized list, one :class:`~align.reference.store.Entry` per response.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from align.data.tokenize import TokenizedList
from align.distributed import full_weights, gather_objects, max_over_ranks, rank_world
from align.forward import score_lists
from align.reference.audit import new_seed, pick, run_audit
from align.reference.identity import ReferenceIdentity
from align.reference.store import CacheError, Entry, ReferenceStore, entry_key, shard_name

log = logging.getLogger("align.reference")


@dataclass
class CacheStats:
    """What a reference pass did, counted in entries (distinct prompt + response sequences).

    ``computed`` is what the whole process group computed; ``computed_here`` this rank's part of it.
    """

    key: str = ""
    hits: int = 0
    computed: int = 0
    seconds: float = 0.0
    corrupted_shards: int = 0
    computed_here: int = 0
    audit: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``reference_cache`` object of ``summary.json`` and of ``align eval --output``; ``audit`` is the
        record of :mod:`align.reference.audit` (None when no cached value was audited)."""
        return {"key": self.key, "hits": self.hits, "computed": self.computed, "seconds": round(self.seconds, 3),
                "corrupted_shards": self.corrupted_shards, "audit": self.audit}


class ReferenceProvider(abc.ABC):
    """Reference log-probs of tokenized lists.

    What a trainer may call, and all it calls (:meth:`align.trainers.base.PreferenceTrainer.prepare_reference`):
    :meth:`bind_engine` once its model is inside an engine, :meth:`prefetch` on its data before the first step,
    :meth:`lookup` (or :meth:`list_logps` / :meth:`token_logps`) per batch, and :meth:`release` of the policy once
    training starts to change it; :attr:`stats` says what the last prefetch did.
    """

    stats: CacheStats

    @property
    @abc.abstractmethod
    def identity(self) -> ReferenceIdentity:
        """Who the reference is (the cache key's source)."""

    @abc.abstractmethod
    def lookup(self, lists: Sequence[TokenizedList]) -> list[list[Entry]]:
        """One entry per response of each list, in order."""

    def list_logps(self, lists: Sequence[TokenizedList]) -> list[list[float]]:
        """Summed reference log-probs ``[n][K_i]`` of every response."""
        return [[e.logp for e in row] for row in self.lookup(lists)]

    def token_logps(self, lists: Sequence[TokenizedList]) -> list[list[torch.Tensor]]:
        """Per-token reference log-probs of every response (a per-token reference only)."""
        if not self.identity.per_token:
            raise CacheError("this reference holds no per-token values (per_token=False)")
        return [[e.tokens for e in row] for row in self.lookup(lists)]  # type: ignore[misc]

    def prefetch(self, lists: Sequence[TokenizedList]) -> CacheStats:
        """Make every entry of ``lists`` available before training and return :attr:`stats`. Here nothing: a
        provider that scores on demand has nothing to do ahead. In a distributed run every rank calls it."""
        return self.stats

    def bind_engine(self, engine_managed: bool) -> None:
        """Say whether the model that computes missing values now runs inside a DeepSpeed engine (ZeRO-3 then
        gathers its parameters per layer itself). Here nothing: no model of its own."""
        return None

    def release(self, model: torch.nn.Module) -> None:
        """Stop computing with ``model``: the trainer is about to change its weights (the policy was its own
        reference until the first step). Values already made stay available. Here nothing: no model of its own."""
        return None


class LiveReference(ReferenceProvider):
    """A model scoring token ids on demand.

    Args:
        model: the reference model; or a PEFT policy, scored in reference mode (see ``adapter``).
        tokenizer: its tokenizer (the pad id pads batches; it is part of the identity).
        adapter: for a PEFT model, the name of the frozen adapter that is the reference (a run that started from
            an existing adapter), or None to disable every adapter (the base model is the reference).
        batch_size: lists per forward.
        per_token: also return per-token log-probs.
        engine_managed: the model runs inside a DeepSpeed engine (ZeRO-3 gathers parameters per layer itself);
            else a ZeRO-3 partitioned model has its full weights gathered while it scores.
        store: write every scored entry through to this store (buffered; call :meth:`flush`).
        packing: score in the shared-prompt packed layout where the model takes it (:func:`align.forward.score_lists`).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, adapter: str | None = None, batch_size: int = 16,
                 per_token: bool = False, engine_managed: bool = False, store: ReferenceStore | None = None,
                 packing: bool = True):
        self.model, self.tokenizer, self.adapter, self.packing = model, tokenizer, adapter, packing
        self.batch_size, self.per_token, self.engine_managed, self.store = batch_size, per_token, engine_managed, store
        self.pad_token_id = getattr(tokenizer, "pad_token_id", None) or 0
        self.stats = CacheStats()
        self._identity: ReferenceIdentity | None = None
        self._depth = 0
        self._pending: dict[bytes, Entry] = {}

    @property
    def identity(self) -> ReferenceIdentity:
        if self._identity is None:
            self._identity = ReferenceIdentity.of(self.model, self.tokenizer, per_token=self.per_token,
                                                  adapter=self.adapter)
            self.stats.key = self._identity.key
        return self._identity

    def bind_engine(self, engine_managed: bool) -> None:
        self.engine_managed = engine_managed

    @contextlib.contextmanager
    def _peft_mode(self) -> Iterator[None]:
        if not hasattr(self.model, "peft_config"):
            yield
        elif self.adapter is None:
            with self.model.disable_adapter():
                yield
        else:  # set_adapter flips requires_grad flags; restore them exactly
            flags = {n: p.requires_grad for n, p in self.model.named_parameters()}
            active = self.model.active_adapter
            self.model.set_adapter(self.adapter)
            try:
                yield
            finally:
                self.model.set_adapter(active)
                for n, p in self.model.named_parameters():
                    p.requires_grad_(flags[n])

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Reference mode for a series of forwards: eval, no gradients, PEFT adapters switched, ZeRO-3 weights
        gathered when no engine does it. Re-entrant. Under ZeRO-3 every rank must enter it together."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.identity  # noqa: B018 (identify before the weights are gathered, on the same weights)
        self._depth = 1
        try:
            with torch.no_grad(), full_weights(self.model, self.engine_managed), self._peft_mode():
                yield
        finally:
            self._depth = 0

    def score(self, lists: Sequence[TokenizedList]) -> list[list[Entry]]:
        """Entries of every response; exactly ``ceil(len(lists) / batch_size)`` forwards."""
        if not lists:
            return []
        with self.session():
            values, tokens = score_lists(self.model, lists, batch_size=self.batch_size,
                                         pad_token_id=self.pad_token_id, per_token=self.per_token,
                                         packing=self.packing)
        out = []
        for i, t in enumerate(lists):
            k = len(t.response_ids)
            out.append([Entry(float(values[i, j]), tokens[i][j] if tokens is not None else None) for j in range(k)])
        return out

    def dummy_forward(self) -> None:
        """One forward of a single token, for ranks that must keep in step with others (see ``score_sharded``)."""
        with self.session():
            device = next(self.model.parameters()).device
            self.model(input_ids=torch.full((1, 2), self.pad_token_id, device=device), use_cache=False)

    def record(self, n: int, seconds: float) -> None:
        """Count ``n`` values computed in ``seconds`` (also for callers that run :attr:`model` in :meth:`session`
        themselves, such as GRPO's per-token forward over its collated samples)."""
        self.stats.computed += n
        self.stats.computed_here += n
        self.stats.seconds += seconds

    def lookup(self, lists: Sequence[TokenizedList]) -> list[list[Entry]]:
        t0 = time.perf_counter()
        entries = self.score(lists)
        self.record(sum(len(row) for row in entries), time.perf_counter() - t0)
        if self.store is not None:
            for t, row in zip(lists, entries):
                for r, e in zip(t.response_ids, row):
                    self._pending[entry_key(t.prompt_ids, r)] = e
            if len(self._pending) >= 512:
                self.flush()
        return entries

    def flush(self, source: str | None = None) -> None:
        """Write the entries scored since the last flush to the store (one shard)."""
        if self.store is not None and self._pending:
            self.store.write(self._pending, source)
            self._pending = {}


@dataclass
class _Chunk:
    """Missing entries computed and written together as one shard: a partial list per source list."""

    lists: list[TokenizedList] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)

    @property
    def name(self) -> str:
        return shard_name(self.keys)


class CachedReference(ReferenceProvider):
    """Reference values from a store; what is missing is computed once with ``live`` (if given) and written.

    Args:
        store: the content-addressed store of this reference (its identity must be ``live``'s).
        live: computes missing entries; None means a miss is an error.
        shard_size: entries per shard written.
        source: a short name of the data, recorded in each written shard (``align cache list``).
        progress: show a progress bar while computing.
        audit_samples: cache hits scored again by ``live`` at each :meth:`prefetch` and compared
            (:mod:`align.reference.audit`); 0 (here the default) turns the audit off. The reference of a run
            (:func:`~align.reference.build.reference_for`, ``reference.audit_samples``) audits 64 by default.
    """

    def __init__(self, store: ReferenceStore, live: LiveReference | None = None, *, shard_size: int = 512,
                 source: str | None = None, progress: bool = True, audit_samples: int = 0):
        if live is not None and live.identity != store.identity:
            raise CacheError("the live reference is not the reference this store belongs to")
        if not isinstance(audit_samples, int) or audit_samples < 0:
            raise ValueError(f"reference.audit_samples must be a count >= 0, got {audit_samples!r}")
        self.store, self.live, self.shard_size, self.source, self.progress = store, live, shard_size, source, progress
        self.audit_samples = audit_samples
        self.audit_report: dict[str, Any] | None = None  # the last audit (kept when a later pass audits nothing)
        self.stats = CacheStats(key=store.key)
        self._memory: dict[bytes, Entry] = {}

    @classmethod
    def for_model(cls, root: str | Path, live: LiveReference, *, on_corrupt: str = "recompute",
                  shard_size: int = 512, source: str | None = None, info: dict[str, Any] | None = None,
                  progress: bool = True, audit_samples: int = 0) -> CachedReference:
        """The cache of ``live``'s reference under ``root`` (identifies the reference: every rank must call it)."""
        store = ReferenceStore(root, live.identity, on_corrupt=on_corrupt, info=info)
        return cls(store, live, shard_size=shard_size, source=source, progress=progress, audit_samples=audit_samples)

    @property
    def identity(self) -> ReferenceIdentity:
        return self.store.identity

    def lookup(self, lists: Sequence[TokenizedList]) -> list[list[Entry]]:
        keys = [[entry_key(t.prompt_ids, r) for r in t.response_ids] for t in lists]
        absent = list(dict.fromkeys(k for row in keys for k in row if k not in self._memory))
        if absent:
            found = self.store.find(absent)
            if len(found) < len(absent):
                self.prefetch(lists)
            else:
                self._memory.update(found)
        return [[self._memory[k] for k in row] for row in keys]

    def bind_engine(self, engine_managed: bool) -> None:
        if self.live is not None:
            self.live.bind_engine(engine_managed)

    def release(self, model: torch.nn.Module) -> None:
        """Drop the live reference if it is ``model`` itself (a PEFT model's reference mode, adapters disabled or
        the frozen reference adapter, stays valid while its trainable adapter changes)."""
        if self.live is not None and self.live.model is model and not hasattr(model, "peft_config"):
            self.live = None

    def prefetch(self, lists: Sequence[TokenizedList]) -> CacheStats:
        """Make every entry of ``lists`` available: read the store, compute and write what is missing.

        In a distributed run every rank must call it with the same lists: rank 0's view of the store is shared,
        the missing entries are split across ranks and gathered on all of them, and rank 0 writes the shards.
        """
        t0 = time.perf_counter()
        rank, world = rank_world()
        keys = [[entry_key(t.prompt_ids, r) for r in t.response_ids] for t in lists]
        wanted = list(dict.fromkeys(k for row in keys for k in row))
        known: dict[bytes, Entry] | None = None
        audit: tuple[list[bytes], dict[bytes, str], int] | None = None
        if rank == 0:
            self.store.open()
            known = {k: self._memory[k] for k in wanted if k in self._memory}
            shard_of: dict[bytes, str] = {}
            known.update(self.store.find([k for k in wanted if k not in known], shard_of))
            if self.audit_samples and self.live is not None and shard_of:
                seed = new_seed()
                sample = pick(shard_of, self.audit_samples, seed)
                audit = (sample, {k: shard_of[k] for k in sample}, seed)
        known, corrupted, audit = gather_objects((known, self.store.corrupted_shards, audit))[0]
        if audit is not None:  # every rank scores the same sample (collective forwards under ZeRO-3)
            sample, shard_of, seed = audit
            sequences = {}
            for t, row in zip(lists, keys):
                for r, k in zip(t.response_ids, row):
                    if k in shard_of:
                        sequences.setdefault(k, (t.prompt_ids, r))
            self.audit_report = run_audit(self.live, sample, known, shard_of, sequences, samples=self.audit_samples,
                                          seed=seed)
        elif self.audit_report is None and self.live is not None:  # nothing cached to audit, or the audit is off
            self.audit_report = {"samples": self.audit_samples, "checked": 0}
        chunks = self._chunks(lists, keys, set(wanted) - set(known))
        computed_here = 0
        if chunks:
            if self.live is None:
                raise CacheError(f"{sum(len(c.keys) for c in chunks)} reference values are missing from "
                                 f"{self.store.dir} and no reference model was given to compute them")
            computed, computed_here = (self._compute_alone(chunks) if world == 1 else self._compute_split(chunks))
            known.update(computed)
        self._memory.update(known)
        n_missing = sum(len(c.keys) for c in chunks)
        self.stats = CacheStats(key=self.store.key, hits=len(wanted) - n_missing, computed=n_missing,
                                seconds=time.perf_counter() - t0, corrupted_shards=corrupted,
                                computed_here=computed_here, audit=self.audit_report)
        return self.stats

    def _chunks(self, lists: Sequence[TokenizedList], keys: list[list[bytes]], missing: set[bytes]) -> list[_Chunk]:
        """Group the missing entries, in data order, into shard-sized chunks of partial lists."""
        chunks, current, assigned = [], _Chunk(), set()
        for t, row in zip(lists, keys):
            slots = [j for j, k in enumerate(row) if k in missing and k not in assigned]
            if not slots:
                continue
            assigned.update(row[j] for j in slots)
            current.lists.append(TokenizedList(t.prompt_ids, tuple(t.response_ids[j] for j in slots),
                                               tuple(t.labels[j] for j in slots), t.row, t.subset))
            current.keys += [row[j] for j in slots]
            if len(current.keys) >= self.shard_size:
                chunks.append(current)
                current = _Chunk()
        return chunks + ([current] if current.keys else [])

    def _entries(self, chunk: _Chunk) -> dict[bytes, Entry]:
        values = self.live.score(chunk.lists)  # type: ignore[union-attr]
        return dict(zip(chunk.keys, (e for row in values for e in row)))

    def _bar(self, chunks: list[_Chunk]) -> tqdm:
        return tqdm(total=sum(len(c.keys) for c in chunks), desc="reference log-probs", unit="seq",
                    disable=not self.progress or rank_world()[0] != 0)

    def _compute_alone(self, chunks: list[_Chunk]) -> tuple[dict[bytes, Entry], int]:
        """One process: claim each chunk, compute and write it; chunks a concurrent builder holds are waited for
        (or taken over if that builder died)."""
        out: dict[bytes, Entry] = {}
        here = 0
        waiting: list[_Chunk] = []
        rechecked: set[str] = set()
        with self._bar(chunks) as bar, self.live.session():  # type: ignore[union-attr]
            queue = list(chunks)
            while queue or waiting:
                if not queue:
                    time.sleep(0.5)
                    self.store.open()
                chunk = queue.pop(0) if queue else waiting.pop(0)
                done = self.store.find(chunk.keys)
                if len(done) == len(chunk.keys):  # written by another builder meanwhile
                    out.update(done)
                    bar.update(len(chunk.keys))
                    continue
                if not self.store.claim(chunk.name):
                    waiting.append(chunk)
                    continue
                if self.store.has_shard(chunk.name) and chunk.name not in rechecked:
                    # finished by another builder between our look and our claim (looked up once more; a shard
                    # whose entries the index still does not find is computed and written again)
                    rechecked.add(chunk.name)
                    self.store.release(chunk.name)
                    self.store.open()
                    queue.insert(0, chunk)
                    continue
                try:
                    entries = self._entries(chunk)
                    self.store.write(entries, self.source)
                finally:
                    self.store.release(chunk.name)
                out.update(entries)
                here += len(entries)
                bar.update(len(chunk.keys))
        return out, here

    def _compute_split(self, chunks: list[_Chunk]) -> tuple[dict[bytes, Entry], int]:
        """Several ranks: in rounds, rank r computes chunk ``round * world + r``; every rank runs the same number of
        forwards (ZeRO-3), the round's results are gathered on all ranks and rank 0 writes them, so a killed run
        keeps every finished round."""
        rank, world = rank_world()
        live = self.live
        assert live is not None
        out: dict[bytes, Entry] = {}
        here = 0
        with self._bar(chunks) as bar, live.session():
            for start in range(0, len(chunks), world):
                mine = chunks[start + rank] if start + rank < len(chunks) else None
                n_fwd = math.ceil(len(mine.lists) / live.batch_size) if mine else 0
                extra = max_over_ranks(n_fwd) - n_fwd  # agreed before any forward: forwards are collective (ZeRO-3)
                entries = self._entries(mine) if mine else {}
                for _ in range(extra):
                    live.dummy_forward()
                here += len(entries)
                for part in gather_objects(entries):
                    if rank == 0 and part:
                        self.store.write(part, self.source)
                    out.update(part)
                bar.update(sum(len(c.keys) for c in chunks[start : start + world]))
        return out, here
