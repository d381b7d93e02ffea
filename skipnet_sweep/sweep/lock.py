"""One driver per sweep: a lock file in the sweep's storage, ``locks/<sweep id>.json``,
naming the driver that holds it (host, pid, start time).

Two drivers of one sweep would train every trial twice and log each point twice into the
same MLflow runs. The lock is taken before anything of the sweep starts and removed when its
driver ends, however it ends short of being killed. A lock that outlived its driver:

- on the same host, its pid no longer runs (or runs a process started after the lock was
  written): the next driver takes it over. Drivers taking over at once are one at a time
  (an OS lock on a file of this host), so exactly one of them does;
- from another host, its liveness cannot be checked: the driver refreshes the lock every
  ``REFRESH_S`` seconds, and one not refreshed for ``STALE_AFTER_S`` is reported as
  abandoned, with the command that clears it. A lock is never taken from another host: a
  driver cut off from the storage for a while may still be training.

The lock is created atomically on a local or NFS folder; object storage has no atomic
create through pyarrow, so a driver writes its lock there, waits ``SETTLE_S`` and reads it
back: of two drivers started within that time the later writer keeps it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from skipnet_sweep.sweep.storage import Storage

REFRESH_S = 60.0
STALE_AFTER_S = 600.0  # ten refreshes missed
SETTLE_S = 1.0  # object storage: between writing the lock and reading it back


class SweepLocked(RuntimeError):
    """Another driver holds the sweep's lock; the message is one line naming it."""


def lock_path(store: Storage, sweep_id: str) -> str | Path:
    return store.path("locks", f"{sweep_id}.json")


class SweepLock:
    """The lock of sweep ``sweep_id`` in ``store``, held from ``acquire`` to ``release``.

    Args:
        store: the sweep's storage.
        sweep_id: the sweep.
    """

    def __init__(self, store: Storage, sweep_id: str):
        self.store, self.sweep_id = store, sweep_id
        self.path = lock_path(store, sweep_id)
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            "refreshed": time.time(),
            "token": uuid.uuid4().hex,
        }
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def acquire(self) -> str | None:
        """Take the lock and keep it fresh until ``release``.

        Returns:
            a line saying whose lock was taken over, if one was left by a dead driver.

        Raises:
            SweepLocked: a live driver holds it, or one on another host that may be gone.
        """
        taken_over = None
        for _ in range(3):  # a lock released or taken over meanwhile: look again
            if self._create():
                break
            held = self._read()
            if held is None:
                continue
            if held["host"] != self.record["host"]:
                raise SweepLocked(self._other_host(held))
            if _runs(held["pid"], held["started"]):
                raise SweepLocked(f"{self._names(held)}; wait for it to end or stop it (Ctrl-C)")
            if self._take_over(held):
                taken_over = (
                    f"sweep {self.sweep_id}: took over the lock of driver pid {held['pid']} on "
                    f"this host (started {_when(held['started'])}), which no longer runs"
                )
                break
        else:
            raise SweepLocked(f"sweep {self.sweep_id}: its lock {self.path} keeps changing")
        self._refresher = threading.Thread(target=self._refresh, name="sweep-lock", daemon=True)
        self._refresher.start()
        return taken_over

    def release(self) -> None:
        """Stop refreshing and remove the lock if it is still this driver's."""
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
        # Storage away: the lock stays, and the next driver on this host takes it over.
        with contextlib.suppress(OSError, SweepLocked):
            held = self._read()
            if held is not None and held["token"] == self.record["token"]:
                self.store.remove(self.path)

    # --- helpers ------------------------------------------------------------------------

    def _text(self) -> str:
        return json.dumps(self.record)

    def _read(self) -> dict | None:
        """The lock's record, None if there is no lock. A record that cannot be read is a
        lock too: it is reported with how to remove it, never overwritten."""
        text = self.store.read_text(self.path)
        if text is None:
            return None
        try:
            held = json.loads(text)
            if isinstance(held, dict) and {"host", "pid", "started", "token"} <= held.keys():
                return held
        except ValueError:
            pass
        raise SweepLocked(
            f"sweep {self.sweep_id}: its lock {self.path} is unreadable; if no driver of this "
            f"sweep runs, delete it ({_delete_command(self.path)}) and run again"
        )

    def _mine(self) -> bool:
        """Whether the lock holds this driver's record after it settled (object storage:
        the later of two writers keeps it)."""
        if not self.store.is_local:
            time.sleep(SETTLE_S)
        held = self._read()
        return held is not None and held["token"] == self.record["token"]

    def _create(self) -> bool:
        return self.store.create_text(self.path, self._text()) and self._mine()

    def _take_over(self, held: dict) -> bool:
        """Replace ``held``, a dead driver's record, with this driver's, unless another
        driver of this host took it over first (they go one at a time)."""
        with _host_guard(str(Path(self.path).resolve()) if self.store.is_local else self.path):
            now = self._read()
            if now is None or now["token"] != held["token"]:
                return False
            self.store.write_text(self.path, self._text())
        return self._mine()

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            with contextlib.suppress(OSError, SweepLocked):  # storage away: try again later
                held = self._read()
                if held is None or held["token"] != self.record["token"]:
                    return  # removed by hand: not recreated
                self.record["refreshed"] = time.time()
                self.store.write_text(self.path, self._text())

    def _names(self, held: dict) -> str:
        return (
            f"sweep {self.sweep_id} is being run by driver pid {held['pid']} on host "
            f"{held['host']} (started {_when(held['started'])})"
        )

    def _other_host(self, held: dict) -> str:
        age = time.time() - float(held.get("refreshed", held["started"]))
        if age < STALE_AFTER_S:
            return f"{self._names(held)}; wait for it to end or stop it there"
        return (
            f"{self._names(held)}, whose lock was last refreshed {_when(time.time() - age)}, "
            f"over {STALE_AFTER_S / 60:.0f} min ago: if it no longer runs, delete the lock "
            f"({_delete_command(self.path)}) and run again"
        )


@contextlib.contextmanager
def hold(store: Storage, sweep_id: str) -> Iterator[SweepLock]:
    """``SweepLock`` held for the block; prints the line of a lock taken over."""
    lock = SweepLock(store, sweep_id)
    note = lock.acquire()
    if note:
        print(note)
    try:
        yield lock
    finally:
        lock.release()


def _runs(pid: int, started: float) -> bool:
    """Whether ``pid`` is a live process of this host that may have written a lock at
    ``started`` (a pid reused by a process started later is not that driver)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    begun = _process_start(int(pid))
    return begun is None or begun <= float(started) + 1.0


def _process_start(pid: int) -> float | None:
    """When ``pid`` started (epoch seconds) on Linux, from /proc; None elsewhere."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _host_guard(name: str) -> Iterator[None]:
    """An OS lock on a file of this host, named after ``name``, for the block; released by
    the kernel if the process dies."""
    guard = Path(
        tempfile.gettempdir(), f"skipnet-sweep-lock-{uuid.uuid5(uuid.NAMESPACE_URL, name)}"
    )
    with open(guard, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _when(t: float) -> str:
    return datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _delete_command(path: str | Path) -> str:
    if isinstance(path, Path):
        return f"rm {path}"
    scheme = str(path).split("://", 1)[0]
    return f"aws s3 rm {path}" if scheme == "s3" else f"delete {path}"
