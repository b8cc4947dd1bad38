"""The key index of one cache: where each entry is, without loading what the cache holds.

Segments ``index-<id>.bin`` hold four sorted columns (the key's two 64-bit words, the shard number, the row),
read by memory map and searched by binary search; ``index-<id>.json`` lists the shards a segment covers and is
written after its data, so its presence means the segment is whole. Shards no segment covers yet (written since)
form a small in-memory tail; once it holds :data:`FLUSH_ENTRIES` entries, the process that has the index lease
writes it as a segment, merged with every segment not much larger (so a cache of N entries has O(log N)
segments). Memory per lookup batch is bounded: the pages a batch touched are dropped from the process afterwards.

The index only routes: every hit is checked against the key stored in its verified shard, so a damaged or edited
index can cause misses (recomputed), never a wrong value.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from align import leases
from align.reference.shards import key_words

log = logging.getLogger("align.reference")

FLUSH_ENTRIES = 1 << 15  # tail entries that make a new segment
_BATCH = 4096  # queries searched between two releases of the touched pages


class Segment:
    """One memory-mapped index segment."""

    def __init__(self, path: Path, shards: list[str], n: int):
        self.path, self.shards, self.n = path, shards, n
        self._mm: mmap.mmap | None = None
        if n:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size != 24 * n:
                    raise ValueError(f"{path} is not {n} entries long")
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self.hi = np.frombuffer(self._mm, np.uint64, n, 0)
            self.lo = np.frombuffer(self._mm, np.uint64, n, 8 * n)
            self.shard = np.frombuffer(self._mm, np.uint32, n, 16 * n)
            self.row = np.frombuffer(self._mm, np.uint32, n, 20 * n)

    def locate(self, q_hi: np.ndarray, q_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For queries sorted by ``q_hi``: (found mask, shard number, row) of each."""
        m = len(q_hi)
        found, shard, row = np.zeros(m, bool), np.zeros(m, np.int64), np.zeros(m, np.int64)
        if not self.n or not m:
            return found, shard, row
        for a in range(0, m, _BATCH):
            qh, ql = q_hi[a : a + _BATCH], q_lo[a : a + _BATCH]
            p = np.minimum(np.searchsorted(self.hi, qh), self.n - 1)
            same_hi = self.hi[p] == qh
            ok = same_hi & (self.lo[p] == ql)
            for i in np.flatnonzero(same_hi & ~ok):  # two keys sharing their first 8 bytes: scan the run
                j = int(p[i]) + 1
                while j < self.n and self.hi[j] == qh[i]:
                    if self.lo[j] == ql[i]:
                        p[i], ok[i] = j, True
                        break
                    j += 1
            found[a : a + _BATCH] = ok
            shard[a : a + _BATCH] = np.where(ok, self.shard[p], 0)
            row[a : a + _BATCH] = np.where(ok, self.row[p], 0)
            if hasattr(self._mm, "madvise"):
                self._mm.madvise(mmap.MADV_DONTNEED)  # the pages stay in the page cache, not in this process
        return found, shard, row

    def columns(self) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        """Every entry: (hi, lo, shard name per entry as an index into :attr:`shards`, row), in memory."""
        if not self.n:
            e = np.zeros(0, np.uint64)
            return e, e, self.shards, np.zeros(0, np.int64)
        return self.hi.copy(), self.lo.copy(), self.shards, np.stack([self.shard, self.row]).astype(np.int64)


def write_segment(directory: Path, names: list[str], hi: np.ndarray, lo: np.ndarray, shard: np.ndarray,
                  row: np.ndarray) -> str:
    """Write a segment of the given entries (any order; duplicates kept once) and return its id."""
    order = np.lexsort((lo, hi))
    hi, lo, shard, row = hi[order], lo[order], shard[order], row[order]
    if len(hi) > 1:
        keep = np.concatenate([[True], (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])])
        hi, lo, shard, row = hi[keep], lo[keep], shard[keep], row[keep]
    ident = secrets.token_hex(8)
    data = directory / f"index-{ident}.bin"
    tmp = directory / f".index-{ident}.bin.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        for col, dtype in ((hi, np.uint64), (lo, np.uint64), (shard, np.uint32), (row, np.uint32)):
            f.write(np.ascontiguousarray(col, dtype=dtype).tobytes())
    os.replace(tmp, data)
    side = directory / f"index-{ident}.json"
    tmp = directory / f".index-{ident}.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"shards": names, "entries": int(len(hi))}))
    os.replace(tmp, side)
    return ident


class KeyIndex:
    """Routes entry keys to (shard, row) for one cache directory."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.segments: dict[str, Segment] = {}
        self.tail: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._tail_sorted: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]] | None = None

    def covered(self) -> set[str]:
        return {s for seg in self.segments.values() for s in seg.shards}

    def tail_entries(self) -> int:
        return sum(len(h) for h, _ in self.tail.values())

    def __len__(self) -> int:
        return sum(s.n for s in self.segments.values()) + sum(len(h) for h, _ in self.tail.values())

    def refresh(self, listing: Iterable[str]) -> None:
        """Map the segments now on disk (``listing``: the directory's file names), drop the vanished ones."""
        present = {n[len("index-"):-len(".json")] for n in listing if n.startswith("index-") and n.endswith(".json")}
        for ident in list(self.segments):
            if ident not in present:
                del self.segments[ident]
        for ident in sorted(present - set(self.segments)):
            side = self.dir / f"index-{ident}.json"
            try:
                meta = json.loads(side.read_text())
                shards, n = meta["shards"], int(meta["entries"])
                if not isinstance(shards, list) or not all(isinstance(s, str) for s in shards):
                    raise ValueError("shards is not a list of names")
                self.segments[ident] = Segment(self.dir / f"index-{ident}.bin", shards, n)
            except FileNotFoundError:  # merged away by another process meanwhile
                continue
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("reference cache index segment %s is unusable (%s); its shards are re-indexed", side, e)
                for p in (side, side.with_suffix(".bin")):
                    p.unlink(missing_ok=True)
        covered = self.covered()
        for name in [n for n in self.tail if n in covered]:
            self.drop(name)

    def forget_segments(self, shards: set[str]) -> None:
        """Remove the segments that cover any of ``shards`` (their shards are indexed again from the shards)."""
        for ident, seg in list(self.segments.items()):
            if shards & set(seg.shards):
                del self.segments[ident]
                for suffix in (".json", ".bin"):
                    try:
                        (self.dir / f"index-{ident}{suffix}").unlink(missing_ok=True)
                    except OSError:  # a read-only cache: this process indexes them in memory
                        pass

    def add(self, name: str, keys: np.ndarray) -> None:
        """Index a (verified) shard's keys in the tail."""
        self.tail[name] = key_words(keys)
        self._tail_sorted = None

    def drop(self, name: str) -> None:
        if self.tail.pop(name, None) is not None:
            self._tail_sorted = None

    def _tail(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
        if self._tail_sorted is None:
            names = list(self.tail)
            if names:
                hi = np.concatenate([self.tail[n][0] for n in names])
                lo = np.concatenate([self.tail[n][1] for n in names])
                shard = np.concatenate([np.full(len(self.tail[n][0]), i, np.int64) for i, n in enumerate(names)])
                row = np.concatenate([np.arange(len(self.tail[n][0]), dtype=np.int64) for n in names])
                order = np.lexsort((lo, hi))
                self._tail_sorted = hi[order], lo[order], shard[order], row[order], names
            else:
                e = np.zeros(0, np.uint64)
                self._tail_sorted = e, e, np.zeros(0, np.int64), np.zeros(0, np.int64), []
        return self._tail_sorted

    def locate(self, keys: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Where each ``[m, 16]`` key is: (shard names, shard number per key into them or -1 where the index
        does not know the key, row per key). The tail is searched first, then the segments."""
        q_hi, q_lo = key_words(keys)
        order = np.argsort(q_hi, kind="stable")
        sh, sl = q_hi[order], q_lo[order]
        sid, rows = np.full(len(keys), -1, np.int64), np.zeros(len(keys), np.int64)
        names: list[str] = []
        hi, lo, tshard, trow, tnames = self._tail()
        tail_seg = [(tnames, hi, lo, tshard, trow)] if len(hi) else []
        for seg_names, *cols in tail_seg + [(s.shards, s) for s in self.segments.values()]:  # type: ignore[misc]
            idx = np.flatnonzero(sid[order] < 0)
            if not len(idx):
                break
            if len(cols) == 1:
                found, shard, row = cols[0].locate(sh[idx], sl[idx])
            else:
                found, shard, row = _locate_in_memory(*cols, sh[idx], sl[idx])
            found &= shard < len(seg_names)
            at = order[idx[found]]
            sid[at], rows[at] = shard[found] + len(names), row[found]
            names += seg_names
        return names, sid, rows

    def compact(self, shards_present: set[str], lock_ttl: float | None = None) -> bool:
        """Write the tail as a segment, merged with the segments not much larger than it; False if another
        process holds the index lease (it is doing the same)."""
        lease = leases.acquire(self.dir / "index.lock", lock_ttl)
        if lease is None:
            return False
        try:
            parts = [self._tail_parts()]
            total = len(parts[0][0])
            merged = []
            for ident, seg in sorted(self.segments.items(), key=lambda kv: kv[1].n):
                if seg.n > 2 * total:
                    break
                merged.append(ident)
                parts.append(seg.columns())
                total += seg.n
            names: list[str] = []
            his, los, shs, rows = [], [], [], []
            for hi, lo, seg_names, sr in parts:
                alive = np.array([n in shards_present for n in seg_names] + [False], bool)
                base = len(names)
                names += seg_names
                keep = alive[sr[0]] if len(hi) else np.zeros(0, bool)
                his.append(hi[keep])
                los.append(lo[keep])
                shs.append(sr[0][keep] + base)
                rows.append(sr[1][keep])
            used = np.unique(np.concatenate(shs))
            remap = np.full(len(names) + 1, -1, np.int64)
            remap[used] = np.arange(len(used))
            ident = write_segment(self.dir, [names[i] for i in used.tolist()], np.concatenate(his), np.concatenate(los),
                                  remap[np.concatenate(shs)], np.concatenate(rows))
            for old in merged:
                for suffix in (".json", ".bin"):
                    (self.dir / f"index-{old}{suffix}").unlink(missing_ok=True)
            self.tail, self._tail_sorted = {}, None
            self.refresh(p.name for p in self.dir.iterdir())
            log.debug("reference cache index: segment %s of %d entries (%d merged)", ident, total, len(merged))
            return True
        finally:
            lease.release()

    def _tail_parts(self) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        hi, lo, shard, row, names = self._tail()
        return hi, lo, names, np.stack([shard, row]) if len(hi) else np.zeros((2, 0), np.int64)


def _locate_in_memory(hi: np.ndarray, lo: np.ndarray, shard: np.ndarray, row: np.ndarray, q_hi: np.ndarray,
                      q_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`Segment.locate` for in-memory sorted columns."""
    p = np.minimum(np.searchsorted(hi, q_hi), len(hi) - 1)
    ok = (hi[p] == q_hi) & (lo[p] == q_lo)
    for i in np.flatnonzero((hi[p] == q_hi) & ~ok):
        j = int(p[i]) + 1
        while j < len(hi) and hi[j] == q_hi[i]:
            if lo[j] == q_lo[i]:
                p[i], ok[i] = j, True
                break
            j += 1
    return ok, shard[p], row[p]
