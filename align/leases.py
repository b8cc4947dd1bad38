"""Leases: files that say "a live process is using this", renewed while it runs, dead soon after it stops.

One primitive for every claim in the project (a reference-cache shard being computed, an SFT stage being trained)
and for the use leases a run holds on its reference cache (``align cache prune`` skips a cache with a live one).

A lease file holds its holder's pid, host, process start time and a random token (and what the taker adds, e.g.
the command of a run holding its output directory); its modification time is its last renewal. A background thread
of the holding process touches every lease it holds each ``ttl / 4`` seconds. A lease is alive while its file exists
and:

- its holder is on this host and its process is running, the same process that took it (a killed holder's lease
  is dead at once, also when its pid has been reused), or
- its holder is on another host (a shared file system) and it was renewed less than ``ttl`` seconds ago; clocks of
  the hosts must agree to well within ``ttl``.

This module imports nothing from ``align``: it is a leaf that the store, the SFT stage, a run's output directory lock
and the CLI all use.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Seconds without renewal after which another host's lease is dead (``ALIGN_LEASE_TTL``; raise it where the
# clocks of the hosts sharing a cache disagree by more than a few seconds).
TTL = float(os.environ.get("ALIGN_LEASE_TTL", 60))


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs on this host (one we may not signal counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux; None elsewhere), to tell a reused pid
    apart from the process that took a lease."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def holder(path: str | os.PathLike) -> dict | None:
    """What the lease file at ``path`` records of its holder (pid, host, start, token, time and the taker's
    additions); None if there is no such file; ``{}`` if it is unreadable (being written)."""
    return _holder(Path(path))


def _holder(path: Path) -> dict | None:
    """The holder recorded in ``path``; None if it is gone; ``{}`` if it is unreadable (being written)."""
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def alive(path: str | os.PathLike, ttl: float | None = None) -> bool:
    """True while the lease at ``path`` is held by a live holder (see the module docstring)."""
    ttl = TTL if ttl is None else ttl
    path = Path(path)
    holder = _holder(path)
    if holder is None:
        return False
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if not holder:  # being written right now, or garbage: alive only while fresh
        return age < ttl
    if holder.get("host") == socket.gethostname():
        try:
            pid = int(holder.get("pid", -1))
        except (TypeError, ValueError, OverflowError):
            return age < ttl
        if not pid_alive(pid):
            return False
        recorded, now = holder.get("start"), process_start(pid)
        return recorded is None or now is None or recorded == now
    return age < ttl


class Lease:
    """A lease this process holds at ``path``; renewed in the background until :meth:`release`."""

    def __init__(self, path: Path, token: str):
        self.path, self.token = path, token

    def held(self) -> bool:
        """True while the file at :attr:`path` is still this lease (not taken over or removed)."""
        holder = _holder(self.path)
        return bool(holder) and holder.get("token") == self.token

    def renew(self) -> None:
        """Mark the lease alive now."""
        try:
            os.utime(self.path)
        except OSError:
            pass

    def release(self) -> None:
        """Give the lease up (removes the file if it is still ours)."""
        _RENEWER.forget(self)
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _write_new(path: Path, info: dict[str, Any] | None = None) -> Lease | None:
    token = secrets.token_hex(8)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start": process_start(os.getpid()), "token": token,
          "time": time.time()}
    with os.fdopen(fd, "w") as f:
        json.dump({**(info or {}), **me}, f)
    lease = Lease(path, token)
    _RENEWER.add(lease)
    return lease


def acquire(path: str | os.PathLike, ttl: float | None = None, *, info: dict[str, Any] | None = None,
            taken_over: Callable[[dict], None] | None = None) -> Lease | None:
    """Take the exclusive lease at ``path``, recording ``info`` beside the holder; None while a live holder has it.
    A dead holder's lease is taken over (``taken_over`` is called with what it recorded)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        lease = _write_new(path, info)
        if lease is not None:
            return lease
        if alive(path, ttl):
            return None
        stale = _holder(path)
        # Move the dead lease aside under a unique name; only one taker wins the rename. If what was moved is not
        # the dead lease judged above (another taker replaced it meanwhile), it is put back.
        tomb = path.with_name(f".{path.name}.{secrets.token_hex(4)}.dead")
        try:
            os.rename(path, tomb)
        except FileNotFoundError:
            continue
        moved = _holder(tomb)
        if stale and moved and moved.get("token") != stale.get("token"):
            try:
                os.link(tomb, path)
            except OSError:
                pass
            tomb.unlink(missing_ok=True)
            return None
        tomb.unlink(missing_ok=True)
        if taken_over is not None and moved:
            taken_over(moved)
    return None


def share(directory: str | os.PathLike, prefix: str = "user") -> Lease:
    """A shared (non-exclusive) lease in ``directory``: one file per holder, ``<prefix>-<host>-<pid>-<token>``."""
    directory = Path(directory)
    name = f"{prefix}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    lease = _write_new(directory / name)
    assert lease is not None  # a fresh random name
    return lease


def any_alive(directory: str | os.PathLike, prefix: str = "user", ttl: float | None = None, *,
              clean: bool = True) -> bool:
    """True if ``directory`` holds a live shared lease; dead ones are removed when ``clean``."""
    found = False
    for p in Path(directory).glob(f"{prefix}-*"):
        if alive(p, ttl):
            found = True
        elif clean:
            p.unlink(missing_ok=True)
    return found


class _Renewer:
    """One daemon thread per process renewing every lease the process holds; leases are removed at exit."""

    def __init__(self) -> None:
        self.leases: dict[int, Lease] = {}
        self.lock = threading.RLock()  # a store collected while this is held releases its lease from here
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()
        self.pid = os.getpid()

    def add(self, lease: Lease) -> None:
        with self.lock:
            if self.pid != os.getpid():  # a forked child holds none of its parent's leases
                self.leases, self.thread, self.pid = {}, None, os.getpid()
            self.leases[id(lease)] = lease
            self.wake.set()  # renew on the current TTL from now on
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="align-leases", daemon=True)
                self.thread.start()

    def forget(self, lease: Lease) -> None:
        with self.lock:
            self.leases.pop(id(lease), None)

    def _run(self) -> None:
        while True:
            self.wake.wait(max(TTL / 4, 0.05))
            self.wake.clear()
            with self.lock:
                held = list(self.leases.values())
            for lease in held:
                lease.renew()

    def release_all(self) -> None:
        if self.pid != os.getpid():
            return
        with self.lock:
            held = list(self.leases.values())
        for lease in held:
            lease.release()


_RENEWER = _Renewer()
atexit.register(_RENEWER.release_all)
