"""Housekeeping of cache directories: what ``align cache list`` shows, what ``verify`` rechecks, what ``prune``
may remove. Each reads the directory as it finds it: one malformed file is reported and the rest goes on."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from align import leases
from align.reference.identity import FORMAT_VERSION, ReferenceIdentity
from align.reference.shards import SECRET_FILE

log = logging.getLogger("align.reference")


def _manifest(cache_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The manifest, or ``{}`` and why it could not be read."""
    try:
        manifest = json.loads((cache_dir / "manifest.json").read_text())
    except FileNotFoundError:
        return {}, "no manifest.json"
    except (OSError, ValueError) as e:
        return {}, f"manifest.json unreadable ({type(e).__name__})"
    if not isinstance(manifest, dict):
        return {}, "manifest.json is not an object"
    return manifest, None


def _sidecar(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A shard sidecar and its entry count checked, or None and why it is malformed."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"unreadable ({type(e).__name__})"
    if not isinstance(meta, dict):
        return None, f"not an object ({type(meta).__name__})"
    n = meta.get("entries")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return None, f"entries is {n!r}, not a count"
    return meta, None


def describe(cache_dir: Path) -> dict[str, Any]:
    """What ``align cache list`` shows of one store directory: manifest facts, size, entries, dates, whether a
    live run holds it, and every malformed shard sidecar (``malformed``: ``[{"shard", "problem"}]``)."""
    manifest, problem = _manifest(cache_dir)
    identity = manifest.get("identity") if isinstance(manifest.get("identity"), dict) else {}
    sidecars = sorted(cache_dir.glob("shard-*.json"))
    entries, sources, malformed = 0, set(), []
    for s in sidecars:
        meta, why = _sidecar(s)
        if meta is None:
            malformed.append({"shard": s.stem[len("shard-"):], "problem": why})
            continue
        entries += meta["entries"]
        if meta.get("source"):
            sources.add(str(meta["source"]))
    used = cache_dir / "last_used"
    size = 0
    for p in cache_dir.iterdir():
        try:
            size += p.stat().st_size if p.is_file() else 0
        except OSError:  # removed while listed
            continue
    created = manifest.get("created")
    return {"key": cache_dir.name, "model": manifest.get("model"), "tokenizer": manifest.get("tokenizer"),
            "per_token": identity.get("per_token"), "format": identity.get("format"),
            "created": created if isinstance(created, (int, float)) else None,
            "last_used": used.stat().st_mtime if used.exists() else None, "entries": entries,
            "shards": len(sidecars), "sources": sorted(sources), "bytes": size,
            "in_use": leases.any_alive(cache_dir, clean=False), "malformed": malformed,
            "manifest_problem": problem}


def verify_cache(root: Path, cache_dir: Path) -> dict[str, Any]:
    """Recheck every shard of one cache (full rehash and value checks, ignoring verified-at records).

    Returns ``{"key", "shards", "ok", "bad": [{"shard", "problem"}], "problem"}``; nothing is removed.
    """
    from align.reference.store import CacheError, ReferenceStore

    out: dict[str, Any] = {"key": cache_dir.name, "shards": 0, "ok": 0, "bad": [], "problem": None}
    manifest, problem = _manifest(cache_dir)
    ident = manifest.get("identity")
    if problem or not isinstance(ident, dict):
        out["problem"] = problem or "manifest.json has no identity"
        return out
    if ident.get("format") != FORMAT_VERSION:
        out["problem"] = (f"format {ident.get('format')} (this version reads format {FORMAT_VERSION}): not read; "
                          "its values are rebuilt as a new cache, remove it with `align cache prune`")
        return out
    try:
        identity = ReferenceIdentity(**ident)
    except TypeError as e:
        out["problem"] = f"manifest.json identity unusable ({e})"
        return out
    if identity.key != cache_dir.name:
        out["problem"] = "manifest.json names another cache key"
        return out
    if not (cache_dir / SECRET_FILE).is_file():
        out["problem"] = f"no {SECRET_FILE}: its shards cannot be verified (a run recomputes them)"
        return out
    store = ReferenceStore(root, identity)
    for sidecar in sorted(cache_dir.glob("shard-*.json")):
        name = sidecar.stem[len("shard-"):]
        out["shards"] += 1
        meta, why = _sidecar(sidecar)
        if meta is None:
            out["bad"].append({"shard": name, "problem": f"sidecar {why}"})
            continue
        try:
            result = store._verify(name, rehash=True)
        except CacheError as e:
            out["problem"] = str(e)
            return out
        if result is None:  # removed while this ran
            out["shards"] -= 1
        elif isinstance(result, str):
            out["bad"].append({"shard": name, "problem": result})
        else:
            out["ok"] += 1
    return out
