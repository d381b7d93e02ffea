"""Resume after the driver of a sweep is killed with SIGKILL in its trial stage (HRL), on a
local Ray instance: each trial finishes once, nothing finished before the kill runs again,
and the driver's Ray processes do not outlive it; while it ran, a second driver of the same
sweep was refused. Starts from an SP cache trained in-process (``sp_cache``, conftest.py),
so it runs beside tests/test_sweep.py on another xdist worker."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sweep_helpers import (
    Mlflow,
    alive,
    by_stage,
    cli,
    descendants,
    local_sweep,
    migrated_store,
    ray_processes,
    ray_tmpdir,
    seed_sp_cache,
    spawn_driver,
    stop_ray_processes,
    tracking_uri,
    tune_result_rows,
    tune_snapshot_status,
    wait_for,
    write_space,
)

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import register_method, unregister_method
from skipnet_sweep.sweep import Plan, load_space, make_plan

# The toy plugin with its own gate, network and objective (tests/toy_method.py), loaded by
# the killed driver with ``--plugin`` and by the resuming one the same way.
PLUGIN = str(Path(__file__).parent / "toy_plugin.py")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


@dataclass
class Killed:
    plan: Plan
    mlflow: Mlflow
    finished_before: dict  # run id -> RunInfo of the HRL runs FINISHED when the driver died
    rows_before: dict
    snapshot_status: dict  # trial dir -> status in Tune's last snapshot before the kill
    strays: dict  # pid -> command of Ray processes that outlived the driver
    remaining: dict  # ... and those still alive after stop_ray_processes
    code: int
    out: str
    after: dict
    second: tuple  # (exit code, stdout, stderr) of a second driver while the first ran
    first_pid: int  # the first driver's


@pytest.fixture(scope="module", autouse=True)
def routed_toy():
    from toy_method import ToyRouted

    register_method(ToyRouted, replace=True)
    yield
    unregister_method(ToyRouted.name)
    unregister_method("smooth")  # the plugin file registers both toys


@pytest.fixture(scope="module")
def killed(sp_cache: Path, tmp_path_factory, ray_dir) -> Killed:
    """A 4-trial sweep (one trial at a time) whose driver is killed with SIGKILL once two
    HRL runs are FINISHED in MLflow, then run again with the same command."""
    folder = tmp_path_factory.mktemp("killed")
    space = write_space(
        folder,
        "resume",
        {
            "baseline": False,
            "alpha": [0.0, 1.0, 2.0, 4.0],
            "max_concurrent_trials": 1,
            "toyroute": {"rate": [0.5], "iterations": 2},
        },
    )
    plan = make_plan(load_space(str(space)))
    seed_sp_cache(sp_cache, plan.storage, space, stages=("sp",))  # the toy's baseline trains
    migrated_store(folder)
    mlflow = Mlflow(tracking_uri(folder), "resume")

    def finished_hrl():
        # Only read the store once the driver has made it (Tune starts after the parent and
        # SP runs are logged): two processes creating one sqlite schema at once can clash.
        if not (plan.storage / "tune").exists():
            return None
        try:
            runs = mlflow.runs("tags.stage = 'hrl' and attributes.status = 'FINISHED'")
        except Exception:  # the store is being created by the driver
            return None
        if driver.poll() is not None:
            raise AssertionError(f"the driver exited ({driver.returncode}) before the kill")
        return runs if len(runs) >= 2 else None

    with ray_tmpdir("skk") as kill_dir:
        driver = spawn_driver(space, kill_dir, folder / "driver.log", args=("--plugin", PLUGIN))
        try:
            wait_for(finished_hrl, 240, interval=0.5, what="two finished HRL runs")
            # A second driver of the same sweep while the first runs (issue 24, item 7).
            second = cli(["--space", str(space), "--num-cpus", "2", "--plugin", PLUGIN])
        finally:
            tree = descendants(driver.pid)  # its local Ray instance
            driver.send_signal(signal.SIGKILL)
            driver.wait()
        finished_before = {
            r.info.run_id: mlflow.info(r)
            for r in mlflow.runs("tags.stage = 'hrl' and attributes.status = 'FINISHED'")
        }
        rows_before = tune_result_rows(plan.storage)
        status = tune_snapshot_status(plan.storage)

        # The raylet and the GCS die with the driver (Ray ties them to it); let them go,
        # then record what outlived it and stop exactly that.
        def instance() -> dict[int, str]:
            return {**alive(tree), **ray_processes(kill_dir)}

        # The driver's reaper stops the instance's processes (agents and workers included)
        # within seconds of the driver's death.
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not instance(), 30, what="the killed driver's Ray to be stopped")
        strays = instance()
        stop_ray_processes(kill_dir, also=tree)
        remaining = instance()
    code, out, err = local_sweep(
        ["--space", str(space), "--num-cpus", "2", "--plugin", PLUGIN], ray_dir
    )
    return Killed(
        plan, mlflow, finished_before, rows_before, status, strays, remaining, code, out + err,
        mlflow.snapshot(), second, driver.pid,
    )  # fmt: skip


def test_resume_after_kill_finishes_every_trial_once(killed: Killed) -> None:
    assert killed.code == 0, killed.out[-3000:]
    parent = killed.mlflow.parent()
    children = killed.mlflow.children(parent.info.run_id)
    ids = [r.data.tags[M.TAG_TRIAL_ID] for r in children]
    expected = [j.id for j in killed.plan.shared_jobs] + [j.id for j in killed.plan.trials]
    assert sorted(ids) == sorted(expected)  # one run per trial id, no duplicates
    # The parent, SP, the toy's baseline, the HRL trials and the toy's trial.
    assert len(killed.after) == 1 + 1 + 1 + 4 + 1
    assert all(r.info.status == "FINISHED" for r in children)
    # The runs that existed when the driver died were found again, not recreated.
    assert set(killed.finished_before) <= set(killed.after)
    (sp,) = by_stage(children)["sp"]
    assert sp.data.tags["cached"] == "true"  # seeded from another sweep's cache
    (toy,) = by_stage(children)["toyroute"]  # the plugin's trial, in both drivers' plans
    assert toy.data.tags[M.TAG_METHOD_LABEL] == "Toy routing"


def test_resume_does_not_rerun_trials_tune_recorded_as_finished(killed: Killed) -> None:
    if not killed.snapshot_status:
        pytest.skip("Tune's experiment snapshot format is not understood")
    done = [
        i for i in killed.finished_before.values()
        if killed.snapshot_status.get(i.trial_id) == "TERMINATED"
    ]  # fmt: skip
    assert done, (killed.snapshot_status, killed.finished_before)
    for info in done:
        assert killed.after[info.run_id] == info  # same end time, no new metric points
        assert (
            tune_result_rows(killed.plan.storage)[info.trial_id]
            == (killed.rows_before[info.trial_id])
        )


def test_resume_does_not_rerun_trials_finished_before_the_kill(killed: Killed) -> None:
    racing = [
        i for i in killed.finished_before.values()
        if killed.snapshot_status.get(i.trial_id, "TERMINATED") != "TERMINATED"
    ]  # fmt: skip
    if not racing:
        pytest.skip("every trial finished before the kill was also in Tune's snapshot")
    for info in racing:
        rows = [
            json.loads(line)
            for line in next(
                Path(killed.plan.storage, "tune").glob(f"*/{info.trial_id}/result.json")
            )
            .read_text()
            .splitlines()
        ]
        before = killed.rows_before[info.trial_id]
        # Restored from its final checkpoint it reports its final result again and returns:
        # at most that row and Tune's own closing row are added, with no training result in
        # them (no new step; MLflow's run is unchanged, below).
        assert len(rows) - before <= 2, rows[before:]
        assert all("step" not in r or r["step"] == rows[before - 1]["step"] for r in rows[before:])
        assert killed.after[info.run_id] == info


def test_kill_leaves_no_ray_process_of_the_driver_behind(killed: Killed) -> None:
    """Nothing of the killed driver's Ray instance (found by its RAY_TMPDIR) is left 30 s
    after the SIGKILL: the driver's reaper stopped it, not the test."""
    assert killed.strays == {}
    assert killed.remaining == {}


def test_a_second_driver_of_a_running_sweep_is_refused_naming_the_first(killed: Killed) -> None:
    """The first a real driver with its Ray instance and trials running: the second is refused
    in one line, before it starts anything, and the first goes on (it is killed later)."""
    code, out, err = killed.second
    assert code == 2, out + err
    assert err.count("\n") == 1 and err.startswith(f"error: sweep {killed.plan.sweep_id} is ")
    assert f"driver pid {killed.first_pid} on host {socket.gethostname()}" in err
    assert "runs first" not in out  # it did not start: no opening line
