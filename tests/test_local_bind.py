"""A local Ray instance started by the driver listens on loopback only.

``driver.start_ray`` without an address starts the instance a sweep runs on. Here it runs
under its own ``RAY_TMPDIR`` (sweep_helpers) with a two-worker Ray Train job on it, the shape
of a shared SP job, and every TCP port the instance's processes listen on is read from
/proc while the job trains. One is open to the network and it is torch's, not Ray's: the
rank-0 worker's TCPStore (see the comment by ``ray.init`` in driver.py). The test names it
exactly, so any other listener off loopback fails it. Linux only (/proc).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sweep_helpers import (
    local_ray_env,
    patched_env,
    ray_processes,
    ray_tmpdir,
    wait_for,
    write_space,
)

from skipnet_sweep.sweep import load_space, make_plan
from skipnet_sweep.sweep.driver import _loopback_node, start_ray

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
WILDCARD = {"0.0.0.0", "::"}


def _listening_sockets() -> dict[str, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket of this machine."""
    out = {}
    for family, table in ((socket.AF_INET, "/proc/net/tcp"), (socket.AF_INET6, "/proc/net/tcp6")):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            ip_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(ip_hex)
            # The kernel prints each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            out[fields[9]] = (socket.inet_ntop(family, raw), int(port_hex, 16))
    return out


def listeners(pids) -> dict[int, set[tuple[str, int]]]:
    """pid -> the (address, port) pairs its open sockets listen on."""
    sockets = _listening_sockets()
    out: dict[int, set[tuple[str, int]]] = {}
    for pid in pids:
        found = set()
        with contextlib.suppress(OSError):  # the process ended meanwhile
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in sockets:
                        found.add(sockets[target[8:-1]])
        out[pid] = found
    return out


def test_loopback_node_sets_and_restores_the_node_address():
    import ray
    from ray._private import ray_constants, services

    if ray.is_initialized():
        pytest.skip("a Ray instance of this process decides the address")
    before = services.get_node_ip_address()
    saved = ray_constants.ENABLE_RAY_CLUSTER
    with _loopback_node():
        assert services.get_node_ip_address() == "127.0.0.1"
    assert ray_constants.ENABLE_RAY_CLUSTER is saved
    assert services.get_node_ip_address() == before


def test_local_instance_listens_on_loopback_only(tmp_path):
    import ray
    import ray.train
    from ray._private import ray_constants
    from ray.train.torch import TorchTrainer

    flag = ray_constants.ENABLE_RAY_CLUSTER
    plan = make_plan(load_space(str(write_space(tmp_path))))
    meet = tmp_path / "meet"
    meet.mkdir()

    def train_loop(config: dict) -> None:
        # Each rank says who it is and where rank 0's TCPStore listens, then waits until
        # the test has read the sockets (the store lives while the process group does).
        import json
        import os
        import time
        from pathlib import Path

        import ray.train

        rank = ray.train.get_context().get_world_rank()
        folder = Path(config["meet"])
        info = {"pid": os.getpid(), "master_port": int(os.environ["MASTER_PORT"])}
        (folder / f"rank{rank}.tmp").write_text(json.dumps(info))
        (folder / f"rank{rank}.tmp").rename(folder / f"rank{rank}.json")
        deadline = time.monotonic() + 300
        while not (folder / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        ray.train.report({"rank": rank})

    def observe(ray_dir: str) -> tuple[list[dict], dict[int, str], dict]:
        # While both workers wait in their loop: who they are, the instance's processes
        # (this driver included) and what each listens on; then let the workers finish.
        try:
            wait_for(
                lambda: (
                    (meet / "release").exists()  # the job ended first
                    or all((meet / f"rank{r}.json").exists() for r in (0, 1))
                ),
                timeout=300,
                what="both Ray Train workers in their training loop",
            )
            ranks = [json.loads((meet / f"rank{r}.json").read_text()) for r in (0, 1)]
            procs = {**ray_processes(ray_dir), os.getpid(): "the driver (this process)"}
            return ranks, procs, listeners(procs)
        finally:
            (meet / "release").touch()

    with (
        ray_tmpdir() as ray_dir,
        contextlib.chdir(ray_dir),
        patched_env(**local_ray_env(ray_dir)),
        ThreadPoolExecutor(1) as pool,
    ):
        try:
            start_ray(plan, None, num_cpus=2)
            assert ray.util.get_node_ip_address() == "127.0.0.1"
            assert ray_constants.ENABLE_RAY_CLUSTER is flag, "the flag is restored after ray.init"
            seen = pool.submit(observe, ray_dir)
            trainer = TorchTrainer(
                train_loop,
                train_loop_config={"meet": str(meet)},
                scaling_config=ray.train.ScalingConfig(
                    num_workers=2, resources_per_worker={"CPU": 0.5}
                ),
                run_config=ray.train.RunConfig(storage_path=str(tmp_path / "train"), name="bind"),
            )
            trainer.fit()  # in the main thread: Ray Train installs signal handlers
        finally:
            (meet / "release").touch()
            ray.shutdown()
        ranks, procs, found = seen.result(timeout=300)

    def pids_of(name: str) -> list[int]:
        return [p for p, cmd in procs.items() if name in cmd]

    # The servers the instance must have (so the check below cannot pass on an empty set).
    (gcs,) = pids_of("gcs_server")
    (raylet,) = pids_of("raylet/raylet")
    assert found[gcs], "the GCS listens"
    assert len(found[raylet]) >= 2, "the raylet's node manager and object manager listen"
    assert found[os.getpid()], "the driver's core worker listens"
    assert all(found[r["pid"]] for r in ranks), "every Ray Train worker listens"
    assert found[pids_of("RuntimeEnvAgent")[0]], "the runtime-env agent listens"

    off_loopback = {
        (pid, procs[pid][:60], addr, port)
        for pid, pairs in found.items()
        for addr, port in pairs
        if addr not in LOOPBACK
    }
    rank0 = ranks[0]
    store = {
        (pid, cmd, addr, port)
        for pid, cmd, addr, port in off_loopback
        if port == rank0["master_port"]
    }
    assert off_loopback - store == set(), "only torch's TCPStore may listen off loopback"
    # torch's TCPStore, on rank 0, on every interface: torch offers Ray Train no way to bind
    # it to loopback (driver.py, by ``ray.init``). If torch ever does, this tells us.
    assert {(pid, addr) for pid, _, addr, _ in store} <= {(rank0["pid"], a) for a in WILDCARD}
    assert len(store) == 1, f"rank 0's TCPStore on port {rank0['master_port']}: {store}"
