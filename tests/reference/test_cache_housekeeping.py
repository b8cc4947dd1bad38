"""Leases (shard claims, a run's hold on its cache, the SFT stage's claim), ``align cache list`` on malformed
caches, ``prune`` next to a live run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from align import leases
from align.cli import main
from align.reference import ReferenceStore, entry_key

from .conftest import cached


def _foreign(path: Path, age: float) -> None:
    """A lease written by a builder on another host, last renewed ``age`` seconds ago."""
    path.write_text(json.dumps({"pid": 4242, "host": "another-node", "token": "t0", "time": time.time() - age}))
    os.utime(path, (time.time() - age, time.time() - age))


def test_a_lease_is_renewed_while_held_and_dead_soon_after_it_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(leases, "TTL", 0.4)
    lease = leases.acquire(tmp_path / "claim-x")
    assert lease is not None and leases.acquire(tmp_path / "claim-x") is None
    monkeypatch.setattr(leases.socket, "gethostname", lambda: "elsewhere")  # seen from another host: by age only
    time.sleep(1.2)  # three lease times: alive only because the holder renews it
    assert leases.alive(lease.path)
    leases._RENEWER.forget(lease)  # the holder stops renewing (its host died)
    time.sleep(0.6)
    assert not leases.alive(lease.path)
    taken = leases.acquire(tmp_path / "claim-x")
    assert taken is not None and not lease.held()
    lease.release()  # not ours any more: left alone
    assert taken.held()
    taken.release()
    assert not (tmp_path / "claim-x").exists()


def test_a_stale_claim_of_a_dead_builder_on_another_host_is_taken_over_within_the_lease_time(
        tmp_path, model, tok, lists, monkeypatch):
    monkeypatch.setattr(leases, "TTL", 2.0)
    cache = cached(tmp_path, model, tok, shard_size=1000)
    keys = [[entry_key(t.prompt_ids, r) for r in t.response_ids] for t in lists]
    chunk = cache._chunks(lists, keys, {k for row in keys for k in row})[0]
    cache.store.dir.mkdir(parents=True)
    claim = cache.store.dir / f"claim-{chunk.name}"
    _foreign(claim, age=0.0)  # just renewed: alive, whatever its pid means here
    assert cache.store.claim_alive(chunk.name) and not cache.store.claim(chunk.name)
    t0 = time.perf_counter()
    stats = cache.prefetch(lists)  # waits for the claim; nobody renews it; taken over once the lease time passes
    waited = time.perf_counter() - t0
    assert stats.computed_here == stats.computed == len(chunk.keys) and 1.5 < waited < 2.0 + 5.0
    assert not claim.exists()
    _foreign(claim, age=leases.TTL + 1)  # an old one is taken at once
    assert not cache.store.claim_alive(chunk.name) and cache.store.claim(chunk.name)
    cache.store.release(chunk.name)


def _unheld(built_copy) -> tuple[Path, Path]:
    """The copied cache without the lease of the module's own build (this process) that came with it."""
    root, d = built_copy
    for p in d.glob("user-*"):
        p.unlink()
    return root, d


def test_prune_keeps_a_cache_a_live_run_holds(built_copy, capsys):
    root, d = _unheld(built_copy)
    child = subprocess.Popen([sys.executable, "-c", (
        "import json, sys, time\n"
        "from align.reference import ReferenceIdentity, ReferenceStore\n"
        f"ident = ReferenceIdentity(**json.load(open({str(d / 'manifest.json')!r}))['identity'])\n"
        f"store = ReferenceStore({str(root)!r}, ident).open()\n"
        "print('open', flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert child.stdout.readline().strip() == "open"
        assert main(["cache", "list", "--cache-dir", str(root), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["caches"][0]["in_use"] is True
        assert main(["cache", "prune", "--cache-dir", str(root), "--older-than", "0"]) == 0
        assert f"kept {d.name}" in capsys.readouterr().out and d.exists()
    finally:
        child.kill()
        child.wait()
    assert main(["cache", "prune", "--cache-dir", str(root), "--older-than", "0"]) == 0  # its run is gone
    assert f"removed {d.name}" in capsys.readouterr().out and not d.exists()


def test_a_store_holds_its_cache_until_closed(built_copy, built):
    root, d = _unheld(built_copy)
    store = ReferenceStore(root, built[0].identity).open()
    assert leases.any_alive(d)
    store.close()
    assert not leases.any_alive(d)
    _foreign(d / "user-another-node-4242-t0", age=leases.TTL + 5)  # a run on another host, dead for a while
    assert not leases.any_alive(d)


_MALFORMED = {"list": "[]", "entries-string": '{"entries": "x"}', "entries-bool": '{"entries": true}',
              "entries-negative": '{"entries": -1}', "entries-float": '{"entries": 1.5}', "no-entries": "{}",
              "null": "null", "string": '"shard"', "not-json": "{", "binary": b"\xff\xfe\x00"}


def test_cache_list_reports_every_malformed_sidecar_and_goes_on(built_copy, model, tok, lists, capsys):
    root, d = built_copy
    good = sum(json.loads(p.read_text())["entries"] for p in d.glob("shard-*.json"))
    for kind, text in _MALFORMED.items():
        p = d / f"shard-bad{kind}.json"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
    (d / "shard-baddir.json").mkdir()  # not even a file
    other = root / ("0" * 32)
    other.mkdir()
    (other / "manifest.json").write_text("[]")
    assert main(["cache", "list", "--cache-dir", str(root), "--json"]) == 0
    listed = {c["key"]: c for c in json.loads(capsys.readouterr().out)["caches"]}
    c = listed[d.name]
    assert c["entries"] == good
    assert {m["shard"] for m in c["malformed"]} == {f"bad{k}" for k in _MALFORMED} | {"baddir"}
    assert listed["0" * 32]["manifest_problem"] == "manifest.json is not an object"
    assert main(["cache", "list", "--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "| key | model |" in out and f"{d.name}: shard badlist: malformed sidecar (not an object (list))" in out
    assert main(["cache", "verify", "--cache-dir", str(root), d.name]) == 1
    assert "shard badentries-string: sidecar entries is 'x', not a count" in capsys.readouterr().out
    (d / "shard-baddir.json").rmdir()
    stats = cached(root, model, tok).prefetch(lists)  # a run reads the good shards and drops the bad ones
    assert stats.computed == 0 and stats.corrupted_shards == len(_MALFORMED)


def test_the_sft_stage_claim_is_a_lease(tmp_path, monkeypatch):
    from align.sft import _claim

    monkeypatch.setattr(leases, "TTL", 1.0)
    path, out = tmp_path / ".sft-k.claim", tmp_path / "sft-k"
    _foreign(path, age=5.0)  # a killed run on another host: taken over
    with _claim(path, out):
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(TimeoutError):  # held by a live process (this one): another claimant waits
            _wait_for_claim(path, out, 1.5)
    assert not path.exists()


def _wait_for_claim(path: Path, out: Path, seconds: float) -> None:
    import threading

    from align.sft import _claim

    done = threading.Event()

    def take():
        with _claim(path, out):
            done.set()

    th = threading.Thread(target=take, daemon=True)
    th.start()
    if not done.wait(seconds):
        out.mkdir()
        (out / "config.json").write_text("{}")  # the holder finished: the waiter stops waiting
        th.join(5)
        raise TimeoutError
