"""Tests of align.reference.cache: hits, keys, corruption, resume, per-token values, manifest checks."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import align.reference.cache as cache_mod
from align.data.example import RankedExample
from align.data.tokenize import tokenize_examples
from align.forward import score_lists
from align.models.tiny import build_model, build_tokenizer
from align.reference.cache import CacheError, ReferenceCache

from .conftest import SHARD, SPEC, naive_logps

N_SHARDS = 6  # 42 lists / 8 per shard -> five full shards and one of 2


# ------------------------------------------------------------------------------------------------- helpers


def _values(cache: ReferenceCache, n: int) -> list[list[float]]:
    return [cache.logps(i) for i in range(n)]


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
    """Stands in for the model where a cache hit must not run any forward."""

    def __init__(self, model):
        super().__init__()
        self.inner = copy.deepcopy(model)  # same parameters (and dtype) as the real model

    def forward(self, *args, **kwargs):
        raise AssertionError("the model was called on a cache hit")


def _counting_score_lists(monkeypatch) -> list[int]:
    """Count the lists ``ReferenceCache`` sends through ``score_lists``."""
    seen: list[int] = []
    real = cache_mod.score_lists

    def wrapped(model, lists, **kw):
        seen.append(len(lists))
        return real(model, lists, **kw)

    monkeypatch.setattr(cache_mod, "score_lists", wrapped)
    return seen


def _shard(d: Path, s: int) -> tuple[Path, Path]:
    return d / f"shard-{s:05d}.safetensors", d / f"shard-{s:05d}.json"


def _fresh(root, model, tok, lists, **kw) -> ReferenceCache:
    return ReferenceCache.for_model(root, model, tok, lists, shard_size=kw.pop("shard_size", SHARD), **kw)


# ------------------------------------------------------------------------------------------------- 1. build / hit


def test_first_build_computes_all_and_matches_direct_scoring(built, model, lists):
    cache, stats = built
    n = len(lists)
    assert (stats.hits, stats.computed, stats.corrupted_shards) == (0, n, 0)
    assert stats.key == cache.key and cache.dir.name == cache.key
    names = sorted(p.name for p in cache.dir.iterdir())
    assert names == ["manifest.json"] + sorted(
        f"shard-{s:05d}.{ext}" for s in range(N_SHARDS) for ext in ("json", "safetensors"))
    manifest = json.loads((cache.dir / "manifest.json").read_text())
    assert manifest["sizes"] == [len(t.response_ids) for t in lists] and manifest["num_shards"] == N_SHARDS
    assert manifest["components"] == json.loads(json.dumps(cache.components))

    got = _values(cache, n)
    assert [len(v) for v in got] == [len(t.response_ids) for t in lists]
    assert {len(v) for v in got} == {2, 3, 4}
    _assert_close(got, _direct(model, lists))
    # A naive unpadded per-sequence forward, for a K=4 list and a multi-turn chat list.
    for i in (3, 5):
        naive = [float(x.sum()) for x in naive_logps(model, lists[i])]
        _assert_close([got[i]], [naive])


def test_second_build_hits_everything_without_calling_the_model(built, model, tok, lists, monkeypatch):
    cache, _ = built
    seen = _counting_score_lists(monkeypatch)
    again = ReferenceCache.for_model(cache.root, model, tok, lists, shard_size=SHARD)
    assert again.key == cache.key
    stats = again.ensure(_NoForward(model), lists, progress=False)
    assert (stats.hits, stats.computed, stats.corrupted_shards) == (len(lists), 0, 0)
    assert seen == []
    assert _values(again, len(lists)) == _values(cache, len(lists))  # bit-identical


def test_logps_before_ensure_raises(tmp_path, model, tok, lists):
    with pytest.raises(CacheError):
        _fresh(tmp_path, model, tok, lists).logps(0)


# ------------------------------------------------------------------------------------------------- 2. keys


def _perturb_one(model, name: str, delta: float):
    m = copy.deepcopy(model)
    with torch.no_grad():
        p = dict(m.named_parameters())[name]
        p.view(-1)[p.numel() // 2] += delta
    return m


def _nextafter_one(model, name: str):
    m = copy.deepcopy(model)
    with torch.no_grad():
        flat = dict(m.named_parameters())[name].view(-1)
        i = flat.numel() - 3
        flat[i] = torch.nextafter(flat[i], torch.tensor(math.inf, dtype=flat.dtype))
    return m


def _variant(kind: str, model, tok, examples, lists, corpus):
    """(model, tokenizer, lists, extra for_model kwargs) for a variant that must miss the base key."""
    if kind == "weights-small-perturbation":
        return _perturb_one(model, "model.layers.1.mlp.down_proj.weight", 1e-4), tok, lists, {}
    if kind == "weights-one-ulp-in-largest-tensor":
        return _nextafter_one(model, "model.embed_tokens.weight"), tok, lists, {}
    if kind == "chat-template":
        t2 = copy.deepcopy(tok)
        t2.chat_template = t2.chat_template.replace("<|im_start|>{{ m['role'] }}\n", "<|im_start|>{{ m['role'] }}: ")
        return model, t2, tokenize_examples(examples, t2)[0], {}
    if kind == "tokenizer-vocab":
        t2 = build_tokenizer([corpus], 400)
        return build_model(t2, SPEC), t2, tokenize_examples(examples, t2)[0], {}
    if kind == "max-response-length":
        shorter, report = tokenize_examples(examples, tok, max_response_length=6)
        assert report.responses_truncated > 0
        return model, tok, shorter, {"settings": {"max_response_length": 6}}
    if kind == "settings":
        return model, tok, lists, {"settings": {"max_response_length": 512, "truncation": "drop"}}
    if kind == "one-response-edited":
        ex = list(examples)
        e = ex[17]
        ex[17] = RankedExample(e.prompt, (e.responses[0] + " edited",) + e.responses[1:], e.scores, e.label_kind, e.row)
        return model, tok, tokenize_examples(ex, tok)[0], {}
    if kind == "order-changed":
        return model, tok, lists[1:2] + lists[:1] + lists[2:], {}
    if kind == "example-dropped":
        return model, tok, lists[:20] + lists[21:], {}
    if kind == "float64":
        return copy.deepcopy(model).to(torch.float64), tok, lists, {}
    if kind == "bfloat16":
        return copy.deepcopy(model).to(torch.bfloat16), tok, lists, {}
    if kind == "per-token":
        return model, tok, lists, {"per_token": True}
    raise AssertionError(kind)


VARIANTS = ["weights-small-perturbation", "weights-one-ulp-in-largest-tensor", "chat-template", "tokenizer-vocab",
            "max-response-length", "settings", "one-response-edited", "order-changed", "example-dropped", "float64",
            "bfloat16", "per-token"]
COMPONENT = {"weights-small-perturbation": "weights", "weights-one-ulp-in-largest-tensor": "weights",
             "chat-template": "tokenizer", "tokenizer-vocab": "tokenizer", "max-response-length": "data",
             "settings": "settings", "one-response-edited": "data", "order-changed": "data",
             "example-dropped": "data", "float64": "dtype", "bfloat16": "dtype", "per-token": "per_token"}


def _fake_score_lists(model, lists, *, per_token=False, **kw):
    """Right shapes, no forward: where only the key and the hit/miss counts are under test."""
    values = torch.full((len(lists), max(len(t.response_ids) for t in lists)), math.nan)
    for i, t in enumerate(lists):
        values[i, : len(t.response_ids)] = -1.0
    tokens = [[torch.full((len(r),), -1.0 / len(r)) for r in t.response_ids] for t in lists] if per_token else None
    return values, tokens


@pytest.mark.parametrize("kind", VARIANTS)
def test_anything_that_changes_the_numbers_changes_the_key(kind, built, model, tok, examples, lists, corpus,
                                                           monkeypatch):
    base, _ = built
    m2, t2, l2, kw = _variant(kind, model, tok, examples, lists, corpus)
    cache = ReferenceCache.for_model(base.root, m2, t2, l2, shard_size=SHARD, **kw)
    assert cache.key != base.key and cache.dir != base.dir
    assert cache.components[COMPONENT[kind]] != base.components[COMPONENT[kind]]
    if kind not in ("order-changed", "example-dropped"):
        monkeypatch.setattr(cache_mod, "score_lists", _fake_score_lists)
    stats = cache.ensure(m2, l2, progress=False)
    assert (stats.hits, stats.computed) == (0, len(l2))
    if kind == "order-changed":  # same reference numbers in another layout: still the right value for each list
        _assert_close(_values(cache, len(l2)), [base.logps(1), base.logps(0)] + _values(base, len(lists))[2:])
    if kind == "example-dropped":
        _assert_close(_values(cache, len(l2)), [base.logps(i) for i in range(len(lists)) if i != 20])
    assert base.dir.exists() and (base.dir / "manifest.json").exists()  # the base entry is left alone


def test_an_identical_rebuild_keeps_the_key_and_hits(built, model, tok, corpus, lists):
    base, _ = built
    tok2 = build_tokenizer([corpus], 512)  # rebuilt from the same corpus
    fresh = build_model(tok2, SPEC)  # rebuilt from the same seed
    other_seed = build_model(tok2, dataclasses.replace(SPEC, seed=1))
    assert ReferenceCache.for_model(base.root, other_seed, tok2, lists, shard_size=SHARD).key != base.key
    other_seed.load_state_dict(model.state_dict())  # the same weights loaded into another object
    for m in (fresh, other_seed):
        cache = ReferenceCache.for_model(base.root, m, tok2, lists, shard_size=SHARD)
        assert cache.key == base.key
        stats = cache.ensure(_NoForward(m), lists, progress=False)
        assert (stats.hits, stats.computed) == (len(lists), 0)


def test_same_weights_other_config_changes_the_key(built, model, tok, lists):
    base, _ = built
    cfg = type(model.config).from_dict(model.config.to_dict())
    cfg.rms_norm_eps = 0.5  # same weights, other numbers
    other = type(model)(cfg)
    other.load_state_dict(model.state_dict())
    d = _direct(other, lists[:4])
    assert max(abs(a - b) for x, y in zip(d, _direct(model, lists[:4])) for a, b in zip(x, y)) > 1e-3
    assert ReferenceCache.for_model(base.root, other, tok, lists, shard_size=SHARD).key != base.key


# ------------------------------------------------------------------------------------------------- 3. corruption


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "flip-byte", "delete-data-file"])
def test_a_damaged_shard_is_detected_and_only_it_is_recomputed(damage, built_copy, built, model, tok, lists,
                                                               monkeypatch):
    root, d = built_copy
    data, _ = _shard(d, 2)
    {"truncate": _truncate, "flip-byte": _flip_middle_byte, "delete-data-file": Path.unlink}[damage](data)
    seen = _counting_score_lists(monkeypatch)
    cache = _fresh(root, model, tok, lists)
    stats = cache.ensure(model, lists, progress=False)
    assert (stats.corrupted_shards, stats.computed, stats.hits) == (1, SHARD, len(lists) - SHARD)
    assert seen == [SHARD]
    assert _values(cache, len(lists)) == _values(built[0], len(lists))
    again = _fresh(root, model, tok, lists).ensure(_NoForward(model), lists, progress=False)
    assert (again.corrupted_shards, again.computed) == (0, 0)


def test_a_missing_sidecar_means_missing_not_corrupted(built_copy, built, model, tok, lists):
    root, d = built_copy
    _, meta = _shard(d, N_SHARDS - 1)  # the short last shard (2 lists)
    meta.unlink()
    cache = _fresh(root, model, tok, lists)
    stats = cache.ensure(model, lists, progress=False)
    assert (stats.corrupted_shards, stats.computed, stats.hits) == (0, 2, len(lists) - 2)
    assert _values(cache, len(lists)) == _values(built[0], len(lists))


def test_on_corrupt_error_raises_and_names_the_shard(built_copy, model, tok, lists):
    root, d = built_copy
    data, _ = _shard(d, 3)
    _flip_middle_byte(data)
    damaged = data.read_bytes()
    with pytest.raises(CacheError, match="shard 3"):
        _fresh(root, model, tok, lists).ensure(_NoForward(model), lists, on_corrupt="error", progress=False)
    assert data.read_bytes() == damaged  # nothing was recomputed


def _rewrite(data: Path, meta: Path, tensors: dict[str, torch.Tensor], range_=None) -> None:
    """A valid safetensors file with a sidecar whose sha256 (and range) match it."""
    save_file(tensors, str(data))
    old = json.loads(meta.read_text())
    meta.write_text(json.dumps({"sha256": cache_mod._sha256(data), "range": range_ or old["range"]}))


def _bad_tensors(kind: str, good: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[int] | None]:
    if kind == "fewer-rows":
        return {"logps": good[:-1].contiguous()}, None
    if kind == "too-few-columns":
        return {"logps": good[:, :1].contiguous()}, None
    if kind == "nan-in-a-used-slot":
        bad = good.clone()
        bad[0, 0] = math.nan
        return {"logps": bad}, None
    if kind == "wrong-range":
        return {"logps": good}, [0, SHARD]
    if kind == "no-logps-tensor":
        return {"values": good}, None
    if kind == "one-dimensional":
        return {"logps": good[:, 0].contiguous()}, None
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "fewer-rows", "too-few-columns", "nan-in-a-used-slot", "wrong-range", "no-logps-tensor",
    "one-dimensional",
])
def test_a_checksummed_but_wrong_shard_is_detected(kind, built_copy, built, model, tok, lists):
    root, d = built_copy
    data, meta = _shard(d, 2)
    good = load_file(str(data))["logps"]
    tensors, range_ = _bad_tensors(kind, good)
    _rewrite(data, meta, tensors, range_)
    with pytest.raises(CacheError, match="shard 2"):
        _fresh(root, model, tok, lists).ensure(_NoForward(model), lists, on_corrupt="error", progress=False)
    cache = _fresh(root, model, tok, lists)
    stats = cache.ensure(model, lists, progress=False)
    assert (stats.corrupted_shards, stats.computed) == (1, SHARD)
    assert _values(cache, len(lists)) == _values(built[0], len(lists))


def test_a_torn_temp_file_is_never_read_as_a_shard(built_copy, model, tok, lists):
    root, d = built_copy
    (d / ".shard-00002.safetensors.999.tmp").write_bytes(b"garbage")
    (d / ".shard-00002.json.999.tmp").write_text("{")
    stats = _fresh(root, model, tok, lists).ensure(_NoForward(model), lists, progress=False)
    assert (stats.hits, stats.corrupted_shards) == (len(lists), 0)


# ------------------------------------------------------------------------------------------------- 4. resume


@pytest.mark.parametrize("torn_at", ["before-rename", "before-sidecar"])
def test_resume_after_an_interrupted_build_computes_only_the_rest(torn_at, tmp_path, built, model, tok, lists,
                                                                  monkeypatch):
    real = ReferenceCache._write_shard
    calls = []

    def dying(self, s, tensors):
        calls.append(s)
        if len(calls) <= 2:
            return real(self, s, tensors)
        data = self.dir / f"shard-{s:05d}.safetensors"
        if torn_at == "before-rename":  # killed while saving: half a temp file is left behind
            tmp = data.with_name(f".{data.name}.12345.tmp")
            save_file(tensors, str(tmp))
            _truncate(tmp)
        else:  # killed between the data file and its sidecar
            save_file(tensors, str(data))
        raise KeyboardInterrupt

    lists = lists[: 4 * SHARD]
    monkeypatch.setattr(ReferenceCache, "_write_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        _fresh(tmp_path, model, tok, lists).ensure(model, lists, progress=False)
    monkeypatch.setattr(ReferenceCache, "_write_shard", real)
    assert calls == [0, 1, 2]

    seen = _counting_score_lists(monkeypatch)
    cache = _fresh(tmp_path, model, tok, lists)
    stats = cache.ensure(model, lists, progress=False)
    assert (stats.hits, stats.computed, stats.corrupted_shards) == (2 * SHARD, len(lists) - 2 * SHARD, 0)
    assert sum(seen) == len(lists) - 2 * SHARD
    assert _values(cache, len(lists)) == _values(built[0], len(lists))  # same batches: bit-identical
    visible = sorted(p.name for p in cache.dir.iterdir() if not p.name.startswith("."))
    assert visible == ["manifest.json"] + sorted(f"shard-{s:05d}.{ext}" for s in range(4)
                                                 for ext in ("json", "safetensors"))
    assert all(p.name.endswith(".tmp") for p in cache.dir.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------------- 5. per-token


@pytest.fixture(scope="module")
def per_token_cache(tmp_path_factory, model, tok, lists):
    root = tmp_path_factory.mktemp("per_token")
    cache = ReferenceCache.for_model(root, model, tok, lists, shard_size=SHARD, per_token=True)
    cache.ensure(model, lists, progress=False)
    return cache


def test_per_token_values_sum_to_the_sequence_values(per_token_cache, built, model, lists):
    cache = per_token_cache
    assert cache.key != built[0].key
    for i, t in enumerate(lists):
        per = cache.token_logps(i)
        assert [x.numel() for x in per] == [len(r) for r in t.response_ids]
        sums = [float(x.double().sum()) for x in per]
        _assert_close([sums], [cache.logps(i)], tol=1e-4)
    _assert_close(_values(cache, len(lists)), _values(built[0], len(lists)), tol=1e-5)
    for i in (0, 3, len(lists) - 1):  # against an unpadded forward, token by token
        for got, want in zip(cache.token_logps(i), naive_logps(model, lists[i])):
            assert torch.allclose(got.double(), want, atol=1e-5)


def test_per_token_values_survive_a_reload(per_token_cache, model, tok, lists):
    again = ReferenceCache.for_model(per_token_cache.root, model, tok, lists, shard_size=SHARD, per_token=True)
    stats = again.ensure(_NoForward(model), lists, progress=False)
    assert (stats.hits, stats.computed) == (len(lists), 0)
    for i in range(len(lists)):
        assert all(torch.equal(a, b) for a, b in zip(again.token_logps(i), per_token_cache.token_logps(i)))


def test_a_per_token_shard_without_its_token_values_is_detected(per_token_cache, tmp_path, model, tok, lists):
    root = tmp_path / "c"
    shutil.copytree(per_token_cache.dir, root / per_token_cache.key)
    data, meta = _shard(root / per_token_cache.key, 1)
    tensors = load_file(str(data))
    tensors["token_logps"] = tensors["token_logps"][:-1].contiguous()  # counts no longer add up
    _rewrite(data, meta, tensors)
    cache = ReferenceCache.for_model(root, model, tok, lists, shard_size=SHARD, per_token=True)
    stats = cache.ensure(model, lists, progress=False)
    assert (stats.corrupted_shards, stats.computed) == (1, SHARD)
    assert sum(x.numel() for x in cache.token_logps(SHARD)) == sum(len(r) for r in lists[SHARD].response_ids)


def test_token_logps_of_a_sequence_only_cache_raises(built):
    with pytest.raises(CacheError, match="per_token"):
        built[0].token_logps(0)


# ------------------------------------------------------------------------------------------------- 6. manifest


@pytest.mark.parametrize("change", ["one-list-dropped", "one-list-shorter"])
def test_ensure_with_other_list_sizes_raises(change, built_copy, model, tok, lists):
    root, _ = built_copy
    cache = _fresh(root, model, tok, lists)
    if change == "one-list-dropped":
        other = lists[:-1]
    else:
        t = lists[3]
        other = list(lists)
        other[3] = type(t)(t.prompt_ids, t.response_ids[:2], t.scores[:2], t.row)
    with pytest.raises(CacheError, match="not the ones"):
        cache.ensure(_NoForward(model), other, progress=False)


def test_a_manifest_with_other_components_raises(built_copy, model, tok, lists):
    root, d = built_copy
    path = d / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["components"]["settings"] = {"max_prompt_length": 1}
    path.write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="key collision"):
        _fresh(root, model, tok, lists).ensure(_NoForward(model), lists, progress=False)


def test_a_manifest_with_other_sizes_raises(built_copy, model, tok, lists):
    root, d = built_copy
    path = d / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["sizes"][0] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(CacheError):
        _fresh(root, model, tok, lists).ensure(_NoForward(model), lists, progress=False)


def test_an_unreadable_manifest_raises_cache_error(built_copy, model, tok, lists):
    root, d = built_copy
    (d / "manifest.json").write_text('{"key": ')
    with pytest.raises(CacheError):
        _fresh(root, model, tok, lists).ensure(_NoForward(model), lists, progress=False)


def test_ensure_with_same_sized_other_lists_is_refused(tmp_path, model, tok, examples, lists):
    ex = list(examples)
    e = ex[0]
    ex[0] = RankedExample(e.prompt, tuple(r + " other" for r in e.responses), e.scores, e.label_kind, e.row)
    other, _ = tokenize_examples(ex, tok)
    assert [len(t.response_ids) for t in other] == [len(t.response_ids) for t in lists] and other != lists
    cache = _fresh(tmp_path, model, tok, lists[:SHARD])
    with pytest.raises(CacheError):
        cache.ensure(model, other[:SHARD], progress=False)  # today: other's numbers are stored under lists' key


def test_ensure_with_another_model_is_refused(tmp_path, model, tok, lists):
    other = _perturb_one(model, "model.layers.0.mlp.up_proj.weight", 0.5)
    cache = _fresh(tmp_path, model, tok, lists[:SHARD])
    with pytest.raises(CacheError):
        cache.ensure(other, lists[:SHARD], progress=False)  # today: other's numbers are stored under model's key


def test_another_shard_size_reuses_the_entry(built_copy, model, tok, lists, monkeypatch):
    root, _ = built_copy
    monkeypatch.setattr(cache_mod, "score_lists", _fake_score_lists)  # today it recomputes everything
    stats = _fresh(root, model, tok, lists, shard_size=2 * SHARD).ensure(model, lists, progress=False)
    assert (stats.computed, stats.corrupted_shards) == (0, 0)


def test_ensure_hashes_the_weights_once_for_the_model_it_was_keyed_on(tmp_path, model, tok, lists, monkeypatch):
    calls = []
    real = cache_mod.weights_fingerprint
    monkeypatch.setattr(cache_mod, "weights_fingerprint", lambda m: calls.append(1) or real(m))
    m = copy.deepcopy(model)
    cache = _fresh(tmp_path / "a", m, tok, lists)
    cache.ensure(m, lists, progress=False)
    assert len(calls) == 1  # for_model only: same tensors, same versions, same list objects
    # the same model object changed in place (as an optimizer step does) is hashed again and refused
    cache = _fresh(tmp_path / "b", m, tok, lists)
    with torch.no_grad():
        next(m.parameters()).add_(1e-3)
    with pytest.raises(CacheError, match="not the one"):
        cache.ensure(m, lists, progress=False)
    assert len(calls) == 3
    # equal content in other list objects is accepted after a full data fingerprint
    cache = _fresh(tmp_path / "c", model, tok, lists)
    assert cache.ensure(model, [dataclasses.replace(t) for t in lists], progress=False).computed == len(lists)
