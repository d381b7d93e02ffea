"""A sweep on a two-node Ray cluster on this machine (loopback), with shared storage.

The head node takes the machine's address and the second node 127.0.0.2 (also loopback on
Linux, and not rewritten by Ray as 127.0.0.1 would be), so the node each trial ran on is
visible in Tune's ``node_ip``. The cluster is private to the test: its own ``--temp-dir`` and
``RAY_TMPDIR`` (a plain ``ray.init()`` elsewhere never finds it, and its processes are
found by that variable), its own token (``RAY_AUTH_TOKEN``), a free port. It is torn down
by stopping exactly those processes; ``ray stop`` is never used, as it would stop every Ray
instance on the machine. The driver runs as a subprocess so its Ray client state (token,
config) is its own.

The SP job is data-parallel (two Ray Train workers, one per node), and one of its workers is
killed with SIGKILL once the job has evaluated: Ray Train replaces the worker group and the
job goes on from its last checkpoint, within the same driver.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sweep_helpers import (
    Mlflow,
    free_port,
    migrated_store,
    ray_processes,
    ray_tmpdir,
    stop_ray_processes,
    tracking_uri,
    tune_result_records,
    wait_for_evaluation,
    write_space,
)

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep import Plan, load_space, make_plan

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="127.0.0.2 loopback and /proc: Linux only"
)

RAY = str(Path(sys.executable).with_name("ray"))
WORKER_IP = "127.0.0.2"
# Long enough that the worker is killed while the SP job trains.
SP_STEPS, EVAL_EVERY = 200, 20

# Lists the actors of the cluster (alive and dead) from the GCS: class, node id, node ip.
# ``ray.util.state`` would need the dashboard, which this cluster does not start.
ACTORS = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(json.dumps([
    [a["ActorClassName"], a["Address"]["NodeID"], a["Address"]["IPAddress"]]
    for a in ray._private.state.actors().values()
]))
"""


@dataclass
class ClusterSweep:
    plan: Plan
    mlflow: Mlflow
    address: str
    nodes: dict[str, str]  # node id -> ip
    code: int
    log: str
    actors: list | None  # [class, node id, ip] per actor; None if not readable
    refused: subprocess.CompletedProcess  # the same driver without the cluster's token
    killed_at: int  # the SP job's last evaluated step when one of its workers was killed


def _ray_start(args: list[str], env: dict, log: Path) -> None:
    with open(log, "a") as f:
        done = subprocess.run(
            [RAY, "start", *args], env=env, cwd=env["RAY_TMPDIR"], stdout=f, stderr=f, timeout=180
        )
    if done.returncode != 0:
        pytest.fail(f"ray start {' '.join(args)} failed:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def cluster_sweep(tmp_path_factory) -> ClusterSweep:
    folder = tmp_path_factory.mktemp("cluster")
    space = write_space(
        folder,
        "cluster",
        {
            "baseline": False,
            "sp": {"iterations": SP_STEPS, "batch_size": 32, "eval_every": EVAL_EVERY},
            "alpha": [0.0, 4.0],
            "max_concurrent_trials": 2,
            # Two data-parallel SP workers of one CPU each: one per node.
            "resources": {"sp": {"workers": 2, "cpu": 1}, "trial": {"cpu": 1}},
        },
    )
    plan = make_plan(load_space(str(space)))
    migrated_store(folder)
    with ray_tmpdir("skc") as ray_dir:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(
            RAY_TMPDIR=ray_dir,
            RAY_USAGE_STATS_ENABLED="0",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=secrets.token_hex(16),
            # As the sweep's own local instances (sweep/ray_start.py): no idle prestarted workers.
            RAY_prestart_worker_first_driver="0",
        )
        port = free_port()
        address = f"127.0.0.1:{port}"
        common = ["--num-cpus=1", f"--temp-dir={ray_dir}/ray", "--disable-usage-stats"]
        log = folder / "ray_start.log"
        try:
            _ray_start(
                ["--head", f"--port={port}", '--resources={"head_node": 1}']
                + ["--include-dashboard=false", *common],
                env,
                log,
            )
            _ray_start(
                [f"--address={address}", f"--node-ip-address={WORKER_IP}", *common], env, log
            )
            # Without the cluster's token the driver is refused in one line, nothing started.
            no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
            refused = subprocess.run(
                [sys.executable, "-m", "skipnet_sweep.run", "--space", str(space)]
                + ["--address", address],
                env=no_token,
                cwd=ray_dir,
                capture_output=True,
                text=True,
                timeout=300,
            )
            driver_log = folder / "driver.log"
            with open(driver_log, "w") as f:
                driver = subprocess.Popen(
                    [sys.executable, "-m", "skipnet_sweep.run", "--space", str(space)]
                    + ["--address", address],
                    env=env,
                    cwd=ray_dir,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                )
            try:
                (sp,) = plan.shared_jobs
                mlflow = Mlflow(tracking_uri(folder), "cluster")
                killed_at = wait_for_evaluation(driver, driver_log, mlflow, sp.id)
                workers = [
                    p for p, cmd in ray_processes(ray_dir).items() if "RayTrainWorker" in cmd
                ]
                assert len(workers) == 2, workers
                os.kill(max(workers), signal.SIGKILL)
                code = driver.wait(timeout=400)
            finally:
                if driver.poll() is None:
                    driver.kill()
                    driver.wait()
            listed = subprocess.run(
                [sys.executable, "-c", ACTORS, address],
                env=env,
                cwd=ray_dir,
                capture_output=True,
                text=True,
                timeout=120,
            )
            actors = json.loads(listed.stdout.splitlines()[-1]) if listed.returncode == 0 else None
        finally:
            found = stop_ray_processes(ray_dir)
            assert ray_processes(ray_dir) == {}, "the cluster's processes did not stop"
        assert found, "the cluster had no process to stop"
    nodes = {a[1]: a[2] for a in actors or []}
    return ClusterSweep(
        plan,
        Mlflow(tracking_uri(folder), "cluster"),
        address,
        nodes,
        code,
        driver_log.read_text(),
        actors,
        refused,
        killed_at,
    )


def test_a_driver_without_the_token_is_refused_in_one_line(cluster_sweep: ClusterSweep) -> None:
    refused = cluster_sweep.refused
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    # Ray's own retries went to the log file: stderr is the one line, naming the token.
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: --address") and "RAY_AUTH_TOKEN" in line, line
    assert len(line) <= 300 and "Traceback" not in refused.stdout


def test_sweep_on_two_nodes_finishes(cluster_sweep: ClusterSweep) -> None:
    assert cluster_sweep.code == 0, cluster_sweep.log[-4000:]
    m = cluster_sweep.mlflow
    children = m.children(m.parent().info.run_id)
    assert sorted(r.data.tags[M.TAG_STAGE] for r in children) == ["hrl", "hrl", "sp"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(M.TOP1 in r.data.metrics for r in children)


def test_trials_ran_on_both_nodes(cluster_sweep: ClusterSweep) -> None:
    rows = tune_result_records(cluster_sweep.plan.storage)
    assert rows, "no Tune results"
    ips = {r["node_ip"] for r in rows}
    # Two trials at once, one CPU per node and per trial: one trial on each node.
    assert len(ips) == 2 and WORKER_IP in ips, ips


def test_sp_workers_spanned_both_nodes(cluster_sweep: ClusterSweep) -> None:
    """The SP job's two data-parallel workers (one CPU each) were placed on the two nodes,
    read from the GCS actor table (a private Ray API; skipped where it is gone)."""
    if cluster_sweep.actors is None:
        pytest.skip("the GCS actor table could not be read (ray._private.state)")
    workers = {node for cls, node, _ in cluster_sweep.actors if cls == "RayTrainWorker"}
    trials = {node for cls, node, _ in cluster_sweep.actors if cls == "ImplicitFunc"}
    assert len(workers) == 2, cluster_sweep.actors
    assert len(trials) == 2, cluster_sweep.actors
    assert WORKER_IP in cluster_sweep.nodes.values()


def test_a_killed_sp_worker_is_replaced_and_the_curve_has_each_evaluation_once(
    cluster_sweep: ClusterSweep,
) -> None:
    assert cluster_sweep.code == 0, cluster_sweep.log[-4000:]
    m = cluster_sweep.mlflow
    (sp_run,) = [r for r in m.children(m.parent().info.run_id) if r.data.tags[M.TAG_STAGE] == "sp"]
    assert sp_run.info.status == "FINISHED" and M.TAG_ERROR not in sp_run.data.tags
    steps = [s.step for s in m.client.get_metric_history(sp_run.info.run_id, M.TOP1)]
    assert sorted(steps) == list(range(EVAL_EVERY, SP_STEPS + 1, EVAL_EVERY)), steps
    assert cluster_sweep.killed_at < SP_STEPS
    if cluster_sweep.actors is not None:
        # The killed worker's group was replaced while the job trained (dead actors are listed
        # too): more than the two workers a run without the kill has.
        workers = [a for a in cluster_sweep.actors if a[0] == "RayTrainWorker"]
        assert len(workers) > 2, cluster_sweep.actors
