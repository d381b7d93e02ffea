"""One driver per sweep (``sweep/lock.py``): a second driver of a sweep is refused in one
line naming the first, before anything starts; a lock left by a dead driver of this host is
taken over by exactly one of the drivers that find it; one from another host is never taken,
and reported with how to clear it once it is no longer refreshed. On a local folder and on
object storage (moto's S3 server, conftest.py). No Ray starts here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import BUCKET
from sweep_helpers import cli, files_under, patched_env, write_space

from skipnet_sweep.sweep import load_space, make_plan
from skipnet_sweep.sweep import lock as L
from skipnet_sweep.sweep.storage import Storage

HOST = socket.gethostname()


def dead_pid() -> int:
    """The pid of a process of this host that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def plant(store: Storage, sweep_id: str, **record) -> dict:
    """A lock record as another driver would have left it."""
    now = time.time()
    full = {"host": HOST, "started": now, "refreshed": now, "token": "theirs", **record}
    store.write_text(L.lock_path(store, sweep_id), json.dumps(full))
    return full


def held(store: Storage, sweep_id: str) -> dict | None:
    text = store.read_text(L.lock_path(store, sweep_id))
    return None if text is None else json.loads(text)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch):
    monkeypatch.setattr(L, "SETTLE_S", 0.05)
    if request.param == "local":
        yield Storage(tmp_path / "runs")
        return
    env = request.getfixturevalue("s3")
    with patched_env(**env):
        yield Storage(f"s3://{BUCKET}/locks-{tmp_path.name}")


def test_a_second_driver_is_refused_naming_the_first_until_it_ends(store):
    first = L.SweepLock(store, "sw1")
    assert first.acquire() is None
    with pytest.raises(L.SweepLocked) as refused:
        L.SweepLock(store, "sw1").acquire()
    line = str(refused.value)
    assert "\n" not in line and f"pid {os.getpid()} on host {HOST}" in line
    assert time.strftime("%Y-%m-%d", time.gmtime()) in line  # its start time
    assert L.SweepLock(store, "other-sweep").acquire() is None  # another sweep: its own lock
    first.release()
    assert held(store, "sw1") is None
    second = L.SweepLock(store, "sw1")
    assert second.acquire() is None
    second.release()


def test_the_lock_of_a_dead_driver_of_this_host_is_taken_over(store):
    gone = dead_pid()
    plant(store, "sw2", pid=gone, started=time.time() - 60)
    lock = L.SweepLock(store, "sw2")
    note = lock.acquire()
    assert note is not None and f"pid {gone}" in note and "no longer runs" in note
    assert held(store, "sw2")["token"] == lock.record["token"]
    lock.release()


def test_a_reused_pid_does_not_keep_a_dead_drivers_lock(tmp_path):
    store = Storage(tmp_path)
    # A live process that started after the lock was written cannot be its driver.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            plant(store, "sw3", pid=other.pid, started=time.time() - 3600)
            assert "no longer runs" in L.SweepLock(store, "sw3").acquire()
        finally:
            other.kill()


def test_drivers_taking_over_at_once_leave_one_holder(tmp_path):
    store = Storage(tmp_path)
    plant(store, "sw4", pid=dead_pid())
    locks = [L.SweepLock(store, "sw4") for _ in range(6)]
    won, refused = [], []
    start = threading.Barrier(len(locks))

    def race(lock):
        start.wait()
        try:
            lock.acquire()
            won.append(lock)
        except L.SweepLocked:
            refused.append(lock)

    threads = [threading.Thread(target=race, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 5
    assert held(store, "sw4")["token"] == won[0].record["token"]
    won[0].release()


def test_a_lock_from_another_host_is_never_taken(store):
    plant(store, "sw5", host="elsewhere", pid=1)
    with pytest.raises(L.SweepLocked) as live:
        L.SweepLock(store, "sw5").acquire()
    assert "pid 1 on host elsewhere" in str(live.value) and "delete" not in str(live.value)
    old = time.time() - 2 * 3600
    plant(store, "sw5", host="elsewhere", pid=1, started=old, refreshed=old)
    with pytest.raises(L.SweepLocked) as stale:
        L.SweepLock(store, "sw5").acquire()
    path = L.lock_path(store, "sw5")
    rm = f"rm {path}" if store.is_local else f"aws s3 rm {path}"
    assert "over 10 min ago" in str(stale.value) and f"({rm})" in str(stale.value)
    assert held(store, "sw5")["token"] == "theirs"


def test_a_held_lock_is_refreshed(tmp_path, monkeypatch):
    monkeypatch.setattr(L, "REFRESH_S", 0.05)
    store = Storage(tmp_path)
    lock = L.SweepLock(store, "sw6")
    lock.acquire()
    first = held(store, "sw6")["refreshed"]
    time.sleep(0.3)
    assert held(store, "sw6")["refreshed"] > first
    lock.release()


def test_the_cli_refuses_a_second_driver_before_anything_starts(tmp_path):
    space = write_space(tmp_path)
    plan = make_plan(load_space(str(space)))
    before = files_under(tmp_path)
    with L.hold(plan.store, plan.sweep_id):
        lock_file = Path(L.lock_path(plan.store, plan.sweep_id))
        code, out, err = cli(["--space", str(space), "--num-cpus", "2"])
    assert code == 2, out + err
    assert err.count("\n") == 1 and err.startswith(f"error: sweep {plan.sweep_id} is being run")
    assert f"pid {os.getpid()} on host {HOST}" in err
    # No Ray, no MLflow store, no log: only the lock the first driver held was written.
    lock_dirs = {str(p.relative_to(tmp_path)) for p in (lock_file.parent, lock_file.parent.parent)}
    assert files_under(tmp_path) - before == lock_dirs
