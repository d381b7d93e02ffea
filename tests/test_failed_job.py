"""Jobs that fail for a reason that passes (issue 24, items 3 and 2), on a local Ray
instance. A plugin (tests/flaky_method.py) adds two pairs of a pre-training job and a trial
that starts from it; while fault files exist, the first pair's pre-training job and the
second pair's trial fail with "No space left on device". The first sweep exits 1 with one
line per job that has not finished (the first pair's trial never ran), and the terminal's
count calls none of them done. Then the faults are removed and the second pair's cache entry
is cut short: the same command retries the failed jobs and the one they blocked; the
retried trial finds its start damaged where it loads it, sets it aside, and runs once that
job is trained again. It exits 0 with every job counted once. Starts from an SP cache
trained in-process (``sp_cache``, conftest.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from flaky_method import Flaky
from sweep_helpers import Sweep, local_sweep, run_sweep, seed_sp_cache, write_space

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import register_method, unregister_method

NO_SPACE = "OSError: [Errno 28] No space left on device"


@dataclass
class Rerun:
    first: Sweep
    statuses: dict  # job id -> MLflow run statuses after the first sweep
    hrl_runs: dict  # run id -> RunInfo of the first sweep's HRL runs
    code: int
    out: str
    err: str
    errors: dict  # job id -> the MLflow error tag of its failed run


@pytest.fixture(scope="module")
def rerun(sp_cache: Path, tmp_path_factory, ray_dir) -> Rerun:
    register_method(Flaky, replace=True)
    try:
        folder = tmp_path_factory.mktemp("retry")
        faults = folder / "faults"
        faults.mkdir()
        for name in ("pre0", "trial1"):
            (faults / name).touch()
        changes = {
            "baseline": False,
            "alpha": [1.0],
            "flaky": {"faults": str(faults), "pairs": 2},
            "max_failures": 0,  # Tune's own retries within a run are test_faults'
        }
        space = write_space(folder, "flaky", changes)
        seed_sp_cache(sp_cache, folder / "runs", space, stages=("sp",))
        first = run_sweep(space, ray_dir)
        mlflow = first.mlflow
        statuses, errors = {}, {}
        for r in mlflow.runs("tags.stage != 'sweep'"):
            statuses.setdefault(r.data.tags[M.TAG_TRIAL_ID], []).append(r.info.status)
            if M.TAG_ERROR in r.data.tags:
                errors[r.data.tags[M.TAG_TRIAL_ID]] = r.data.tags[M.TAG_ERROR]
        hrl = {r.info.run_id: mlflow.info(r) for r in mlflow.runs("tags.stage = 'hrl'")}
        for fault in faults.iterdir():  # the disk has room again
            fault.unlink()
        entry = first.plan.checkpoint(_pairs(first.plan)[1][0])
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
        code, out, err = local_sweep(first.argv(), ray_dir)
        return Rerun(first, statuses, hrl, code, out, err, errors)
    finally:
        unregister_method(Flaky.name)


def _pairs(plan) -> list[tuple]:
    """The plugin's (pre-training job, trial) pairs, in order."""
    pre = [j for j in plan.shared_jobs if j.method == "flaky"]
    return [(p, next(t for t in plan.trials if t.needs == p.id)) for p in pre]


def _counts(out: str) -> list[tuple[int, int, str]]:
    """(done, failed, job label) of each line of a finished or failed job
    (``[3/6, 2 failed] flaky ...``)."""
    found = re.findall(r"^\[ *(\d+)/\d+(?:, (\d+) failed)?\] (\w+)", out, re.MULTILINE)
    return [(int(done), int(failed or 0), stage) for done, failed, stage in found]


def test_failed_jobs_fail_the_sweep_with_one_line_each(rerun: Rerun) -> None:
    first = rerun.first
    assert first.code == 1, first.out[-3000:] + first.err[-3000:]
    (pre0, trial0), (pre1, trial1) = _pairs(first.plan)
    faults = first.space.parent / "faults"
    summary = first.out.split("3 failed:\n", 1)[1].splitlines()
    assert set(summary[:3]) == {
        f"  {pre0.id}: {NO_SPACE}: '{faults / 'pre0'}'",
        f"  {trial0.id}: not run: it starts from {pre0.id}, which has not finished",
        f"  {trial1.id}: {NO_SPACE}: '{faults / 'trial1'}'",
    }
    assert summary[3].startswith("  run the same command to retry them")
    # The count: SP (cached), the HRL trial and the second pre-training job done; the two
    # failed jobs not, and the line of each says why.
    counts = _counts(first.out)
    assert len(counts) == 5 and max(c[0] for c in counts) == 3 and counts[-1][1] == 2, counts
    failed = [line for line in first.out.splitlines() if "FAILED:" in line]
    assert len(failed) == 2 and all(f"FAILED: {NO_SPACE}" in line for line in failed)
    assert rerun.statuses[pre0.id] == rerun.statuses[trial1.id] == ["FAILED"]
    # MLflow says why in the words of the exception, not "the trial errored"
    assert NO_SPACE in rerun.errors[pre0.id] and NO_SPACE in rerun.errors[trial1.id], rerun.errors
    assert trial0.id not in rerun.statuses


def test_the_same_command_retries_what_failed_and_what_it_blocked(rerun: Rerun) -> None:
    assert rerun.code == 0, rerun.out[-3000:] + rerun.err[-3000:]
    assert "resuming sweep-" in rerun.out and "FAILED" not in rerun.out
    (pre0, trial0), (pre1, trial1) = _pairs(rerun.first.plan)
    counts = _counts(rerun.out)
    # The two failed jobs, the trial one of them blocked, and the pre-training job whose
    # entry was cut short: each counted once, when it finished.
    assert sorted(c[2] for c in counts) == ["flaky", "flaky", "flakypre", "flakypre"]
    assert [c[0] for c in counts][-1] == 6 and max(c[0] for c in counts) == 6
    assert all(c[1] == 0 for c in counts)
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


def test_a_retried_trial_sets_its_damaged_start_aside_and_waits_for_it(rerun: Rerun) -> None:
    (_, _), (pre1, trial1) = _pairs(rerun.first.plan)
    (waits,) = [line for line in rerun.out.splitlines() if ": waits: " in line]
    assert str(rerun.first.plan.checkpoint(pre1)) in waits and "unreadable" in waits
    # The run of the pre-training job whose entry was cut short is kept, FAILED with why.
    retired = rerun.first.mlflow.runs(f"tags.`{M.TAG_TRIAL_ID}` LIKE '{pre1.id}-retired-%'")
    assert [r.info.status for r in retired] == ["FAILED"]
    assert "its cache entry was rejected" in retired[0].data.tags[M.TAG_ERROR]
    aside = list(rerun.first.plan.checkpoint(pre1).parent.parent.glob("*.rejected-*"))
    assert len(aside) == 1  # moved aside, not deleted
