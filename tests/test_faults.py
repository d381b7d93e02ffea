"""Faults in the setting most teams use: ``storage_path`` on object storage (a real S3 server,
moto's, on 127.0.0.1 with an endpoint override) and MLflow behind an ``mlflow server`` on
127.0.0.1 (proxied artifacts), both from conftest.py. One sweep takes two SIGKILLs while its
shared pre-training job trains (one worker: in its trial's own process): one of that
process (Tune restarts the trial from its last checkpoint, within the same driver), then of
the driver itself (the same command again resumes Tune's state from S3 and the job from its
last checkpoint there). The sweep exits 0, the SP learning curve in MLflow has each
evaluation once, every job has exactly one run with no error left of the failed attempts,
and checkpoints, cache and artifacts are on the servers. While the job trains, every
process of the local Ray instance listens on loopback only. One sweep for all of it: each
whole sweep costs CI tens of seconds. (A killed Ray Train worker of a data-parallel job:
tests/test_cluster.py.)"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BUCKET
from sweep_helpers import (
    LOOPBACK,
    Mlflow,
    listeners,
    local_sweep,
    patched_env,
    ray_processes,
    ray_tmpdir,
    spawn_driver,
    wait_for_evaluation,
    write_space,
)

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep import Plan, load_space, make_plan

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")

# Long enough that both faults land while the SP job trains (8 evaluations).
SP_STEPS, EVAL_EVERY = 160, 20


def _assert_listens_on_loopback_only(
    procs: dict[int, str], found: dict[int, set], driver: int
) -> None:
    """The local instance's servers listen on loopback only (``ray_private.loopback_node``).
    (A data-parallel shared job's Ray Train workers add torch's TCPStore on every interface;
    see the comment by ``ray.init`` in sweep/ray_start.py. A one-worker job has no process group.)"""

    def pids_of(name: str) -> list[int]:
        return [p for p, cmd in procs.items() if name in cmd]

    # The servers the instance must have (so the check below cannot pass on an empty set).
    (gcs,) = pids_of("gcs_server")
    (raylet,) = pids_of("raylet/raylet")
    (trial,) = pids_of("ImplicitFunc")
    assert found[gcs], "the GCS listens"
    assert len(found[raylet]) >= 2, "the raylet's node manager and object manager listen"
    assert found[driver], "the driver's core worker listens"
    assert found[pids_of("RuntimeEnvAgent")[0]], "the runtime-env agent listens"
    assert found[trial], "the trial's core worker listens"
    off_loopback = {
        (pid, procs[pid][:60], addr, port)
        for pid, pairs in found.items()
        for addr, port in pairs
        if addr not in LOOPBACK
    }
    assert not off_loopback, f"listening off loopback: {off_loopback}"


@dataclass
class Faulted:
    plan: Plan
    mlflow: Mlflow
    storage: str
    procs: dict[int, str]  # the local instance's processes while the SP job trained
    found: dict[int, set]  # ... and what each listened on
    driver: int  # the first driver's pid
    code: int  # the re-run's exit code and output
    out: str
    err: str
    cached: bool  # the SP job's checkpoint is in the cache after the re-run
    resumed_from: str
    folders: tuple[Path, ...]  # local folders that must not hold an "s3:" folder


@pytest.fixture(scope="module")
def faulted(s3, tracking_server, tmp_path_factory) -> Faulted:
    """The sweep: SIGKILL of the SP job's trial process once it has evaluated, SIGKILL of
    the driver once the restarted trial has evaluated again, then the same command again."""
    tmp_path = tmp_path_factory.mktemp("faults")
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
            first = wait_for_evaluation(driver, log, mlflow, sp.id)
            procs = ray_processes(ray_dir)  # the driver included (RAY_TMPDIR)
            found = listeners(procs)
            (trial,) = [pid for pid, cmd in procs.items() if "ImplicitFunc" in cmd]
            os.kill(trial, signal.SIGKILL)
            # The restarted trial evaluates again: the process's death did not end the job.
            resumed = wait_for_evaluation(driver, log, mlflow, sp.id, after=first)
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
    return Faulted(
        plan, mlflow, storage, procs, found, driver.pid, code, out, err, cached,
        str(resumed_from), (Path(ray_dir), tmp_path),
    )  # fmt: skip


def test_the_local_instance_listens_on_loopback_only(faulted: Faulted) -> None:
    _assert_listens_on_loopback_only(faulted.procs, faulted.found, faulted.driver)


def test_killed_trial_then_killed_driver_mid_sp_resume_on_s3_without_duplicates(
    faulted: Faulted,
) -> None:
    plan, mlflow = faulted.plan, faulted.mlflow
    (sp,) = plan.shared_jobs
    assert faulted.code == 0, faulted.out[-3000:] + faulted.err[-3000:]
    assert f"resuming sweep-{plan.sweep_id} from {faulted.resumed_from}" in faulted.out
    children = mlflow.children(mlflow.parent().info.run_id)
    ids = sorted(r.data.tags[M.TAG_TRIAL_ID] for r in children)
    assert ids == sorted(j.id for j in plan.jobs)  # each job once: nothing duplicated
    for r in children:
        assert r.info.status == "FINISHED", r.data.tags
        assert M.TAG_ERROR not in r.data.tags
    (sp_run,) = [r for r in children if r.data.tags[M.TAG_TRIAL_ID] == sp.id]
    steps = [m.step for m in mlflow.client.get_metric_history(sp_run.info.run_id, M.TOP1)]
    # Every evaluation once, in order, through to the end, across both faults.
    assert steps == sorted(set(steps)), steps
    assert set(steps) == set(range(EVAL_EVERY, SP_STEPS + 1, EVAL_EVERY)), steps


def test_checkpoints_cache_and_artifacts_are_on_the_servers(faulted: Faulted) -> None:
    mlflow = faulted.mlflow
    assert faulted.code == 0, faulted.out[-3000:] + faulted.err[-3000:]
    assert faulted.cached, "the SP job's checkpoint is in the cache on S3"
    children = mlflow.children(mlflow.parent().info.run_id)
    for r in children:
        assert r.data.tags[M.TAG_CHECKPOINT].startswith(f"{faulted.storage}/")
        # Artifacts went through the server (proxied), from the cache on S3 for the SP job.
        files = [a.path for a in mlflow.client.list_artifacts(r.info.run_id, M.ARTIFACT_DIR)]
        assert f"{M.ARTIFACT_DIR}/{M.PER_SAMPLE_CSV}" in files
    # Every frontier run has its network registered.
    front = [r for r in children if r.data.tags.get(M.TAG_PARETO) == "true"]
    assert front and all(M.TAG_MODEL_VERSION in r.data.tags for r in front)
    assert not any(Path(folder, "s3:").exists() for folder in faulted.folders)
