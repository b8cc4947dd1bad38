"""The content-addressed, verified on-disk store of reference log-probs.

One directory per reference identity (:class:`~align.reference.identity.ReferenceIdentity`), under ``root``:
    manifest.json                the identity, plus what a person needs to tell caches apart (model, created)
    shard-<name>.safetensors     ``keys [n, 16] uint8``, ``logps [n] float32`` (and, per-token caches,
                                 ``token_logps [T] float32`` with ``token_counts [n] int64``)
    shard-<name>.json            the sidecar: digest, entry count, creation time, data source. Written after the
                                 data file, so its presence means the shard is complete; a kill in between only
                                 costs recomputing that shard.
    claim-<name>                 a builder is computing this shard (pid, host); others wait, or take it over if
                                 the builder is gone.
    last_used                    touched whenever the store is opened (``align cache list`` / ``prune``).

An entry is one (prompt, response) token sequence, addressed by :func:`entry_key` of its ids, so any data set,
subset, reordering, split or later round finds every entry it shares with an earlier run.

A shard is bound to its cache and its name: the digest is sha256 over the cache key, the shard name and the
file's bytes, and the name is the hash of the entries it holds. A shard copied in from another cache (with its
sidecar), renamed, truncated or edited fails verification: it is never read as a hit; it is recomputed (counted
as corrupted) or, with ``on_corrupt="error"``, reported. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from align.reference.identity import ReferenceIdentity

log = logging.getLogger("align.reference")

KEY_BYTES = 16


class CacheError(RuntimeError):
    """A cache that cannot be trusted and was not allowed to be recomputed, or a reference that cannot be had."""


def entry_key(prompt_ids: Sequence[int], response_ids: Sequence[int]) -> bytes:
    """16-byte address of one (prompt, response) token sequence; the boundary between the two is part of it."""
    h = hashlib.blake2b(digest_size=KEY_BYTES)
    h.update(len(prompt_ids).to_bytes(8, "little"))
    h.update(array.array("q", prompt_ids).tobytes())
    h.update(array.array("q", response_ids).tobytes())
    return h.digest()


def shard_name(keys: Sequence[bytes]) -> str:
    """A shard's name: the hash of the (sorted) entries it holds, so builders of the same entries agree on it."""
    return hashlib.sha256(b"".join(sorted(keys))).hexdigest()[:24]


@dataclass
class Entry:
    """One reference value: the summed log-prob of a response, and its per-token log-probs when stored."""

    logp: float
    tokens: torch.Tensor | None = None


def _key_tensor(keys: Sequence[bytes]) -> torch.Tensor:
    if not keys:
        return torch.zeros(0, KEY_BYTES, dtype=torch.uint8)
    return torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).reshape(len(keys), KEY_BYTES).clone()


def _key_list(keys: torch.Tensor) -> list[bytes]:
    raw = keys.contiguous().numpy().tobytes()
    return [raw[i : i + KEY_BYTES] for i in range(0, len(raw), KEY_BYTES)]


def _digest(cache_key: str, name: str, path: Path) -> str:
    h = hashlib.sha256(f"{cache_key}/{name}\n".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        self._index: dict[bytes, tuple[int, int]] = {}
        self._shards: list[tuple[str, torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = []
        self._seen: set[str] = set()

    @property
    def dir(self) -> Path:
        return self.root / self.key

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    # --- reading --------------------------------------------------------------------------------------------------
    def open(self) -> ReferenceStore:
        """Check the manifest, then load every verified shard (call again to pick up new shards). The manifest is
        written with the first shard, so a build that fails before any leaves no empty cache behind."""
        if not self.dir.exists():  # nothing cached yet; the directory appears with the first shard written
            return self
        self._check_manifest()
        (self.dir / "last_used").touch()
        for sidecar in sorted(self.dir.glob("shard-*.json")):
            name = sidecar.stem[len("shard-"):]
            if name in self._seen:
                continue
            loaded = self._verify(name)
            if isinstance(loaded, str):
                self._reject(name, loaded)
                continue
            self._add(name, *loaded)
        for claim in self.dir.glob("claim-*"):  # left by a killed builder: its shard is written, or it is gone
            name = claim.name[len("claim-"):]
            if name in self._seen or not self.claim_alive(name):
                claim.unlink(missing_ok=True)
        return self

    def get(self, key: bytes) -> Entry | None:
        """The entry of ``key``, or None if this store does not hold it."""
        where = self._index.get(key)
        if where is None:
            return None
        s, row = where
        _, logps, flat, offsets = self._shards[s]
        if flat is None:
            return Entry(float(logps[row]))
        return Entry(float(logps[row]), flat[int(offsets[row]) : int(offsets[row + 1])])

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

    def _verify(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | str:
        """The shard's keys, values and per-token values, or why it cannot be trusted."""
        sidecar, data = self.dir / f"shard-{name}.json", self.dir / f"shard-{name}.safetensors"
        try:
            meta = json.loads(sidecar.read_text())
            if not data.exists():
                return "data file missing"
            if not isinstance(meta, dict) or _digest(self.key, name, data) != meta.get("digest"):
                return "checksum mismatch (damaged, or copied from another cache)"
            with safe_open(str(data), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
            return f"unreadable ({type(e).__name__})"
        if header.get("cache_key") != self.key or header.get("shard") != name:
            return "belongs to another cache"
        keys, logps = tensors.get("keys"), tensors.get("logps")
        n = meta.get("entries")
        if (keys is None or logps is None or keys.dtype != torch.uint8 or keys.shape != (n, KEY_BYTES)
                or logps.shape != (n,)):
            return "wrong shape"
        if shard_name(_key_list(keys)) != name:
            return "entries do not match the shard's name"
        if not torch.isfinite(logps).all():
            return "non-finite values"
        flat, counts = tensors.get("token_logps"), tensors.get("token_counts")
        if not self.identity.per_token:
            return keys, logps, None
        if flat is None or counts is None or counts.shape != (n,) or int(counts.sum()) != flat.numel():
            return "per-token values missing or inconsistent"
        if not torch.isfinite(flat).all():
            return "non-finite values"
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
        return keys, logps, (flat, offsets)  # type: ignore[return-value]

    def _add(self, name: str, keys: torch.Tensor, logps: torch.Tensor, tokens: Any) -> None:
        flat, offsets = tokens if tokens is not None else (None, None)
        s = len(self._shards)
        self._shards.append((name, logps, flat, offsets))
        self._seen.add(name)
        for row, k in enumerate(_key_list(keys)):
            self._index.setdefault(k, (s, row))

    def _reject(self, name: str, why: str) -> None:
        if self.on_corrupt == "error":
            raise CacheError(f"{self.dir}: shard {name} is not usable: {why}")
        log.warning("reference cache shard %s is not usable (%s): removing it; its entries are recomputed", name, why)
        self.corrupted_shards += 1
        for suffix in (".json", ".safetensors"):
            (self.dir / f"shard-{name}{suffix}").unlink(missing_ok=True)

    # --- writing --------------------------------------------------------------------------------------------------
    def write(self, entries: dict[bytes, Entry], source: str | None = None) -> str:
        """Write ``entries`` as one shard (atomically, data before sidecar) and add them to this store."""
        keys = sorted(entries)
        name = shard_name(keys)
        tensors = {"keys": _key_tensor(keys),
                   "logps": torch.tensor([entries[k].logp for k in keys], dtype=torch.float32)}
        if not torch.isfinite(tensors["logps"]).all():
            raise CacheError("refusing to cache non-finite reference log-probs (is the reference model broken?)")
        if self.identity.per_token:
            toks = [entries[k].tokens for k in keys]
            if any(t is None for t in toks):
                raise CacheError("a per-token cache needs per-token values for every entry")
            tensors["token_logps"] = torch.cat([t.reshape(-1).float() for t in toks]) if toks else torch.zeros(0)
            tensors["token_counts"] = torch.tensor([t.numel() for t in toks], dtype=torch.long)
        self._check_manifest()
        (self.dir / "last_used").touch()
        data = self.dir / f"shard-{name}.safetensors"
        tmp = data.with_name(f".{data.name}.{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"cache_key": self.key,
                                                                                        "shard": name})
        os.replace(tmp, data)
        meta = {"digest": _digest(self.key, name, data), "entries": len(keys), "created": time.time(),
                "source": source}
        _atomic_write(self.dir / f"shard-{name}.json", json.dumps(meta, sort_keys=True))
        if name not in self._seen:
            offsets = None
            if self.identity.per_token:
                offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(tensors["token_counts"], 0)])
            self._add(name, tensors["keys"], tensors["logps"],
                      (tensors["token_logps"], offsets) if offsets is not None else None)
        return name

    # --- claims: concurrent builders split the work instead of duplicating it -------------------------------------
    def claim(self, name: str) -> bool:
        """Claim shard ``name`` for computing; False if a live builder holds it (a dead one's claim is taken)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"claim-{name}"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self.claim_alive(name):
                    return False
                path.unlink(missing_ok=True)  # its builder died: take the claim over
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, f)
            return True
        return False

    def claim_alive(self, name: str) -> bool:
        """True while shard ``name`` is claimed by a process that is still running (on this host)."""
        path = self.dir / f"claim-{name}"
        try:
            holder = json.loads(path.read_text())
        except FileNotFoundError:
            return False
        except (OSError, ValueError):  # being written right now
            return time.time() - path.stat().st_mtime < 60 if path.exists() else False
        if holder.get("host") != socket.gethostname():
            return time.time() - float(holder.get("time", 0)) < 6 * 3600  # another host: trust it for a while
        return _pid_alive(int(holder.get("pid", -1)))

    def release(self, name: str) -> None:
        (self.dir / f"claim-{name}").unlink(missing_ok=True)

    def has_shard(self, name: str) -> bool:
        return name in self._seen or (self.dir / f"shard-{name}.json").exists()


def describe(cache_dir: Path) -> dict[str, Any]:
    """What ``align cache list`` shows of one store directory: manifest facts, size, entries, dates."""
    try:
        manifest = json.loads((cache_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    sidecars = list(cache_dir.glob("shard-*.json"))
    entries, sources = 0, set()
    for s in sidecars:
        try:
            meta = json.loads(s.read_text())
        except (OSError, ValueError):
            continue
        entries += int(meta.get("entries", 0))
        if meta.get("source"):
            sources.add(str(meta["source"]))
    used = cache_dir / "last_used"
    return {"key": cache_dir.name, "model": manifest.get("model"), "tokenizer": manifest.get("tokenizer"),
            "per_token": (manifest.get("identity") or {}).get("per_token"), "created": manifest.get("created"),
            "last_used": used.stat().st_mtime if used.exists() else None, "entries": entries,
            "shards": len(sidecars), "sources": sorted(sources),
            "bytes": sum(p.stat().st_size for p in cache_dir.iterdir() if p.is_file())}

