"""Ctrl-C: the first SIGINT to a sweep's terminal (its process group) while an HRL trial
trains stops the sweep cleanly: exit code 130, one line saying how to resume (the same
command), the MLflow parent run and the runs that were running KILLED; the same command then
resumes the trial from its last checkpoint and finishes the sweep. Starts from an SP cache
trained in-process (``sp_cache``, conftest.py); one local Ray instance per driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from sweep_helpers import (
    Mlflow,
    by_stage,
    local_sweep,
    migrated_store,
    ray_tmpdir,
    seed_sp_cache,
    spawn_driver,
    tracking_uri,
    wait_for,
    write_space,
)

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep import load_space, make_plan

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")

HRL_STEPS, EVAL_EVERY = 200, 10  # long enough to still be training when Ctrl-C comes


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(sp_cache, tmp_path, ray_dir):
    space = write_space(
        tmp_path,
        "interrupt",
        {
            "baseline": False,
            "alpha": [0.0, 1.0],
            "hrl": {"iterations": HRL_STEPS, "batch_size": 32, "eval_every": EVAL_EVERY},
            "max_concurrent_trials": 1,
        },
    )
    plan = make_plan(load_space(str(space)))
    seed_sp_cache(sp_cache, plan.storage, space)
    migrated_store(tmp_path)
    mlflow = Mlflow(tracking_uri(tmp_path), "interrupt")
    log = tmp_path / "driver.log"

    def hrl_evaluated():
        if driver.poll() is not None:
            raise AssertionError(f"the driver exited early:\n{log.read_text()[-3000:]}")
        if not (plan.storage / "tune").exists():  # the store is not the driver's yet
            return None
        for run in mlflow.runs("tags.stage = 'hrl' and attributes.status = 'RUNNING'"):
            if mlflow.client.get_metric_history(run.info.run_id, M.TOP1):
                return run
        return None

    with ray_tmpdir("ski") as own_dir:
        driver = spawn_driver(space, own_dir, log, new_session=True)
        try:
            wait_for(hrl_evaluated, 240, interval=0.5, what="an HRL evaluation")
            os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
            code = driver.wait(timeout=120)
        except (subprocess.TimeoutExpired, TimeoutError, AssertionError):
            driver.kill()
            driver.wait()
            raise
    out = log.read_text()
    assert code == 130, out[-3000:]
    resume = [line for line in out.splitlines() if "resume" in line.lower()]
    assert resume == [
        f"interrupted: run the same command to resume: python -m skipnet_sweep.run "
        f"--space {space} --num-cpus 2"
    ], out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    parent = mlflow.parent()
    assert parent.info.status == "KILLED"
    stopped = {r.info.run_id: r for r in mlflow.children(parent.info.run_id)}
    statuses = {r.data.tags[M.TAG_STAGE]: set() for r in stopped.values()}
    for r in stopped.values():
        statuses[r.data.tags[M.TAG_STAGE]].add(r.info.status)
    assert "RUNNING" not in set().union(*statuses.values()), statuses
    assert "KILLED" in statuses["hrl"], statuses

    code, out, err = local_sweep(["--space", str(space), "--num-cpus", "2"], ray_dir)
    assert code == 0, out[-3000:] + err[-3000:]
    assert f"resuming sweep-{plan.sweep_id}" in out
    parent = mlflow.parent()
    assert parent.info.status == "FINISHED"
    children = mlflow.children(parent.info.run_id)
    assert sorted(r.data.tags[M.TAG_TRIAL_ID] for r in children) == sorted(j.id for j in plan.jobs)
    assert all(r.info.status == "FINISHED" for r in children)
    for run in by_stage(children)["hrl"]:
        steps = [m.step for m in mlflow.client.get_metric_history(run.info.run_id, M.TOP1)]
        assert steps == list(range(EVAL_EVERY, HRL_STEPS + 1, EVAL_EVERY)), steps
    # The stopped trial went on from its last checkpoint. A checkpoint written after Tune last
    # saved its state is reported once more when the trial resumes from it (the driver may
    # never have logged it; test_restore), so at most the step it resumed at appears twice,
    # in a row; any other repeat would be a step trained twice.
    for result in (plan.storage / "tune").glob("*/hrl-*/result.json"):
        rows = [json.loads(row) for row in result.read_text().splitlines()]
        trained = [row["step"] for row in rows if not row.get("final") and "evaluation" in row]
        repeats = [a for a, b in zip(trained, trained[1:], strict=False) if a == b]
        assert len(repeats) <= 1, trained
        assert sorted(set(trained)) == list(range(EVAL_EVERY, HRL_STEPS + 1, EVAL_EVERY))
        assert trained == sorted(trained), trained


def test_the_resume_command_does_not_start_over():
    from skipnet_sweep.run import _resume_command

    argv = ["--space", "my space.yaml", "--fresh", "--num-cpus", "2", "--fr"]
    assert (
        _resume_command(argv) == "python -m skipnet_sweep.run --space 'my space.yaml' --num-cpus 2"
    )
