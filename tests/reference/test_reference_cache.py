"""The content-addressed reference cache: hits, identity, corruption, binding to its cache, resume, per-token
values, concurrent builders, the live reference."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import align.reference.provider as provider_mod
from align.data.example import RankedExample
from align.data.tokenize import TokenizedList, tokenize_examples
from align.forward import score_lists
from align.models.tiny import build_model, build_tokenizer
from align.reference import CachedReference, CacheError, LiveReference, ReferenceIdentity, ReferenceStore, entry_key
from align.reference.store import _digest

from .conftest import SHARD, SPEC, cached, naive_logps

# ------------------------------------------------------------------------------------------------- helpers


def _entries(lists: list[TokenizedList]) -> int:
    return len({entry_key(t.prompt_ids, r) for t in lists for r in t.response_ids})


def _direct(model, lists) -> list[list[float]]:
    values, _ = score_lists(model, lists, batch_size=5)
    return [values[i, : len(t.response_ids)].tolist() for i, t in enumerate(lists)]


def _assert_close(a: list[list[float]], b: list[list[float]], tol: float = 1e-5) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert len(x) == len(y), i
        for u, v in zip(x, y):
            assert math.isfinite(u) and abs(u - v) <= tol, (i, u, v)


class _NoForward(torch.nn.Module):
    """Stands in for the model where a cache hit must not run any forward (same parameters, so same identity)."""

    def __init__(self, model):
        super().__init__()
        self.inner = copy.deepcopy(model)
        self.config = model.config

    def forward(self, *args, **kwargs):
        raise AssertionError("the model was called on a cache hit")

    def state_dict(self, *args, **kwargs):
        return self.inner.state_dict(*args, **kwargs)


def _counting(monkeypatch) -> list[int]:
    """Count the lists the live reference sends through ``score_lists``."""
    seen: list[int] = []
    real = provider_mod.score_lists

    def wrapped(model, lists, **kw):
        seen.append(sum(len(t.response_ids) for t in lists))
        return real(model, lists, **kw)

    monkeypatch.setattr(provider_mod, "score_lists", wrapped)
    return seen


def _shards(d: Path) -> list[str]:
    return sorted(p.stem[len("shard-"):] for p in d.glob("shard-*.json"))


def _values(cache: CachedReference, lists) -> list[list[float]]:
    return cache.list_logps(lists)


# ------------------------------------------------------------------------------------------------- 1. build / hit


def test_first_build_computes_all_and_matches_direct_scoring(built, model, lists):
    cache, stats = built
    n = _entries(lists)
    assert n == sum(len(t.response_ids) for t in lists)
    assert (stats.hits, stats.computed, stats.corrupted_shards) == (0, n, 0)
    assert stats.key == cache.store.key == cache.identity.key and cache.store.dir.name == stats.key
    names = sorted(p.name for p in cache.store.dir.iterdir())
    assert names[:2] == ["last_used", "manifest.json"] and not any(x.startswith("claim-") for x in names)
    sizes = sorted((_entries_in(cache.store.dir, s) for s in _shards(cache.store.dir)), reverse=True)
    assert sum(sizes) == n and all(x >= SHARD for x in sizes[:-1]) and len(sizes) > 3  # chunks of >= 8 entries
    manifest = json.loads((cache.store.dir / "manifest.json").read_text())
    assert manifest["identity"] == cache.identity.to_dict()
    got = _values(cache, lists)
    assert {len(v) for v in got} == {2, 3, 4}
    _assert_close(got, _direct(model, lists))
    for i in (3, 5):  # a naive unpadded forward per sequence: a K = 4 list and a multi-turn chat list
        _assert_close([got[i]], [[float(x.sum()) for x in naive_logps(model, lists[i])]])


def test_a_second_build_hits_everything_without_calling_the_model(built, model, tok, lists):
    cache, _ = built
    again = cached(cache.store.root, _NoForward(model), tok)
    assert again.store.key == cache.store.key
    stats = again.prefetch(lists)
    assert (stats.hits, stats.computed, stats.corrupted_shards) == (_entries(lists), 0, 0)
    assert _values(again, lists) == _values(cache, lists)  # bit-identical


def test_a_subset_a_reordering_and_a_reshaped_list_all_hit(built, model, tok, lists):
    cache, _ = built
    again = cached(cache.store.root, _NoForward(model), tok)
    reordered = lists[::-1][:17]
    t = lists[3]  # K = 4: the same sequences split into two lists of two
    reshaped = [TokenizedList(t.prompt_ids, t.response_ids[:2], t.labels[:2]),
                TokenizedList(t.prompt_ids, t.response_ids[2:], t.labels[2:])]
    stats = again.prefetch(reordered + reshaped)
    assert stats.computed == 0 and stats.hits == _entries(reordered + reshaped)
    _assert_close(_values(again, reshaped), [_values(cache, [t])[0][:2], _values(cache, [t])[0][2:]], tol=0)


def test_new_sequences_compute_only_themselves(built_copy, model, tok, examples, lists, monkeypatch):
    root, _ = built_copy
    e = examples[17]
    edited = RankedExample(e.prompt, (e.responses[0] + " edited",) + e.responses[1:], e.labels, e.label_kind, e.row)
    more, _ = tokenize_examples(examples[:17] + [edited], tok)
    seen = _counting(monkeypatch)
    stats = cached(root, model, tok).prefetch(more)
    assert (stats.computed, stats.hits) == (1, _entries(more) - 1) and seen == [1]


def test_lookup_before_prefetch_computes_through_the_live_reference(tmp_path, model, tok, lists):
    cache = cached(tmp_path, model, tok)
    _assert_close(cache.list_logps(lists[:3]), _direct(model, lists[:3]))


def test_a_miss_without_a_reference_model_is_a_clear_error(built, lists, tok, examples):
    cache, _ = built
    readonly = CachedReference(ReferenceStore(cache.store.root, cache.identity), None)
    assert readonly.prefetch(lists).computed == 0
    other, _ = tokenize_examples([RankedExample("new prompt", ("a", "b"), (1.0, 0.0))], tok)
    with pytest.raises(CacheError, match="no reference model"):
        readonly.prefetch(other)


# ------------------------------------------------------------------------------------------------- 2. identity


def _perturbed(model, name: str, delta: float):
    m = copy.deepcopy(model)
    with torch.no_grad():
        p = dict(m.named_parameters())[name]
        p.view(-1)[p.numel() // 2] += delta
    return m


def _variant(kind: str, model, tok, corpus):
    if kind == "weights":
        return _perturbed(model, "model.layers.1.mlp.down_proj.weight", 1e-4), tok, {}
    if kind == "chat-template":
        t2 = copy.deepcopy(tok)
        t2.chat_template = t2.chat_template.replace("<|im_start|>{{ m['role'] }}\n", "<|im_start|>{{ m['role'] }}: ")
        return model, t2, {}
    if kind == "tokenizer-vocab":
        t2 = build_tokenizer([corpus], 400)
        return build_model(t2, SPEC), t2, {}
    if kind == "float64":
        return copy.deepcopy(model).to(torch.float64), tok, {}
    if kind == "bfloat16":
        return copy.deepcopy(model).to(torch.bfloat16), tok, {}
    if kind == "per-token":
        return model, tok, {"per_token": True}
    if kind == "config":
        cfg = type(model.config).from_dict(model.config.to_dict())
        cfg.rms_norm_eps = 0.5  # same weights, other numbers
        other = type(model)(cfg)
        other.load_state_dict(model.state_dict())
        return other, tok, {}
    raise AssertionError(kind)


FIELD = {"weights": "weights", "chat-template": "tokenizer", "tokenizer-vocab": "tokenizer", "float64": "dtype",
         "bfloat16": "dtype", "per-token": "per_token", "config": "config"}


@pytest.mark.parametrize("kind", list(FIELD))
def test_anything_that_changes_the_numbers_changes_the_identity(kind, built, model, tok, corpus):
    base, _ = built
    m2, t2, kw = _variant(kind, model, tok, corpus)
    other = ReferenceIdentity.of(m2, t2, **kw)
    assert other.key != base.identity.key
    differ = [f.name for f in dataclasses.fields(other) if getattr(other, f.name) != getattr(base.identity, f.name)]
    assert FIELD[kind] in differ
    if kind in ("weights", "chat-template", "per-token", "config"):  # nothing else moved
        assert differ == [FIELD[kind]]


def test_an_identical_rebuild_or_another_object_keeps_the_identity(built, model, tok, corpus, lists):
    base, _ = built
    tok2 = build_tokenizer([corpus], 512)
    other_seed = build_model(tok2, dataclasses.replace(SPEC, seed=1))
    assert ReferenceIdentity.of(other_seed, tok2).key != base.identity.key
    other_seed.load_state_dict(model.state_dict())  # the same weights loaded into another object
    for m in (build_model(tok2, SPEC), other_seed):
        stats = cached(base.store.root, _NoForward(m), tok2).prefetch(lists)
        assert (stats.hits, stats.computed) == (_entries(lists), 0)


def test_a_manifest_of_another_reference_or_unreadable_raises(built_copy, model, tok):
    root, d = built_copy
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["identity"]["dtype"] = "torch.float64"
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="another reference"):
        cached(root, model, tok).prefetch([])
    (d / "manifest.json").write_text("{")
    with pytest.raises(CacheError, match="unreadable"):
        cached(root, model, tok).prefetch([])


# ------------------------------------------------------------------------------------------------- 3. corruption


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _entries_in(d: Path, name: str) -> int:
    return json.loads((d / f"shard-{name}.json").read_text())["entries"]


@pytest.mark.parametrize("damage", ["truncate", "flip-byte", "delete-data-file"])
def test_a_damaged_shard_is_detected_and_only_it_is_recomputed(damage, built_copy, built, model, tok, lists,
                                                               monkeypatch):
    root, d = built_copy
    name = _shards(d)[2]
    lost = _entries_in(d, name)
    data = d / f"shard-{name}.safetensors"
    {"truncate": _truncate, "flip-byte": _flip_middle_byte, "delete-data-file": Path.unlink}[damage](data)
    seen = _counting(monkeypatch)
    cache = cached(root, model, tok)
    stats = cache.prefetch(lists)
    assert (stats.corrupted_shards, stats.computed, stats.hits) == (1, lost, _entries(lists) - lost)
    assert sum(seen) == lost
    assert _values(cache, lists) == _values(built[0], lists)
    again = cached(root, _NoForward(model), tok).prefetch(lists)
    assert (again.corrupted_shards, again.computed) == (0, 0)


def test_a_missing_sidecar_means_missing_not_corrupted(built_copy, built, model, tok, lists):
    root, d = built_copy
    name = _shards(d)[-1]
    lost = _entries_in(d, name)
    (d / f"shard-{name}.json").unlink()
    cache = cached(root, model, tok)
    stats = cache.prefetch(lists)
    assert (stats.corrupted_shards, stats.computed) == (0, lost)
    assert _values(cache, lists) == _values(built[0], lists)


def test_on_corrupt_error_raises_and_names_the_shard(built_copy, model, tok, lists):
    root, d = built_copy
    name = _shards(d)[3]
    data = d / f"shard-{name}.safetensors"
    _flip_middle_byte(data)
    damaged = data.read_bytes()
    with pytest.raises(CacheError, match=f"shard {name}"):
        cached(root, _NoForward(model), tok, on_corrupt="error").prefetch(lists)
    assert data.read_bytes() == damaged  # nothing was recomputed or removed


def test_a_shard_copied_from_another_cache_is_rejected_not_a_hit(tmp_path, model, tok, lists):
    """Two references, the same lists: a shard and its sidecar copied from one cache into the other are rejected
    (their digest binds them to their own cache key), never read as hits of the wrong reference."""
    other_model = _perturbed(model, "model.layers.0.mlp.down_proj.weight", 0.5)
    a = cached(tmp_path / "a", model, tok)
    b = cached(tmp_path / "b", other_model, tok)
    a.prefetch(lists)
    b_values = _direct(other_model, lists)
    assert max(abs(x - y) for u, v in zip(_values(a, lists), b_values) for x, y in zip(u, v)) > 1e-2
    name = _shards(a.store.dir)[0]
    b.store.dir.mkdir(parents=True)
    for suffix in (".json", ".safetensors"):
        (b.store.dir / f"shard-{name}{suffix}").write_bytes((a.store.dir / f"shard-{name}{suffix}").read_bytes())
    with pytest.raises(CacheError, match="checksum mismatch"):
        cached(tmp_path / "b", other_model, tok, on_corrupt="error").prefetch(lists)
    stats = b.prefetch(lists)
    assert stats.corrupted_shards == 1 and stats.hits == 0 and stats.computed == _entries(lists)
    _assert_close(_values(b, lists), b_values)
    # ... also when the copy is re-digested for the new cache: the shard's own header names its cache
    store_a = ReferenceStore(tmp_path / "a", a.identity)
    data = b.store.dir / f"shard-{name}.safetensors"
    data.write_bytes((a.store.dir / f"shard-{name}.safetensors").read_bytes())
    meta = json.loads((a.store.dir / f"shard-{name}.json").read_text())
    meta["digest"] = _digest(b.store.key, name, data)
    (b.store.dir / f"shard-{name}.json").write_text(json.dumps(meta))
    fresh = ReferenceStore(tmp_path / "b", b.identity).open()
    assert fresh.corrupted_shards == 1
    assert store_a.open().corrupted_shards == 0  # the original is fine where it belongs


def _rewrite(d: Path, name: str, key: str, tensors: dict[str, torch.Tensor], entries: int | None = None) -> None:
    """A shard file with the right header and a sidecar whose digest matches it: only the content is wrong."""
    data = d / f"shard-{name}.safetensors"
    save_file(tensors, str(data), metadata={"cache_key": key, "shard": name})
    meta = json.loads((d / f"shard-{name}.json").read_text())
    meta["digest"] = _digest(key, name, data)
    if entries is not None:
        meta["entries"] = entries
    (d / f"shard-{name}.json").write_text(json.dumps(meta))


def _bad(kind: str, keys: torch.Tensor, logps: torch.Tensor) -> tuple[dict[str, torch.Tensor], int | None]:
    if kind == "fewer-rows":
        return {"keys": keys[:-1].contiguous(), "logps": logps[:-1].contiguous()}, None
    if kind == "nan-value":
        bad = logps.clone()
        bad[0] = math.nan
        return {"keys": keys, "logps": bad}, None
    if kind == "keys-not-the-names":
        k = keys.clone()
        k[0, 0] ^= 1
        return {"keys": k, "logps": logps}, None
    if kind == "no-logps":
        return {"keys": keys, "values": logps}, None
    if kind == "two-dimensional":
        return {"keys": keys, "logps": logps[:, None].contiguous()}, None
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["fewer-rows", "nan-value", "keys-not-the-names", "no-logps", "two-dimensional"])
def test_a_checksummed_but_wrong_shard_is_detected(kind, built_copy, built, model, tok, lists):
    root, d = built_copy
    name = _shards(d)[2]
    with safe_open(str(d / f"shard-{name}.safetensors"), framework="pt") as f:
        keys, logps = f.get_tensor("keys"), f.get_tensor("logps")
    tensors, entries = _bad(kind, keys, logps)
    _rewrite(d, name, built[0].store.key, tensors, entries)
    with pytest.raises(CacheError, match=f"shard {name}"):
        cached(root, _NoForward(model), tok, on_corrupt="error").prefetch(lists)
    cache = cached(root, model, tok)
    stats = cache.prefetch(lists)
    assert (stats.corrupted_shards, stats.computed) == (1, len(keys))
    assert _values(cache, lists) == _values(built[0], lists)


def test_a_torn_temp_file_is_never_read_as_a_shard(built_copy, model, tok, lists):
    root, d = built_copy
    (d / ".shard-abc.safetensors.999.tmp").write_bytes(b"garbage")
    (d / ".shard-abc.json.999.tmp").write_text("{")
    stats = cached(root, _NoForward(model), tok).prefetch(lists)
    assert (stats.hits, stats.corrupted_shards) == (_entries(lists), 0)


# ------------------------------------------------------------------------------------------------- 4. resume


@pytest.mark.parametrize("torn_at", ["before-rename", "before-sidecar"])
def test_resume_after_an_interrupted_build_computes_only_the_rest(torn_at, tmp_path, built, model, tok, lists,
                                                                  monkeypatch):
    real = ReferenceStore.write
    calls = []

    def dying(self, entries, source=None):
        calls.append(len(entries))
        if len(calls) <= 2:
            return real(self, entries, source)
        name = provider_mod.shard_name(list(entries))
        data = self.dir / f"shard-{name}.safetensors"
        tensors = {"keys": torch.zeros(len(entries), 16, dtype=torch.uint8), "logps": torch.zeros(len(entries))}
        if torn_at == "before-rename":  # killed while saving: half a temp file is left behind
            tmp = data.with_name(f".{data.name}.12345.tmp")
            save_file(tensors, str(tmp))
            _truncate(tmp)
        else:  # killed between the data file and its sidecar
            save_file(tensors, str(data))
        raise KeyboardInterrupt

    monkeypatch.setattr(ReferenceStore, "write", dying)
    with pytest.raises(KeyboardInterrupt):
        cached(tmp_path, model, tok).prefetch(lists)
    monkeypatch.setattr(ReferenceStore, "write", real)
    assert len(calls) == 3
    kept = calls[0] + calls[1]
    seen = _counting(monkeypatch)
    cache = cached(tmp_path, model, tok)
    stats = cache.prefetch(lists)
    assert (stats.hits, stats.computed, stats.corrupted_shards) == (kept, _entries(lists) - kept, 0)
    assert sum(seen) == _entries(lists) - kept
    _assert_close(_values(cache, lists), _values(built[0], lists))
    assert not list(cache.store.dir.glob("claim-*"))  # the dead builder's claim was taken over and released


# ------------------------------------------------------------------------------------------------- 5. per-token


@pytest.fixture(scope="module")
def per_token_cache(tmp_path_factory, model, tok, lists):
    cache = cached(tmp_path_factory.mktemp("per_token"), model, tok, per_token=True)
    cache.prefetch(lists)
    return cache


def test_per_token_values_sum_to_the_sequence_values(per_token_cache, built, lists):
    cache = per_token_cache
    assert cache.identity.key != built[0].identity.key
    tokens = cache.token_logps(lists)
    for t, per, sums in zip(lists, tokens, cache.list_logps(lists)):
        assert [x.numel() for x in per] == [len(r) for r in t.response_ids]
        _assert_close([[float(x.double().sum()) for x in per]], [sums], tol=1e-4)


def test_per_token_values_survive_a_reload(per_token_cache, model, tok, lists):
    again = cached(per_token_cache.store.root, _NoForward(model), tok, per_token=True)
    assert again.prefetch(lists).computed == 0
    for a, b in zip(again.token_logps(lists), per_token_cache.token_logps(lists)):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_a_per_token_shard_without_its_token_values_is_detected(per_token_cache, tmp_path, model, tok, lists):
    import shutil

    d = tmp_path / per_token_cache.store.key
    shutil.copytree(per_token_cache.store.dir, d)
    name = _shards(d)[0]
    with safe_open(str(d / f"shard-{name}.safetensors"), framework="pt") as f:
        tensors = {"keys": f.get_tensor("keys"), "logps": f.get_tensor("logps")}
    _rewrite(d, name, per_token_cache.store.key, tensors)
    with pytest.raises(CacheError, match="per-token"):
        cached(tmp_path, _NoForward(model), tok, per_token=True, on_corrupt="error").prefetch(lists)


def test_token_logps_of_a_sequence_only_cache_raises(built, lists):
    with pytest.raises(CacheError, match="per-token"):
        built[0].token_logps(lists[:1])


# ------------------------------------------------------------------------------------------------- 6. live reference


def test_live_reference_scores_and_writes_through(tmp_path, model, tok, lists):
    store = ReferenceStore(tmp_path, ReferenceIdentity.of(model, tok))
    live = LiveReference(model, tok, batch_size=4, store=store)
    _assert_close(live.list_logps(lists[:6]), _direct(model, lists[:6]))
    assert live.stats.computed == _entries(lists[:6])
    live.flush(source="samples")
    readonly = CachedReference(ReferenceStore(tmp_path, live.identity), None)
    stats = readonly.prefetch(lists[:6])
    assert (stats.hits, stats.computed) == (_entries(lists[:6]), 0)
    assert json.loads(next(store.dir.glob("shard-*.json")).read_text())["source"] == "samples"


# ------------------------------------------------------------------------------------------------- 7. concurrency


def _build_in_child(root: str, corpus: str, out: str) -> None:
    torch.set_num_threads(1)
    from align.data.tokenize import tokenize_examples as tk
    from tests.reference.conftest import make_examples

    tok = build_tokenizer([Path(corpus)], 512)
    model = build_model(tok, SPEC)
    lists, _ = tk(make_examples(), tok)
    stats = cached(root, model, tok, shard_size=4).prefetch(lists)
    Path(out).write_text(json.dumps({"computed": stats.computed, "here": stats.computed_here}))


def test_two_concurrent_builders_split_the_work_instead_of_duplicating_it(tmp_path, corpus, model, tok, lists):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_build_in_child, args=(str(tmp_path / "rc"), str(corpus), str(tmp_path / f"{i}.json")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    r = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]
    n = _entries(lists)
    # Each chunk is claimed by one builder; the other waits for it or computes another. Nothing is computed twice.
    assert r[0]["here"] + r[1]["here"] == n
    again = cached(tmp_path / "rc", _NoForward(model), tok, shard_size=4)
    assert again.prefetch(lists).computed == 0
    _assert_close(_values(again, lists), _direct(model, lists))
    assert not list((tmp_path / "rc").glob("*/claim-*"))


def test_a_claim_held_by_a_live_builder_is_waited_for_and_a_dead_ones_taken_over(tmp_path, model, tok, lists):
    cache = cached(tmp_path, model, tok, shard_size=1000)
    store = cache.store
    store.dir.mkdir(parents=True)
    chunk = cache._chunks(lists, [[entry_key(t.prompt_ids, r) for r in t.response_ids] for t in lists],
                          {entry_key(t.prompt_ids, r) for t in lists for r in t.response_ids})[0]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live builder (another process) holds the claim: we wait, then read what it wrote
        (store.dir / f"claim-{chunk.name}").write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename,
                                                                   "time": time.time()}))
        assert store.claim_alive(chunk.name) and not store.claim(chunk.name)
        writer = cached(tmp_path, model, tok, shard_size=1000)

        def finish_later():
            time.sleep(1.0)
            store.write(writer._entries(chunk))
            store.release(chunk.name)

        import threading

        th = threading.Thread(target=finish_later)
        th.start()
        stats = cached(tmp_path, model, tok, shard_size=1000).prefetch(lists)
        th.join()
        assert stats.computed == _entries(lists) and stats.computed_here == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    # a claim left by a process that died is taken over at once
    (store.dir / f"claim-{chunk.name}").write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename,
                                                               "time": time.time()}))
    assert not store.claim_alive(chunk.name) and store.claim(chunk.name)
    store.release(chunk.name)


def test_a_build_that_fails_before_its_first_shard_leaves_no_cache_behind(tmp_path, model, tok, lists, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(provider_mod, "score_lists", broken)
    cache = cached(tmp_path, model, tok)
    with pytest.raises(RuntimeError, match="out of memory"):
        cache.prefetch(lists)
    assert not (cache.store.dir / "manifest.json").exists()
    assert not list(tmp_path.glob("*/*"))  # no manifest, no shard, no claim left
