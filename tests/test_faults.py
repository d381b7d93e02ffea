"""Faults in the setting most teams use: ``storage_path`` on object storage (a real S3 server,
moto's, on 127.0.0.1 with an endpoint override) and MLflow behind an ``mlflow server`` on
127.0.0.1 (proxied artifacts), both from conftest.py. One sweep takes two SIGKILLs while its
shared pre-training job trains: one of its Ray Train worker (Ray Train restarts it from the
last checkpoint, within the same driver), then of the driver itself (the same command again
resumes Tune's state from S3 and the job from its last checkpoint there). The sweep exits 0,
the SP learning curve in MLflow has each evaluation once, every job has exactly one run with
no error left of the failed attempts, and checkpoints, cache and artifacts are on the servers.
While the job trains, every process of the local Ray instance listens on loopback only
(torch's TCPStore aside). One sweep for all of it: each whole sweep costs CI about a minute."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import BUCKET
from sweep_helpers import (
    LOOPBACK,
    WILDCARD,
    Mlflow,
    listeners,
    local_sweep,
    patched_env,
    ray_processes,
    ray_tmpdir,
    spawn_driver,
    wait_for,
    write_space,
)

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep import load_space, make_plan

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")

# Long enough that both faults land while the SP job trains (8 evaluations).
SP_STEPS, EVAL_EVERY = 160, 20


def _wait_for_sp_evaluation(driver, log: Path, mlflow: Mlflow, sp_id: str, after: int = 0):
    """Until the SP job's run has logged an evaluation past step ``after`` (so a checkpoint
    of it exists); returns that step."""

    def evaluated():
        if driver.poll() is not None:
            raise AssertionError(f"the driver exited early:\n{log.read_text()[-3000:]}")
        try:
            runs = mlflow.runs(f"tags.`{M.TAG_TRIAL_ID}` = '{sp_id}'")
        except Exception:  # the store is being created by the driver
            return None
        if not runs:
            return None
        steps = [m.step for m in mlflow.client.get_metric_history(runs[0].info.run_id, M.TOP1)]
        return max(steps) if steps and max(steps) > after else None

    return wait_for(evaluated, 240, interval=0.2, what=f"an SP evaluation past step {after}")


def _assert_listens_on_loopback_only(procs: dict[int, str], driver: int) -> None:
    """The local instance's servers listen on loopback only (driver.py, ``_loopback_node``).
    One port is open to the network and it is torch's, not Ray's: the Ray Train worker's
    TCPStore (rank 0 of the process group), on every interface (torch offers Ray Train no
    way to bind it to loopback; see the comment by ``ray.init`` in driver.py)."""
    found = listeners(procs)

    def pids_of(name: str) -> list[int]:
        return [p for p, cmd in procs.items() if name in cmd]

    # The servers the instance must have (so the check below cannot pass on an empty set).
    (gcs,) = pids_of("gcs_server")
    (raylet,) = pids_of("raylet/raylet")
    (worker,) = pids_of("RayTrainWorker")
    assert found[gcs], "the GCS listens"
    assert len(found[raylet]) >= 2, "the raylet's node manager and object manager listen"
    assert found[driver], "the driver's core worker listens"
    assert found[pids_of("RuntimeEnvAgent")[0]], "the runtime-env agent listens"
    off_loopback = {
        (pid, procs[pid][:60], addr, port)
        for pid, pairs in found.items()
        for addr, port in pairs
        if addr not in LOOPBACK
    }
    assert {(pid, addr) for pid, _, addr, _ in off_loopback} <= {(worker, a) for a in WILDCARD}, (
        f"only the Ray Train worker's TCPStore may listen off loopback: {off_loopback}"
    )
    assert len(off_loopback) == 1, off_loopback


def test_killed_worker_then_killed_driver_mid_sp_resume_on_s3_without_duplicates(
    s3, tracking_server, tmp_path: Path
) -> None:
    storage = f"s3://{BUCKET}/faults"
    space = write_space(
        tmp_path,
        "faults",
        {
            "storage_path": storage,
            "mlflow": {"tracking_uri": tracking_server},
            "baseline": False,
            "sp": {"iterations": SP_STEPS, "batch_size": 32, "eval_every": EVAL_EVERY},
            "alpha": [1.0],
            "max_failures": 2,
        },
    )
    plan = make_plan(load_space(str(space)))
    assert plan.storage == storage
    (sp,) = plan.shared_jobs
    mlflow = Mlflow(tracking_server, "faults")
    log = tmp_path / "driver.log"

    with ray_tmpdir("skf") as ray_dir:
        driver = spawn_driver(space, ray_dir, log, **s3)
        try:
            first = _wait_for_sp_evaluation(driver, log, mlflow, sp.id)
            procs = ray_processes(ray_dir)  # the driver included (RAY_TMPDIR)
            _assert_listens_on_loopback_only(procs, driver.pid)
            workers = {pid: cmd for pid, cmd in procs.items() if "RayTrainWorker" in cmd}
            assert workers, procs
            os.kill(max(workers), signal.SIGKILL)
            # The restarted worker evaluates again: the worker's death did not end the job.
            resumed = _wait_for_sp_evaluation(driver, log, mlflow, sp.id, after=first)
            assert resumed < SP_STEPS, "the job must still be training when the driver is killed"
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
    with ray_tmpdir("skf") as ray_dir, patched_env(**s3):
        code, out, err = local_sweep(["--space", str(space), "--num-cpus", "2"], ray_dir)
        store = plan.store
        cached = store.is_file(plan.checkpoint(sp))
        resumed_from = store.path("tune", f"sweep-{plan.sweep_id}")
        assert store.exists(resumed_from)
    assert code == 0, out[-3000:] + err[-3000:]
    assert f"resuming sweep-{plan.sweep_id} from {resumed_from}" in out
    assert cached, "the SP job's checkpoint is in the cache on S3"

    children = mlflow.children(mlflow.parent().info.run_id)
    ids = sorted(r.data.tags[M.TAG_TRIAL_ID] for r in children)
    assert ids == sorted(j.id for j in plan.jobs)  # each job once: nothing duplicated
    for r in children:
        assert r.info.status == "FINISHED", r.data.tags
        assert M.TAG_ERROR not in r.data.tags
        assert r.data.tags[M.TAG_CHECKPOINT].startswith(f"{storage}/")
        # Artifacts went through the server (proxied), from the cache on S3 for the SP job.
        files = [a.path for a in mlflow.client.list_artifacts(r.info.run_id, M.ARTIFACT_DIR)]
        assert f"{M.ARTIFACT_DIR}/{M.PER_SAMPLE_CSV}" in files
    (sp_run,) = [r for r in children if r.data.tags[M.TAG_TRIAL_ID] == sp.id]
    steps = [m.step for m in mlflow.client.get_metric_history(sp_run.info.run_id, M.TOP1)]
    # Every evaluation once, in order, through to the end, across both faults.
    assert steps == sorted(set(steps)), steps
    assert set(steps) == set(range(EVAL_EVERY, SP_STEPS + 1, EVAL_EVERY)), steps
    # Every frontier run has its network registered.
    front = [r for r in children if r.data.tags.get(M.TAG_PARETO) == "true"]
    assert front and all(M.TAG_MODEL_VERSION in r.data.tags for r in front)
    assert not Path(ray_dir, "s3:").exists() and not (tmp_path / "s3:").exists()
