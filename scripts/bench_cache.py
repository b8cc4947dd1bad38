"""Open + lookup cost of the reference cache as it grows: synthetic caches of 100k, 1M and 10M entries (and
per-token ones), a 100k-entry run looked up in each, in a fresh process per case; against the store of commit
89f2bdb (before the key index), checked out from git into a temporary directory at run time.

    python scripts/bench_cache.py [--quick] [--output FILE] [--baseline-max N] [--work DIR]

``--quick`` stops at 1M entries. Shards (4,096 entries each, like a long build's) are written directly with numpy,
signed like the store signs them; the old store gets the same data files (hard links) with its own sidecars.
Each result: ``entries``, ``open_lookup_s`` and ``rss_delta_mb`` (peak RSS over the process's state after imports
and after reading the run's keys) of the run whose entries are spread over the whole cache (the worst case),
``contiguous_*`` of a run whose entries fill consecutive shards (a rerun of the same data), ``baseline_*`` of the
old store (the scattered run; up to ``--baseline-max`` entries: it loads the whole cache), and ``index_build_s``
(the one-time indexing of a cache that has none).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARD = 4096
RUN = 100_000
OLD_COMMIT = "89f2bdb"


def _identity(per_token: bool):
    from align.reference import ReferenceIdentity

    return ReferenceIdentity(weights="bench", config="bench", tokenizer="bench", dtype="torch.float32",
                             per_token=per_token)


def build(root: Path, entries: int, per_token: bool, seed: int = 0) -> tuple[np.ndarray, float]:
    """A signed cache of ``entries`` random keys under ``root``; returns every key ``[n, 16]`` and seconds taken."""
    from align.reference.shards import cache_secret
    from align.reference.store import ReferenceStore, write_shard

    t0 = time.perf_counter()
    identity = _identity(per_token)
    store = ReferenceStore(root, identity, info={"model": "synthetic"})
    store._check_manifest()
    secret = cache_secret(store.dir)
    rng = np.random.default_rng(seed)
    out = np.empty((entries, 16), np.uint8)
    for start in range(0, entries, SHARD):
        n = min(SHARD, entries - start)
        keys = rng.integers(0, 256, (n, 16), dtype=np.uint8)
        order = np.lexsort(tuple(keys[:, i] for i in range(15, -1, -1)))
        keys = keys[order]
        out[start : start + n] = keys
        logps = -rng.random(n, dtype=np.float32) * 100
        tokens = counts = None
        if per_token:
            counts = rng.integers(4, 29, n).astype(np.int64)  # 16 tokens a response on average
            tokens = -rng.random(int(counts.sum()), dtype=np.float32)
        write_shard(store.dir, store.key, secret, keys, logps, tokens, counts, source="synthetic")
    store.close()
    return out, time.perf_counter() - t0


def old_copy(root: Path, old_root: Path, per_token: bool, old_store_py: Path) -> None:
    """The same data files under ``old_root`` with sidecars the old store reads (its unkeyed digest)."""
    old = _load_old(old_store_py)
    identity = _identity(per_token)
    src, dst = root / identity.key, old_root / identity.key
    dst.mkdir(parents=True)
    shutil.copy(src / "manifest.json", dst / "manifest.json")
    for data in src.glob("shard-*.safetensors"):
        name = data.stem[len("shard-"):]
        os.link(data, dst / data.name)
        meta = json.loads((src / f"shard-{name}.json").read_text())
        meta = {"digest": old._digest(identity.key, name, dst / data.name), "entries": meta["entries"],
                "created": meta["created"], "source": meta["source"]}
        (dst / f"shard-{name}.json").write_text(json.dumps(meta))


def _load_old(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("old_reference_store", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(which: str, root: str, keys_file: str, per_token: bool, old_store_py: str | None) -> dict:
    """In this (fresh) process: open the store under ``root`` and look up the keys in ``keys_file``."""
    import torch  # noqa: F401 (both stores import it: part of the baseline, not of the measure)

    from align.reference.store import ReferenceStore

    keys_np = np.load(keys_file)
    keys = [bytes(k) for k in keys_np]
    identity = _identity(per_token)
    store_cls = _load_old(Path(old_store_py)).ReferenceStore if which == "old" else ReferenceStore
    try:  # start the peak over from here: what the open and the lookups add
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    base = _rss_mb()
    t0 = time.perf_counter()
    store = store_cls(root, identity).open()
    if which == "old":
        found = {k: e for k in keys if (e := store.get(k)) is not None}
    else:
        found = store.find(keys)
    seconds = time.perf_counter() - t0
    assert len(found) == len(keys), (len(found), len(keys))
    return {"seconds": round(seconds, 3), "rss_delta_mb": round(_peak_mb() - base, 1)}


def _fresh(which: str, root: Path, keys: np.ndarray, per_token: bool, old_store_py: Path, work: Path) -> dict:
    path = work / f"keys-{os.getpid()}.npy"
    np.save(path, keys)
    cmd = [sys.executable, __file__, "--measure", which, str(root), str(path), str(int(per_token)), str(old_store_py)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {which} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def case(entries: int, per_token: bool, work: Path, old_store_py: Path, baseline_max: int) -> dict:
    from align.reference.store import ReferenceStore

    root, old_root = work / f"new-{entries}-{int(per_token)}", work / f"old-{entries}-{int(per_token)}"
    all_keys, build_s = build(root, entries, per_token)
    run = min(RUN, entries)
    rng = np.random.default_rng(1)
    scattered = all_keys[np.sort(rng.choice(entries, run, replace=False))]
    contiguous = all_keys[entries - run :]  # the last shards written: one earlier run's entries
    with_baseline = entries <= baseline_max
    if with_baseline:
        old_copy(root, old_root, per_token, old_store_py)
    t0 = time.perf_counter()
    ReferenceStore(root, _identity(per_token)).open().close()  # the one-time index of a cache that has none
    index_s = time.perf_counter() - t0
    new = _fresh("new", root, scattered, per_token, old_store_py, work)
    cont = _fresh("new", root, contiguous, per_token, old_store_py, work)
    out = {"entries": entries, "per_token": per_token, "run_entries": run, "open_lookup_s": new["seconds"],
           "rss_delta_mb": new["rss_delta_mb"], "contiguous_open_lookup_s": cont["seconds"],
           "contiguous_rss_delta_mb": cont["rss_delta_mb"], "build_s": round(build_s, 1),
           "index_build_s": round(index_s, 2), "baseline_open_lookup_s": None, "baseline_rss_delta_mb": None}
    if with_baseline:
        old = _fresh("old", old_root, scattered, per_token, old_store_py, work)
        out["baseline_open_lookup_s"], out["baseline_rss_delta_mb"] = old["seconds"], old["rss_delta_mb"]
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(old_root, ignore_errors=True)
    print(json.dumps(out), flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="stop at 1M entries")
    p.add_argument("--output", help="write the results as JSON here")
    p.add_argument("--baseline-max", type=int, default=1_000_000,
                   help="largest cache the old store is measured on (it loads all of it: ~2 GB at 10M)")
    p.add_argument("--work", help="where the synthetic caches go (default: a temporary directory)")
    p.add_argument("--measure", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.measure:
        which, root, keys, per_token, old = a.measure
        print(json.dumps(measure(which, root, keys, per_token == "1", old)))
        return 0
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_cache-"))
    work.mkdir(parents=True, exist_ok=True)
    old_store_py = work / "old_store.py"
    old_store_py.write_text(subprocess.run(["git", "show", f"{OLD_COMMIT}:align/reference/store.py"], cwd=ROOT,
                                           check=True, capture_output=True, text=True).stdout)
    sizes = [100_000, 1_000_000] + ([] if a.quick else [10_000_000])
    cases = [(n, False) for n in sizes] + [(n, True) for n in sizes[:2]]
    try:
        results = [case(n, per_token, work, old_store_py, a.baseline_max) for n, per_token in cases]
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    report = {"results": results, "shard_entries": SHARD, "run_entries": RUN, "baseline": f"store of {OLD_COMMIT}",
              "load_average": list(os.getloadavg()), "cpus": os.cpu_count(),
              "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    if a.output:
        Path(a.output).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
