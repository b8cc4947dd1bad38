"""One shard of the reference cache on disk: its file, its signature, its verification and its lazy reader.

A shard is a safetensors file (``keys [n, 16] uint8`` sorted, ``logps [n] float32``; per-token caches add
``token_logps [T] float32`` and ``token_counts [n] int64``) whose header metadata names its cache key and its
shard name, and a JSON sidecar with ``digest``, ``entries``, ``created``, ``source`` and ``verified``.

The digest is HMAC-SHA256, keyed by the cache's secret (:func:`cache_secret`), over the cache key, the shard
name and the file's bytes: a shard edited by anyone who cannot read the secret fails verification, whatever
digest they write. ``verified`` is a signed record of the data file's size, mtime, ctime and inode when it was
last verified; while the file's ``stat`` still matches it, the shard is not rehashed (editing a file in place or
replacing it changes its ctime, which no user can set back).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KEY_BYTES = 16
SECRET_FILE = "secret.key"  # in each cache's directory: the key that signs its shards
_DTYPES = {"U8": np.uint8, "F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "F16": np.float16,
           "BF16": None}


def shard_name(keys) -> str:
    """A shard's name: the hash of the (sorted) entries it holds, so builders of the same entries agree on it."""
    if isinstance(keys, np.ndarray):
        k = np.ascontiguousarray(keys, dtype=np.uint8).reshape(-1, KEY_BYTES)
        hi, lo = key_words(k)
        return hashlib.sha256(k[np.lexsort((lo, hi))].tobytes()).hexdigest()[:24]
    return hashlib.sha256(b"".join(sorted(keys))).hexdigest()[:24]


def key_words(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[n, 16]`` uint8 keys as two native uint64 words whose (hi, lo) order is the keys' byte order."""
    k = np.ascontiguousarray(keys, dtype=np.uint8).reshape(-1, KEY_BYTES)
    hi = np.ascontiguousarray(k[:, :8]).view(">u8").reshape(-1).astype(np.uint64)
    lo = np.ascontiguousarray(k[:, 8:]).view(">u8").reshape(-1).astype(np.uint64)
    return hi, lo


def cache_secret(root: str | os.PathLike, *, create: bool = True) -> bytes:
    """The signing key of the cache in directory ``root``: 32 random bytes in ``root/secret.key``, created once.

    The file is readable by its owner only, or also by the group when the directory is group-writable (a team's
    shared cache): exactly those who may write the cache can sign (and verify) shards. It travels with a copy of
    the whole directory; a shard copied alone into another cache meets another key.
    """
    root = Path(root)
    path = root / SECRET_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        if not create:
            raise
        root.mkdir(parents=True, exist_ok=True)
        mode = 0o640 if root.stat().st_mode & 0o020 else 0o600
        tmp = root / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        os.chmod(tmp, mode)  # whatever the umask
        try:
            os.link(tmp, path)  # atomic, and never replaces a secret another process created first
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        text = path.read_text().strip()
    try:
        return bytes.fromhex(text)
    except ValueError as e:
        raise ValueError(f"{path} is not a cache secret (remove {root} to start this cache over)") from e


def sign_file(secret: bytes, cache_key: str, name: str, path: Path) -> str:
    """HMAC-SHA256 of ``cache_key``, ``name`` and the bytes of ``path``."""
    h = hmac.new(secret, f"{cache_key}/{name}\n".encode(), hashlib.sha256)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stat_id(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def verified_record(secret: bytes, cache_key: str, name: str, digest: str, st: os.stat_result) -> dict[str, Any]:
    """The signed record that the data file with stat ``st`` was verified to have ``digest``."""
    ident = _stat_id(st)
    msg = f"verified|{cache_key}|{name}|{digest}|{'|'.join(map(str, ident))}".encode()
    return {"stat": ident, "mac": hmac.new(secret, msg, hashlib.sha256).hexdigest()}


def record_holds(secret: bytes, cache_key: str, name: str, meta: dict, st: os.stat_result) -> bool:
    """True when the sidecar's ``verified`` record is genuine and the data file is untouched since."""
    rec = meta.get("verified")
    digest = meta.get("digest")
    if not isinstance(rec, dict) or not isinstance(digest, str) or rec.get("stat") != _stat_id(st):
        return False
    want = verified_record(secret, cache_key, name, digest, st)["mac"]
    return isinstance(rec.get("mac"), str) and hmac.compare_digest(rec["mac"], want)


def read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[Any, tuple[int, ...], int, int]]]:
    """A safetensors file's metadata and ``{tensor: (numpy dtype, shape, absolute start, end)}``."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if size <= 0 or size > 1 << 24:
            raise ValueError("not a safetensors file")
        header = json.loads(f.read(size))
    base = 8 + size
    tensors = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        dtype = _DTYPES.get(v["dtype"])
        begin, end = v["data_offsets"]
        tensors[k] = (dtype, tuple(v["shape"]), base + begin, base + end)
    meta = header.get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}, tensors


def write_safetensors(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write ``arrays`` as a safetensors file (the format of ``safetensors.numpy.save_file``)."""
    names = {np.dtype(np.uint8): "U8", np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for k, a in arrays.items():
        header[k] = {"dtype": names[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for a in arrays.values():
            f.write(np.ascontiguousarray(a).tobytes())


@dataclass
class ShardFile:
    """A verified shard, read lazily: only the rows asked for are read, each time from the file."""

    path: Path
    entries: int
    sections: dict[str, tuple[Any, tuple[int, ...], int, int]]
    _offsets: np.ndarray | None = None

    def _read(self, name: str, start: int = 0, count: int | None = None) -> np.ndarray:
        dtype, shape, begin, end = self.sections[name]
        item = np.dtype(dtype).itemsize
        n = (end - begin) // item if count is None else count
        with open(self.path, "rb") as f:
            f.seek(begin + start * item)
            out = np.fromfile(f, dtype=dtype, count=n)
        if out.size != n:
            raise OSError(f"{self.path} is shorter than its header says")
        return out.reshape(shape) if count is None else out

    def keys_and_logps(self) -> tuple[np.ndarray, np.ndarray]:
        """``[n, 16]`` keys and ``[n]`` float32 values, in one pass over the file."""
        out = []
        with open(self.path, "rb") as f:
            for name in ("keys", "logps"):
                dtype, shape, begin, end = self.sections[name]
                f.seek(begin)
                n = (end - begin) // np.dtype(dtype).itemsize
                a = np.fromfile(f, dtype=dtype, count=n)
                if a.size != n:
                    raise OSError(f"{self.path} is shorter than its header says")
                out.append(a.reshape(shape))
        return out[0], out[1].astype(np.float32, copy=False)

    def keys(self) -> np.ndarray:
        """``[n, 16]`` uint8."""
        return self._read("keys")

    def logps(self) -> np.ndarray:
        return self._read("logps").astype(np.float32, copy=False)

    def tokens(self, rows: np.ndarray) -> list[np.ndarray]:
        """Per-token values of ``rows`` (reads each row's slice only)."""
        if self._offsets is None:
            counts = self._read("token_counts").astype(np.int64)
            self._offsets = np.concatenate([[0], np.cumsum(counts)])
        dtype, _, begin, _ = self.sections["token_logps"]
        item = np.dtype(dtype).itemsize
        if self.sections["token_logps"][3] - begin <= 16384 * len(rows):  # one read beats a seek per row
            flat = self._read("token_logps").astype(np.float32, copy=False)
            keep = 2 * len(rows) < self.entries  # copies, so the rest of the section is freed
            return [flat[self._offsets[r] : self._offsets[r + 1]].copy() if keep else
                    flat[self._offsets[r] : self._offsets[r + 1]] for r in rows.tolist()]
        out = []
        with open(self.path, "rb") as f:
            for r in rows:
                a, b = int(self._offsets[r]), int(self._offsets[r + 1])
                f.seek(begin + a * item)
                v = np.fromfile(f, dtype=dtype, count=b - a)
                if v.size != b - a:
                    raise OSError(f"{self.path} is shorter than its header says")
                out.append(v.astype(np.float32, copy=False))
        return out


def check_shard(path: Path, cache_key: str, name: str, entries: Any, per_token: bool, *, full: bool
                ) -> ShardFile | str:
    """The shard's reader, or why it cannot be trusted. ``full``: also check every value (after a rehash)."""
    try:
        meta, sections = read_header(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable ({type(e).__name__})"
    if meta.get("cache_key") != cache_key or meta.get("shard") != name:
        return "belongs to another cache"
    keys, logps = sections.get("keys"), sections.get("logps")
    if not isinstance(entries, int) or isinstance(entries, bool):
        return "wrong shape"
    if (keys is None or logps is None or keys[0] is not np.uint8 or keys[1] != (entries, KEY_BYTES)
            or logps[1] != (entries,) or logps[0] not in (np.float32, np.float64, np.float16)):
        return "wrong shape"
    shard = ShardFile(path, entries, sections)
    tokens, counts = sections.get("token_logps"), sections.get("token_counts")
    if per_token and (tokens is None or counts is None or counts[1] != (entries,) or counts[0] is not np.int64
                      or tokens[0] not in (np.float32, np.float64) or len(tokens[1]) != 1):
        return "per-token values missing or inconsistent"
    if not full:
        return shard
    try:
        if shard_name(shard.keys()) != name:
            return "entries do not match the shard's name"
        if not np.isfinite(shard.logps()).all():
            return "non-finite values"
        if per_token:
            c = shard._read("token_counts")
            if (c < 0).any() or int(c.sum()) != tokens[1][0]:  # type: ignore[index]
                return "per-token values missing or inconsistent"
            if not np.isfinite(shard._read("token_logps")).all():
                return "non-finite values"
    except (OSError, ValueError) as e:
        return f"unreadable ({type(e).__name__})"
    return shard
