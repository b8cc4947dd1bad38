"""The content-addressed, signed on-disk store of reference log-probs.

One directory per reference identity (:class:`~align.reference.identity.ReferenceIdentity`), under ``root``:
    manifest.json                the identity, plus what a person needs to tell caches apart (model, created)
    shard-<name>.safetensors     ``keys [n, 16] uint8`` (sorted), ``logps [n] float32`` (and, per-token caches,
                                 ``token_logps [T] float32`` with ``token_counts [n] int64``)
    shard-<name>.json            the sidecar: signed digest, entry count, creation time, data source, verified-at
                                 record. Written after the data file, so its presence means the shard is complete;
                                 a kill in between only costs recomputing that shard.
    index-<id>.bin / .json       the key index (:mod:`align.reference.index`): memory-mapped sorted key columns
    claim-<name>                 a lease (:mod:`align.leases`): a builder is computing this shard
    user-<host>-<pid>-<token>    a lease of a run using this cache (``align cache prune`` skips the cache)
    last_used                    touched whenever the store is opened (``align cache list`` / ``prune``).
    secret.key                   the key that signs this cache's shards (:func:`~align.reference.shards.cache_secret`)

An entry is one (prompt, response) token sequence, addressed by :func:`entry_key` of its ids, so any data set,
subset, reordering, split or later round finds every entry it shares with an earlier run.

A shard is bound to its cache and its name: the digest is HMAC-SHA256 (keyed by the cache's secret) over the cache
key, the shard name and the file's bytes, and the name is the hash of the entries it holds. A shard copied in from
another cache (with its sidecar), renamed, truncated, or edited by anyone who cannot read the secret fails
verification: it is never read as a hit; it is recomputed (counted as corrupted) or, with ``on_corrupt="error"``,
reported. Every file is written to a temporary name and renamed.

Opening a store reads its index, not its shards: a lookup finds keys by binary search and reads only the rows
asked for; each shard is verified once per process, when first read (without rehashing while its signed
verified-at record matches the file).
"""

from __future__ import annotations

import array
import gc
import hashlib
import json
import logging
import os
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from align import leases
from align.reference import index as index_mod
from align.reference.identity import FORMAT_VERSION, ReferenceIdentity
from align.reference.shards import (
    KEY_BYTES,
    SECRET_FILE,
    ShardFile,
    cache_secret,
    check_shard,
    record_holds,
    shard_name,
    sign_file,
    verified_record,
    write_safetensors,
)

log = logging.getLogger("align.reference")

__all__ = ["KEY_BYTES", "CacheError", "Entry", "ReferenceStore", "entry_key", "shard_name"]


class CacheError(RuntimeError):
    """A cache that cannot be trusted and was not allowed to be recomputed, or a reference that cannot be had."""


def entry_key(prompt_ids: Sequence[int], response_ids: Sequence[int]) -> bytes:
    """16-byte address of one (prompt, response) token sequence; the boundary between the two is part of it."""
    h = hashlib.blake2b(digest_size=KEY_BYTES)
    h.update(len(prompt_ids).to_bytes(8, "little"))
    h.update(array.array("q", prompt_ids).tobytes())
    h.update(array.array("q", response_ids).tobytes())
    return h.digest()


@dataclass
class Entry:
    """One reference value: the summed log-prob of a response, and its per-token log-probs when stored."""

    logp: float
    tokens: torch.Tensor | None = None


def _key_list(keys: torch.Tensor | np.ndarray) -> list[bytes]:
    """``[n, 16]`` uint8 keys as a list of 16-byte strings."""
    raw = (keys.contiguous().numpy() if isinstance(keys, torch.Tensor) else np.ascontiguousarray(keys)).tobytes()
    return [raw[i : i + KEY_BYTES] for i in range(0, len(raw), KEY_BYTES)]


def _digest(cache_key: str, name: str, path: Path, secret: bytes | None = None) -> str:
    """The signed digest of a shard file; ``secret`` defaults to that of the cache holding ``path``."""
    if secret is None:
        secret = cache_secret(Path(path).parent)
    return sign_file(secret, cache_key, name, Path(path))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_shard(directory: Path, cache_key: str, secret: bytes, keys: np.ndarray, logps: np.ndarray,
                token_logps: np.ndarray | None = None, token_counts: np.ndarray | None = None,
                source: str | None = None) -> str:
    """Write one signed shard (data file, then sidecar) of ``keys`` (``[n, 16]`` uint8, sorted) and their values;
    returns its name. The store's writer; also what writes synthetic caches for benchmarks."""
    name = shard_name(keys)
    arrays = {"keys": np.ascontiguousarray(keys, np.uint8), "logps": np.ascontiguousarray(logps, np.float32)}
    if token_logps is not None:
        arrays["token_counts"] = np.ascontiguousarray(token_counts, np.int64)
        arrays["token_logps"] = np.ascontiguousarray(token_logps, np.float32)
    data = directory / f"shard-{name}.safetensors"
    tmp = data.with_name(f".{data.name}.{os.getpid()}.tmp")
    write_safetensors(tmp, arrays, {"cache_key": cache_key, "shard": name})
    os.replace(tmp, data)
    digest = sign_file(secret, cache_key, name, data)
    meta = {"digest": digest, "entries": len(keys), "created": time.time(), "source": source,
            "verified": verified_record(secret, cache_key, name, digest, data.stat())}
    _atomic_write(directory / f"shard-{name}.json", json.dumps(meta, sort_keys=True))
    return name


class ReferenceStore:
    """The shards of one reference identity under ``root``.

    Args:
        root: the cache root (``$ALIGN_HOME/reference`` by default); the store lives in ``root/<identity.key>``.
        identity: whose values these are.
        on_corrupt: ``recompute`` (a shard that fails verification is removed and its entries count as missing)
            or ``error`` (raise :class:`CacheError` naming it).
        info: human-readable facts for the manifest (model name, tokenizer, ...), written when it is created.
    """

    def __init__(self, root: str | os.PathLike, identity: ReferenceIdentity, *, on_corrupt: str = "recompute",
                 info: dict[str, Any] | None = None):
        if on_corrupt not in ("recompute", "error"):
            raise ValueError(f"on_corrupt must be 'recompute' or 'error', got {on_corrupt!r}")
        self.root, self.identity, self.on_corrupt = Path(root), identity, on_corrupt
        self.key = identity.key
        self.info = dict(info or {})
        self.corrupted_shards = 0
        self.index = index_mod.KeyIndex(self.dir)
        self._shards: set[str] = set()  # complete shards seen on disk (sidecar present)
        self._files: dict[str, ShardFile] = {}  # verified in this process
        self._claims: dict[str, leases.Lease] = {}
        self._lease: leases.Lease | None = None
        self._secret: bytes | None = None
        self._old_noted = False

    @property
    def dir(self) -> Path:
        return self.root / self.key

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            try:
                self._secret = cache_secret(self.dir)
            except PermissionError as e:
                raise CacheError(f"cannot read {self.dir}/{SECRET_FILE}, the key that signs this cache's shards: "
                                 "only those who may write the cache can use it") from e
        return self._secret

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: bytes) -> bool:
        return self.get(key) is not None

    # --- reading --------------------------------------------------------------------------------------------------
    def open(self) -> ReferenceStore:
        """Check the manifest and read the index (call again to pick up new shards). New shards no index segment
        covers yet are verified and indexed. The manifest is written with the first shard, so a build that fails
        before any leaves no empty cache behind."""
        if not self.dir.exists():  # nothing cached yet; the directory appears with the first shard written
            self._note_old_format()
            return self
        self._check_manifest()
        self._hold()
        (self.dir / "last_used").touch()
        listing = [p.name for p in self.dir.iterdir()]
        self._shards = {n[len("shard-"):-len(".json")] for n in listing if n.startswith("shard-")
                        and n.endswith(".json")}
        self.index.refresh(listing)
        covered = self.index.covered()
        for name in sorted(self._shards - covered - set(self.index.tail)):
            shard = self._file(name)
            if shard is not None:
                self.index.add(name, shard.keys())
        for name in [n for n in self.index.tail if n not in self._shards]:
            self.index.drop(name)
        if self.index.tail_entries() >= index_mod.FLUSH_ENTRIES:
            try:
                self.index.compact(self._shards)
            except OSError as e:  # a read-only cache: keep the tail in memory
                log.debug("reference cache index not written (%s)", e)
        for claim in self.dir.glob("claim-*"):  # left by a killed builder: its shard is written, or it is gone
            name = claim.name[len("claim-"):]
            if name not in self._claims and (name in self._shards or not self.claim_alive(name)):
                claim.unlink(missing_ok=True)
        return self

    def find(self, keys: Sequence[bytes], shards: dict[bytes, str] | None = None, *, _healed: bool = False
             ) -> dict[bytes, Entry]:
        """The entries of ``keys`` this store holds (absent keys are left out); ``shards``, if given, receives the
        shard each came from."""
        if not keys:
            return {}
        misrouted: set[str] = set()
        raw = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), KEY_BYTES)
        names, sid, where = self.index.locate(raw)
        hit = np.flatnonzero(sid >= 0)
        hit = hit[np.argsort(sid[hit], kind="stable")]
        starts = np.flatnonzero(np.diff(sid[hit], prepend=-1)) if len(hit) else np.zeros(0, np.int64)
        out: dict[bytes, Entry] = {}
        collecting = gc.isenabled()
        gc.disable()  # no collection passes over everything the process holds while the entries are made
        try:
            self._read_hits(keys, raw, names, sid, where, hit, starts, out, shards, misrouted)
        finally:
            if collecting:
                gc.enable()
        if misrouted and not _healed:  # the index is damaged: drop the segments that lied, re-index, look again
            log.warning("reference cache %s: its index points at wrong rows of shard(s) %s; re-indexing them",
                        self.dir, ", ".join(sorted(misrouted)))
            self.index.forget_segments(misrouted)
            self.open()
            out.update(self.find([k for k in keys if k not in out], shards, _healed=True))
        return out

    def _read_hits(self, keys: Sequence[bytes], raw: np.ndarray, names: list[str], sid: np.ndarray,
                   where: np.ndarray, hit: np.ndarray, starts: np.ndarray, out: dict[bytes, Entry],
                   shards: dict[bytes, str] | None, misrouted: set[str]) -> None:
        """Read the located keys shard by shard, checking each against the key its shard holds at that row."""
        for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(hit)]):
            name = names[int(sid[hit[a]])]
            shard = self._file(name) if name in self._files or name in self._shards else None
            if shard is None:
                continue
            q, rows = hit[a:b], where[hit[a:b]]
            ok = rows < shard.entries
            q, rows = q[ok], rows[ok]
            try:
                stored, logps = shard.keys_and_logps()
                same = (stored[rows] == raw[q]).all(axis=1)
                if not same.all():
                    misrouted.add(name)
                q, rows = q[same], rows[same]
                values = logps[rows].tolist()
                tokens = shard.tokens(rows) if self.identity.per_token else None
            except (OSError, ValueError) as e:  # changed under us since it was verified
                self._forget(name, f"unreadable ({type(e).__name__})")
                continue
            found = [keys[i] for i in q.tolist()]
            if tokens is None:
                out.update(zip(found, map(Entry, values)))
            else:
                out.update(zip(found, map(Entry, values, map(torch.from_numpy, tokens))))
            if shards is not None:
                shards.update(dict.fromkeys(found, name))

    def get(self, key: bytes) -> Entry | None:
        """The entry of ``key``, or None if this store does not hold it."""
        return self.find([key]).get(key)

    def _file(self, name: str) -> ShardFile | None:
        """Shard ``name``, verified once in this process; None (after rejecting it) if it cannot be trusted."""
        shard = self._files.get(name)
        if shard is not None:
            return shard
        result = self._verify(name)
        if result is None:  # removed meanwhile, or never completed: missing
            self._shards.discard(name)
            self.index.drop(name)
            return None
        if isinstance(result, str):
            self._forget(name, result)
            return None
        self._files[name] = result
        return result

    def _verify(self, name: str, *, rehash: bool = False) -> ShardFile | str | None:
        """The shard's reader, or why it cannot be trusted (None: it has no sidecar, so it is not there).
        Rehashed unless its verified-at record holds."""
        sidecar, data = self.dir / f"shard-{name}.json", self.dir / f"shard-{name}.safetensors"
        try:
            try:
                meta = json.loads(sidecar.read_text())
            except FileNotFoundError:
                return None
            if not isinstance(meta, dict):
                return "unreadable sidecar (not an object)"
            try:
                st = data.stat()
            except FileNotFoundError:
                return "data file missing"
            fresh = not rehash and record_holds(self.secret, self.key, name, meta, st)
            if not fresh:
                digest = sign_file(self.secret, self.key, name, data)
                if digest != meta.get("digest"):
                    return "checksum mismatch (damaged, edited, or copied from another cache)"
        except (OSError, ValueError) as e:
            return f"unreadable ({type(e).__name__})"
        shard = check_shard(data, self.key, name, meta.get("entries"), self.identity.per_token, full=not fresh)
        if not fresh and not isinstance(shard, str):
            try:  # remember the verification: the next open does not rehash an untouched file
                meta["verified"] = verified_record(self.secret, self.key, name, digest, st)
                _atomic_write(sidecar, json.dumps(meta, sort_keys=True))
            except OSError:
                pass
        return shard

    def _forget(self, name: str, why: str) -> None:
        self._files.pop(name, None)
        self.index.drop(name)
        self._shards.discard(name)
        self._reject(name, why)

    def _check_manifest(self) -> None:
        path = self.dir / "manifest.json"
        if path.exists():
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise CacheError(f"{path} is unreadable ({type(e).__name__}); remove {self.dir} to rebuild") from e
            if not isinstance(manifest, dict) or manifest.get("identity") != self.identity.to_dict():
                raise CacheError(f"{path} belongs to another reference (key collision?); remove {self.dir}")
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = {"key": self.key, "identity": self.identity.to_dict(), "created": time.time(), **self.info}
        _atomic_write(path, json.dumps(manifest, indent=1, sort_keys=True))

    def _note_old_format(self) -> None:
        """Say once when this reference has a cache written in an older format (it is rebuilt, not read)."""
        if self._old_noted or not self.root.is_dir():
            return
        self._old_noted = True
        mine = {k: v for k, v in self.identity.to_dict().items() if k != "format"}
        for d in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != self.key):
            try:
                ident = json.loads((d / "manifest.json").read_text()).get("identity")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(ident, dict) and ident.get("format") != FORMAT_VERSION and \
                    {k: v for k, v in ident.items() if k != "format"} == mine:
                log.warning("reference cache %s was written in format %s (unsigned shards, no index); this version "
                            "(format %d) does not read it and rebuilds this reference's values as cache %s; remove "
                            "the old one with `align cache prune`", d.name, ident.get("format"), FORMAT_VERSION,
                            self.key)
                return

    def _hold(self) -> None:
        """Hold a use lease on this cache (renewed while the process runs; ``align cache prune`` skips it)."""
        if self._lease is None or not self._lease.path.exists():
            self._lease = leases.share(self.dir)
            weakref.finalize(self, self._lease.release)

    def close(self) -> None:
        """Give up this store's use lease and claims."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        for name in list(self._claims):
            self.release(name)

    def _reject(self, name: str, why: str) -> None:
        if self.on_corrupt == "error":
            raise CacheError(f"{self.dir}: shard {name} is not usable: {why}")
        log.warning("reference cache shard %s is not usable (%s): removing it; its entries are recomputed", name, why)
        self.corrupted_shards += 1
        for suffix in (".json", ".safetensors"):
            (self.dir / f"shard-{name}{suffix}").unlink(missing_ok=True)

    # --- writing --------------------------------------------------------------------------------------------------
    def write(self, entries: dict[bytes, Entry], source: str | None = None) -> str:
        """Write ``entries`` as one signed shard (atomically, data before sidecar) and add them to this store."""
        keys = sorted(entries)
        logps = np.array([entries[k].logp for k in keys], dtype=np.float32)
        if not np.isfinite(logps).all():
            raise CacheError("refusing to cache non-finite reference log-probs (is the reference model broken?)")
        flat = counts = None
        if self.identity.per_token:
            toks = [entries[k].tokens for k in keys]
            if any(t is None for t in toks):
                raise CacheError("a per-token cache needs per-token values for every entry")
            flat = (torch.cat([t.reshape(-1).float().cpu() for t in toks]).numpy() if toks  # type: ignore[union-attr]
                    else np.zeros(0, np.float32))
            counts = np.array([t.numel() for t in toks], dtype=np.int64)  # type: ignore[union-attr]
        self._check_manifest()
        self._hold()
        (self.dir / "last_used").touch()
        raw = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), KEY_BYTES)
        name = write_shard(self.dir, self.key, self.secret, raw, logps, flat, counts, source)
        self._shards.add(name)
        self._files.pop(name, None)
        self.index.add(name, raw)  # searched before the segments, which may hold it already
        return name

    # --- claims: concurrent builders split the work instead of duplicating it -------------------------------------
    def claim(self, name: str) -> bool:
        """Claim shard ``name`` for computing; False if a live builder holds it (a dead one's claim is taken).

        The claim is a lease renewed while this process runs: one not renewed for the lease time (a minute), on
        any host, is dead."""
        self.dir.mkdir(parents=True, exist_ok=True)
        lease = leases.acquire(self.dir / f"claim-{name}")
        if lease is None:
            return False
        self._claims[name] = lease
        return True

    def claim_alive(self, name: str) -> bool:
        """True while shard ``name`` is claimed by a live builder (see :mod:`align.leases`)."""
        return leases.alive(self.dir / f"claim-{name}")

    def release(self, name: str) -> None:
        lease = self._claims.pop(name, None)
        if lease is not None:
            lease.release()
        else:
            (self.dir / f"claim-{name}").unlink(missing_ok=True)

    def has_shard(self, name: str) -> bool:
        return name in self._shards or (self.dir / f"shard-{name}.json").exists()
