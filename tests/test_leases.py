"""align.leases: the one claim protocol (reference-cache shards, the SFT stage, a run's output directory)."""

import json
import os
import socket
import subprocess
import sys
import time

from align import leases


def _write(path, **holder):
    path.write_text(json.dumps({"host": socket.gethostname(), "time": time.time(), **holder}))


def test_a_lease_records_its_holder_and_the_takers_info(tmp_path):
    lease = leases.acquire(tmp_path / "l", info={"command": "align train x"})
    try:
        h = leases.holder(tmp_path / "l")
        assert h["pid"] == os.getpid() and h["command"] == "align train x" and h["start"] == leases.process_start(
            os.getpid())
        assert leases.alive(tmp_path / "l") and leases.acquire(tmp_path / "l") is None
    finally:
        lease.release()
    assert leases.holder(tmp_path / "l") is None


def test_a_dead_or_reused_pid_is_taken_over_and_reported(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for holder in ({"pid": gone.pid}, {"pid": os.getppid(), "start": "1"}):  # dead; alive but another process
        _write(tmp_path / "l", **holder)
        assert not leases.alive(tmp_path / "l")
        seen = []
        lease = leases.acquire(tmp_path / "l", taken_over=seen.append)
        assert lease is not None and seen and seen[0]["pid"] == holder["pid"]
        lease.release()


def test_a_live_holder_keeps_its_lease(tmp_path):
    _write(tmp_path / "l", pid=os.getppid(), start=leases.process_start(os.getppid()))
    assert leases.alive(tmp_path / "l") and leases.acquire(tmp_path / "l") is None


def test_another_hosts_lease_lives_while_renewed(tmp_path):
    _write(tmp_path / "l", pid=1, host="elsewhere")
    assert leases.alive(tmp_path / "l", ttl=60)
    old = time.time() - 120
    os.utime(tmp_path / "l", (old, old))
    assert not leases.alive(tmp_path / "l", ttl=60)
