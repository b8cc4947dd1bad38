"""The key index: segments written as the cache grows, merged into O(log N) of them, lookups by binary search that
read only what they find; a damaged index costs misses, never wrong values."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import align.reference.index as index_mod
from align.reference import ReferenceStore, entry_key
from align.reference.shards import ShardFile
from align.reference.store import Entry

from .conftest import cached


def _keys(lists) -> list[bytes]:
    return list(dict.fromkeys(entry_key(t.prompt_ids, r) for t in lists for r in t.response_ids))


@pytest.fixture
def small_segments(monkeypatch):
    monkeypatch.setattr(index_mod, "FLUSH_ENTRIES", 16)


def test_segments_are_written_merged_and_found(small_segments, tmp_path, built, model, tok, lists):
    cache = cached(tmp_path, model, tok)
    for i in range(0, len(lists), 6):  # the cache grows run by run
        cache.prefetch(lists[: i + 6])
        cache.store.open()
    segments = sorted(cache.store.dir.glob("index-*.json"))
    n = len(_keys(lists))
    assert 1 <= len(segments) <= 1 + int(np.log2(n / 16)) + 1  # merged as it grows: O(log N) segments
    covered = [s for p in segments for s in json.loads(p.read_text())["shards"]]
    assert len(covered) == len(set(covered))  # a shard is in one segment
    store = ReferenceStore(tmp_path, cache.identity).open()
    assert store.index.tail_entries() < 16 and len(store.index.segments) == len(segments)
    found = store.find(_keys(lists))
    want = built[0].store.find(_keys(lists))
    assert len(found) == n and max(abs(found[k].logp - want[k].logp) for k in want) < 1e-4  # other batches
    assert store.find([bytes(16), b"\xff" * 16]) == {}


def test_a_lookup_reads_only_the_shards_it_finds(small_segments, built_copy, built, lists, monkeypatch):
    root, _ = built_copy
    ReferenceStore(root, built[0].identity).open()  # writes the index
    store = ReferenceStore(root, built[0].identity).open()
    read = []
    real = ShardFile.keys_and_logps
    monkeypatch.setattr(ShardFile, "keys_and_logps", lambda self: read.append(self.path.name) or real(self))
    keys = _keys(lists[:1])
    assert len(store.find(keys)) == len(keys)
    assert 1 <= len(set(read)) <= len(keys)  # not every shard of the cache
    assert len(store._files) == len(set(read))  # and only those were verified


def _damage(seg, column: int, how) -> None:
    """Rewrite one column (0 hi, 1 lo as uint64; 4 shard, 5 row as uint32 halves) of an index segment."""
    raw = np.frombuffer(seg.read_bytes(), np.uint8).copy()
    n = len(raw) // 24
    if column < 2:
        col = raw[8 * n * column : 8 * n * (column + 1)].view(np.uint64)
    else:
        col = raw[4 * n * column : 4 * n * (column + 1)].view(np.uint32)
    col[:] = how(col.copy())
    seg.write_bytes(raw.tobytes())


@pytest.mark.parametrize("damage", ["rows-swapped", "keys-zeroed"])
def test_a_damaged_index_costs_misses_never_wrong_values(damage, small_segments, built_copy, built, model, tok,
                                                         lists, caplog):
    root, d = built_copy
    ReferenceStore(root, built[0].identity).open()
    seg = next(d.glob("index-*.bin"))
    if damage == "rows-swapped":  # every entry points at another row: found, checked against the shard, healed
        _damage(seg, 5, lambda c: c[::-1])
    else:  # no key is found: misses, recomputed (and a shard written again)
        _damage(seg, 0, lambda c: np.zeros_like(c))
    cache = cached(root, model, tok)
    with caplog.at_level(logging.WARNING, logger="align.reference"):
        stats = cache.prefetch(lists)
    assert stats.corrupted_shards == 0
    if damage == "rows-swapped":
        assert stats.computed == 0 and "re-indexing" in caplog.text and not seg.exists()
    else:
        assert stats.computed > 0
    assert max(abs(a - b) for u, v in zip(cache.list_logps(lists), built[0].list_logps(lists))
               for a, b in zip(u, v)) < 1e-4


def test_an_unreadable_segment_is_rebuilt_from_the_shards(small_segments, built_copy, built, model, tok, lists,
                                                         caplog):
    root, d = built_copy
    ReferenceStore(root, built[0].identity).open()
    side = next(d.glob("index-*.json"))
    side.write_text("[]")
    with caplog.at_level(logging.WARNING, logger="align.reference"):
        again = cached(root, model, tok).prefetch(lists)
    assert again.computed == 0 and "re-indexed" in caplog.text and not side.exists()
    assert list(d.glob("index-*.json"))  # a new one


def test_per_token_values_are_read_lazily_and_equal(small_segments, tmp_path, model, tok, lists):
    cache = cached(tmp_path, model, tok, per_token=True)
    cache.prefetch(lists)
    store = ReferenceStore(tmp_path, cache.identity).open()
    keys = _keys(lists)
    found = store.find(keys)
    for k in keys:
        a, b = found[k], cache._memory[k]
        assert isinstance(a, Entry) and a.logp == b.logp and np.array_equal(a.tokens.numpy(), b.tokens.numpy())
