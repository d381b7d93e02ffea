"""Fault injection on a real local Ray instance, in the middle of a shared pre-training job:
a Ray Train worker killed with SIGKILL, and the driver killed with SIGKILL then run again.
The job resumes from its last checkpoint, the sweep exits 0, its learning curve in MLflow
has each evaluation once, and no run is duplicated or keeps an error of the failed attempt."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from sweep_helpers import (
    Mlflow,
    local_sweep,
    ray_processes,
    ray_tmpdir,
    spawn_driver,
    tracking_uri,
    wait_for,
    write_space,
)

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep import load_space, make_plan

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def _sp_sweep(folder: Path, name: str, **changes):
    """A sweep of one SP job long enough to be interrupted (6 evaluations) and one trial:
    its space file, plan, SP job and MLflow store."""
    space = write_space(
        folder,
        name,
        {
            "baseline": False,
            "sp": {"iterations": 120, "batch_size": 32, "eval_every": 20},
            "alpha": [1.0],
            **changes,
        },
    )
    plan = make_plan(load_space(str(space)))
    (sp,) = plan.shared_jobs
    return space, plan, sp, Mlflow(tracking_uri(folder), name)


def _wait_for_sp_evaluation(driver, log: Path, mlflow: Mlflow, sp_id: str) -> None:
    """Until the SP job's run has logged its first evaluation (so a checkpoint exists)."""

    def evaluated():
        if driver.poll() is not None:
            raise AssertionError(f"the driver exited early:\n{log.read_text()[-3000:]}")
        try:
            runs = mlflow.runs(f"tags.`{M.TAG_TRIAL_ID}` = '{sp_id}'")
        except Exception:  # the store is being created by the driver
            return None
        if runs and mlflow.client.get_metric_history(runs[0].info.run_id, M.TOP1):
            return runs[0]
        return None

    wait_for(evaluated, 240, interval=0.2, what="a first SP evaluation")


def test_killed_train_worker_resumes_the_sp_job(tmp_path: Path) -> None:
    space, plan, sp, mlflow = _sp_sweep(tmp_path, "workerkill", max_failures=2)
    log = tmp_path / "driver.log"

    with ray_tmpdir("skf") as ray_dir:
        driver = spawn_driver(space, ray_dir, log)
        try:
            _wait_for_sp_evaluation(driver, log, mlflow, sp.id)
            workers = {
                pid: cmd for pid, cmd in ray_processes(ray_dir).items() if "RayTrainWorker" in cmd
            }
            assert workers, ray_processes(ray_dir)
            os.kill(max(workers), signal.SIGKILL)
            code = driver.wait(timeout=480)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    out = log.read_text()
    assert code == 0, out[-4000:]
    children = mlflow.children(mlflow.parent().info.run_id)
    assert len(children) == 2  # the SP job and its one trial: nothing duplicated
    for r in children:
        assert r.info.status == "FINISHED", r.data.tags
        assert M.TAG_ERROR not in r.data.tags
    (sp_run,) = [r for r in children if r.data.tags[M.TAG_TRIAL_ID] == sp.id]
    steps = [m.step for m in mlflow.client.get_metric_history(sp_run.info.run_id, M.TOP1)]
    # Every evaluation once, in order, through to the end, though a worker died mid-way.
    assert steps == sorted(set(steps)) and steps[-1] == 120, steps
    assert set(steps) == set(range(20, 121, 20))


def test_killed_driver_mid_sp_resumes_without_duplicates(tmp_path: Path) -> None:
    """SIGKILL of the driver while the SP job trains, then the same command again: the SP
    job goes on from its last Ray Train checkpoint, its learning curve in MLflow has each
    evaluation once, and every job has exactly one run."""
    space, plan, sp, mlflow = _sp_sweep(tmp_path, "driverkill")
    log = tmp_path / "driver.log"

    with ray_tmpdir("skd") as ray_dir:
        driver = spawn_driver(space, ray_dir, log)
        try:
            _wait_for_sp_evaluation(driver, log, mlflow, sp.id)
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
    with ray_tmpdir("skd") as ray_dir:
        code, out, err = local_sweep(["--space", str(space), "--num-cpus", "2"], ray_dir)
    assert code == 0, out[-3000:] + err[-3000:]
    assert f"resuming sweep-{plan.sweep_id}" in out
    children = mlflow.children(mlflow.parent().info.run_id)
    assert sorted(r.data.tags[M.TAG_TRIAL_ID] for r in children) == sorted(j.id for j in plan.jobs)
    for r in children:
        assert r.info.status == "FINISHED" and M.TAG_ERROR not in r.data.tags
    (sp_run,) = [r for r in children if r.data.tags[M.TAG_TRIAL_ID] == sp.id]
    steps = [m.step for m in mlflow.client.get_metric_history(sp_run.info.run_id, M.TOP1)]
    assert steps == sorted(set(steps)) and set(steps) == set(range(20, 121, 20)), steps
