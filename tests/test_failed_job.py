"""A job that fails for a reason that passes (issue 24, item 3), on a local Ray instance: a
plugin's shared pre-training job fails with "No space left on device" while a fault file
exists, so the trial that starts from it never runs, the sweep exits 1 with one line per
job that has not finished, and the terminal's count calls neither done. The fault removed,
the same command retries the failed job, then runs the trial it blocked, and exits 0 with
every job counted once. Starts from an SP cache trained in-process (``sp_cache``,
conftest.py); the plugin is tests/flaky_method.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from flaky_method import Flaky
from sweep_helpers import Sweep, local_sweep, run_sweep, seed_sp_cache, write_space

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import register_method, unregister_method

NO_SPACE = "[Errno 28] No space left on device"


@dataclass
class Rerun:
    first: Sweep
    statuses: dict  # stage -> MLflow run statuses after the first sweep
    hrl_runs: dict  # run id -> RunInfo of the first sweep's HRL runs
    code: int
    out: str
    err: str


@pytest.fixture(scope="module")
def rerun(sp_cache: Path, tmp_path_factory, ray_dir) -> Rerun:
    register_method(Flaky, replace=True)
    try:
        folder = tmp_path_factory.mktemp("retry")
        fault = folder / "disk_full"
        fault.touch()
        changes = {
            "baseline": False,
            "alpha": [1.0],
            "flaky": {"fault": str(fault)},
            "max_failures": 0,  # Tune's own retries within a run are test_faults'
        }
        space = write_space(folder, "flaky", changes)
        seed_sp_cache(sp_cache, folder / "runs", space, stages=("sp",))
        first = run_sweep(space, ray_dir)
        mlflow = first.mlflow
        statuses = {}
        for r in mlflow.runs("tags.stage != 'sweep'"):
            statuses.setdefault(r.data.tags[M.TAG_STAGE], []).append(r.info.status)
        hrl = {r.info.run_id: mlflow.info(r) for r in mlflow.runs("tags.stage = 'hrl'")}
        fault.unlink()  # the disk has room again
        code, out, err = local_sweep(first.argv(), ray_dir)
        return Rerun(first, statuses, hrl, code, out, err)
    finally:
        unregister_method(Flaky.name)


def _jobs(plan) -> tuple[str, str]:
    """The plugin's pre-training job and the trial that starts from it."""
    (pre,) = [j.id for j in plan.shared_jobs if j.method == "flaky"]
    (trial,) = [j.id for j in plan.trials if j.method == "flaky"]
    return pre, trial


def _count_lines(out: str) -> list[str]:
    """The terminal's line per finished or failed job: ``[2/4, 1 failed] flakypre ...``."""
    return [line for line in out.splitlines() if re.match(r"\[ *\d+/\d+", line)]


def test_a_failed_job_fails_the_sweep_with_one_line_per_unfinished_job(rerun: Rerun) -> None:
    first = rerun.first
    assert first.code == 1, first.out[-3000:] + first.err[-3000:]
    pre, trial = _jobs(first.plan)
    summary = first.out.split("2 failed:\n", 1)[1].splitlines()
    assert set(summary[:2]) == {
        f"  {pre}: OSError: {NO_SPACE}: '{first.space.parent / 'disk_full'}'",
        f"  {trial}: not run: it starts from {pre}, which has not finished",
    }
    assert summary[2].startswith("  run the same command to retry them")
    # The count: SP (cached) and the HRL trial done; the failed job and the one it blocks
    # are not.
    lines = _count_lines(first.out)
    assert len(lines) == 3, lines
    (failed,) = [line for line in lines if " flakypre " in line]
    assert ", 1 failed] flakypre" in failed and f"FAILED: OSError: {NO_SPACE}" in failed
    assert max(int(re.match(r"\[ *(\d+)", line)[1]) for line in lines) == 2
    assert rerun.statuses == {"sp": ["FINISHED"], "hrl": ["FINISHED"], "flakypre": ["FAILED"]}


def test_the_same_command_retries_it_then_runs_what_it_blocked(rerun: Rerun) -> None:
    assert rerun.code == 0, rerun.out[-3000:] + rerun.err[-3000:]
    assert "resuming sweep-" in rerun.out and not re.search(r"\d failed", rerun.out)
    lines = _count_lines(rerun.out)
    assert [line.split()[:2] for line in lines] == [["[3/4]", "flakypre"], ["[4/4]", "flaky"]]
    mlflow = rerun.first.mlflow
    finished = {
        r.data.tags[M.TAG_TRIAL_ID]
        for r in mlflow.runs("attributes.status = 'FINISHED' and tags.stage != 'sweep'")
    }
    assert finished == {j.id for j in rerun.first.plan.jobs}
    # The HRL trial that had finished was not run again.
    assert {r.info.run_id: mlflow.info(r) for r in mlflow.runs("tags.stage = 'hrl'")} == (
        rerun.hrl_runs
    )
