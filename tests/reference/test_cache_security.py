"""A cache that cannot be forged: signed shards, the audit of cached values, the entry key's boundary, old formats,
``align cache verify``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import align.reference.store as store_mod
from align.cli import main
from align.data.tokenize import TokenizedList
from align.reference import CacheError, ReferenceIdentity, ReferenceStore, entry_key
from align.reference.shards import SECRET_FILE, read_header

from .conftest import cached


def _shards(d: Path) -> list[str]:
    return sorted(p.stem[len("shard-"):] for p in d.glob("shard-*.json"))


def _forge(d: Path, key: str, name: str, value: float = -0.001) -> None:
    """What an attacker without the secret does: set every value of a shard, then rewrite the sidecar's digest with
    the unkeyed formula (sha256 of cache key, shard name, bytes) and keep its verified-at record."""
    data = d / f"shard-{name}.safetensors"
    _, sections = read_header(data)
    _, shape, begin, end = sections["logps"]
    raw = bytearray(data.read_bytes())
    raw[begin:end] = np.full(shape, value, np.float32).tobytes()
    data.write_bytes(bytes(raw))
    h = hashlib.sha256(f"{key}/{name}\n".encode())
    h.update(data.read_bytes())
    meta = json.loads((d / f"shard-{name}.json").read_text())
    meta["digest"] = h.hexdigest()
    (d / f"shard-{name}.json").write_text(json.dumps(meta))


def test_the_secret_is_created_once_readable_by_writers_only(built):
    cache, _ = built
    path = cache.store.dir / SECRET_FILE
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o077 == (0o040 if cache.store.dir.stat().st_mode & 0o020 else 0)  # no one else reads it
    assert len(bytes.fromhex(path.read_text().strip())) == 32
    before = path.read_text()
    ReferenceStore(cache.store.root, cache.identity).open()
    assert path.read_text() == before


def test_a_forged_shard_is_rejected(built_copy, built, model, tok, lists):
    root, d = built_copy
    name = _shards(d)[1]
    _forge(d, built[0].store.key, name)
    with pytest.raises(CacheError, match=f"shard {name}.*checksum mismatch"):
        cached(root, model, tok, on_corrupt="error").prefetch(lists)
    cache = cached(root, model, tok)
    stats = cache.prefetch(lists)
    assert stats.corrupted_shards == 1
    assert cache.list_logps(lists) == built[0].list_logps(lists)  # the edited values were never read


def test_an_edit_in_place_with_its_mtime_restored_is_rehashed_and_rejected(built_copy, built, model, tok, lists):
    """The verified-at record skips rehashing an untouched file only: size and mtime can be faked, ctime not."""
    root, d = built_copy
    store = ReferenceStore(root, built[0].identity).open()
    assert store.find([entry_key(lists[0].prompt_ids, lists[0].response_ids[0])])  # verified (record refreshed)
    name = _shards(d)[0]
    data = d / f"shard-{name}.safetensors"
    st = data.stat()
    _, sections = read_header(data)
    begin = sections["logps"][2]
    with open(data, "r+b") as f:
        f.seek(begin)
        f.write(np.float32(-0.001).tobytes())
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data.stat().st_size == st.st_size and data.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(CacheError, match=f"shard {name}.*checksum mismatch"):
        cached(root, model, tok, on_corrupt="error").prefetch(lists)


def test_an_untouched_shard_is_not_rehashed(built_copy, built, lists, monkeypatch):
    root, _ = built_copy
    keys = [entry_key(t.prompt_ids, r) for t in lists for r in t.response_ids]
    first = ReferenceStore(root, built[0].identity).open()
    assert len(first.find(keys)) == len(keys)  # a copied directory: every shard is rehashed once, then recorded
    hashed = []
    real = store_mod.sign_file
    monkeypatch.setattr(store_mod, "sign_file", lambda *a: hashed.append(a[2]) or real(*a))
    again = ReferenceStore(root, built[0].identity).open()
    assert len(again.find(keys)) == len(keys) and hashed == []


def test_with_the_signature_check_disabled_the_audit_alone_stops_the_run(built_copy, built, model, tok, lists,
                                                                         monkeypatch):
    root, d = built_copy
    names = _shards(d)
    forged = names[2]
    _forge(d, built[0].store.key, forged)
    monkeypatch.setattr(store_mod, "record_holds", lambda *a: True)  # signature and value checks off
    store = ReferenceStore(root, built[0].identity).open()
    keys = [entry_key(t.prompt_ids, r) for t in lists for r in t.response_ids]
    assert {e.logp for k, e in store.find(keys).items()} >= {np.float32(-0.001)}  # the forgery is read...
    with pytest.raises(CacheError, match=f"audit.*{forged}"):  # ...and the audit stops the run, naming it
        cached(root, model, tok, audit_samples=len(names)).prefetch(lists)
    off = cached(root, model, tok, audit_samples=0).prefetch(lists)  # off only when asked
    assert off.audit == {"samples": 0, "checked": 0}


def test_the_audit_samples_spread_over_shards_and_is_recorded(built_copy, built, model, tok, lists):
    root, d = built_copy
    stats = cached(root, model, tok, audit_samples=5).prefetch(lists)
    audit = stats.to_dict()["audit"]
    assert audit["checked"] == 5 and audit["shards"] == 5 and audit["failed_shards"] == []
    assert audit["max_abs_diff"] <= audit["tolerance"]["abs"]
    everything = cached(root, model, tok, audit_samples=1000).prefetch(lists)
    assert everything.audit["checked"] == stats.hits and everything.audit["shards"] == len(_shards(d))


def test_a_run_records_the_audit_and_stops_on_a_forged_cache(small_model_dir, tmp_path, monkeypatch, capsys):
    from align.config import load_recipe
    from align.pipeline import run_training
    from tests.conftest import HH

    recipe = load_recipe("recipes/dpo_tiny.yaml", [
        f"model.name_or_path={small_model_dir}", f"data.train={HH}", "data.max_rows=24", "data.max_prompt_length=32",
        "data.max_response_length=16", "sft.enabled=false", "train.max_steps=1", "eval.enabled=false",
        f"reference.cache_dir={tmp_path / 'rc'}", "reference.shard_size=8"])
    first = run_training(recipe, tmp_path / "r1", progress=False)
    assert first["reference_cache"]["audit"] == {"samples": 64, "checked": 0}  # nothing was cached before
    second = run_training(recipe, tmp_path / "r2", progress=False)
    audit = json.loads((tmp_path / "r2" / "summary.json").read_text())["reference_cache"]["audit"]
    assert second["reference_cache"]["hits"] > 0 and audit["checked"] > 0 and audit["failed_shards"] == []
    d = tmp_path / "rc" / first["reference_cache"]["key"]
    forged = _shards(d)[0]
    _forge(d, d.name, forged)
    monkeypatch.setattr(store_mod, "record_holds", lambda *a: True)  # the signature check disabled
    assert main(["train", "recipes/dpo_tiny.yaml", "--output-dir", str(tmp_path / "r3"),
                 *[f"{k}={v}" for k, v in _flat(recipe).items()], "reference.audit_samples=1000"]) == 2
    err = capsys.readouterr().err
    assert "reference cache audit" in err and forged in err
    assert not (tmp_path / "r3" / "summary.json").exists()


def _flat(recipe) -> dict[str, str]:
    return {"model.name_or_path": recipe.model.name_or_path, "data.train": recipe.data.train, "data.max_rows": "24",
            "data.max_prompt_length": "32", "data.max_response_length": "16", "sft.enabled": "false",
            "train.max_steps": "1", "eval.enabled": "false", "reference.cache_dir": recipe.reference.cache_dir,
            "reference.shard_size": "8"}


def test_the_entry_key_holds_the_prompt_response_boundary(built, lists):
    """(prompt [a, b], response [c]) and (prompt [a], response [b, c]) are different entries."""
    a, b, c = 11, 12, 13
    assert entry_key([a, b], [c]) != entry_key([a], [b, c])
    # ... and a cache never serves one for the other
    t = lists[0]
    moved = TokenizedList(t.prompt_ids + t.response_ids[0][:1], (t.response_ids[0][1:],), (0.0,))
    cache = built[0]
    assert cache.store.find([entry_key(moved.prompt_ids, moved.response_ids[0])]) == {}


def test_an_old_format_cache_is_rebuilt_with_one_message(built_copy, built, model, tok, lists, caplog):
    root, d = built_copy
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["identity"]["format"] = 2
    old = root / ReferenceIdentity(**manifest["identity"]).key
    d.rename(old)
    (old / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="align.reference"):
        stats = cached(root, model, tok).prefetch(lists)
    said = [r.getMessage() for r in caplog.records if "format 2" in r.getMessage()]
    assert len(said) == 1 and old.name in said[0] and built[0].store.key in said[0]
    assert stats.hits == 0 and stats.computed > 0 and stats.corrupted_shards == 0
    assert main(["cache", "verify", "--cache-dir", str(root), old.name]) == 1  # not read: reported as such


def test_cache_verify_rechecks_every_shard(built_copy, built, capsys):
    root, d = built_copy
    assert main(["cache", "verify", "--cache-dir", str(root)]) == 0
    assert f"{d.name}: {len(_shards(d))}/{len(_shards(d))} shards verified" in capsys.readouterr().out
    name = _shards(d)[0]
    _forge(d, d.name, name)
    assert main(["cache", "verify", "--cache-dir", str(root), d.name, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)["caches"][0]
    assert [b["shard"] for b in out["bad"]] == [name] and "checksum" in out["bad"][0]["problem"]
    assert (d / f"shard-{name}.json").exists()  # verify reports, it does not remove
    assert main(["cache", "verify", "--cache-dir", str(root), "nosuchkey"]) == 2
