"""Stops a local Ray instance's processes once the driver that started it is gone.

``ray.shutdown()`` stops a local instance when the driver exits normally; a driver killed
with SIGKILL cannot, and Ray's agents (dashboard and runtime-env agents, idle workers)
outlive it for minutes. The driver starts this watcher in its own session:

    python -m skipnet_sweep.sweep.reaper DRIVER_PID SESSION_DIR

While the driver lives it records the instance's processes (those naming the session
folder, and their descendants, with their start times so a reused PID is never hit); when
the driver is gone it stops the recorded ones still alive (SIGTERM, then SIGKILL). It only
ever signals processes of that one instance. Linux only (/proc).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

POLL_S = 1.0


def _table() -> dict[int, tuple[int, str, bytes]]:
    """pid -> (parent pid, start time, command line) of the processes we may read."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmd = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (int(fields[1]), fields[19], cmd)
    return out


def members(session_dir: str, table: dict) -> dict[int, str]:
    """pid -> start time of the instance's processes: those whose command line names the
    session folder, and all their descendants."""
    mark = session_dir.encode()
    found = {pid for pid, (_, _, cmd) in table.items() if mark in cmd}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    found.discard(os.getpid())
    return {pid: table[pid][1] for pid in found}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return (
        Path(f"/proc/{pid}/stat").exists()
        and " Z " not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
    )


def stop(recorded: dict[int, str], grace: float = 5.0) -> None:
    """SIGTERM the recorded processes still alive (same PID and start time), then SIGKILL
    what is left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        table = _table()
        left = [p for p, start in recorded.items() if p in table and table[p][1] == start]
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = [p for p in left if _alive(p)]
        if not left:
            return


def watch(driver: int, session_dir: str) -> None:
    """Record the instance's processes while ``driver`` lives; stop them when it is gone."""
    recorded: dict[int, str] = {}
    while _alive(driver):
        recorded.update(members(session_dir, _table()))
        time.sleep(POLL_S)
    recorded.update(members(session_dir, _table()))
    stop(recorded)


def start(session_dir: str) -> None:
    """Start the watcher for this process's local Ray instance (no-op off Linux)."""
    import subprocess

    if not sys.platform.startswith("linux"):
        return
    subprocess.Popen(
        [sys.executable, "-m", "skipnet_sweep.sweep.reaper", str(os.getpid()), session_dir],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
