"""A trial restored from a checkpoint that Tune's saved state names but that Tune has
already deleted (``CheckpointConfig(num_to_keep)`` deletes as newer checkpoints arrive; the
state that names the latest is uploaded afterwards, so a driver killed in between leaves it
behind; seen in tests/test_faults.py on S3) resumes from the newest whole checkpoint the
trial wrote after it (``trial_checkpoints._surviving``), instead of failing every retry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
import pytest
from ray import tune
from sweep_helpers import local_ray_env, ray_tmpdir, write_space

from skipnet_sweep.sweep import load_space, make_plan, trial_checkpoints, trials
from skipnet_sweep.sweep.trial_checkpoints import (
    FINAL_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    STATE_FILE,
    _seal,
    _surviving,
    _whole,
)
from skipnet_sweep.sweep.trials import _run_trial

FS = pyarrow.fs.LocalFileSystem()


def _checkpoint(trial: Path, index: int, step: int) -> Path:
    folder = trial / f"checkpoint_{index:06d}"
    (folder / "artifacts").mkdir(parents=True)
    (folder / STATE_FILE).write_bytes(b"x" * (100 + step))
    (folder / "artifacts" / "per_sample.csv").write_text("i,correct\n0,1\n")
    (folder / METRICS_FILE).write_text(json.dumps({"step": step}))
    _seal(folder)
    return folder


def test_a_sealed_checkpoint_is_whole_until_a_file_is_missing_or_cut_short(tmp_path):
    folder = _checkpoint(tmp_path, 0, 10)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest == {"artifacts/per_sample.csv": 14, STATE_FILE: 110, METRICS_FILE: 12}
    assert _whole(FS, str(folder))
    (folder / STATE_FILE).write_bytes(b"x" * 50)  # a copy cut short
    assert not _whole(FS, str(folder))
    (folder / STATE_FILE).write_bytes(b"x" * 110)
    (folder / "artifacts" / "per_sample.csv").unlink()
    assert not _whole(FS, str(folder))
    assert not _whole(FS, str(_checkpoint(tmp_path, 1, 20).parent / "absent"))
    (tmp_path / "checkpoint_000001" / MANIFEST_FILE).unlink()  # written last: not yet there
    assert not _whole(FS, str(tmp_path / "checkpoint_000001"))


def test_a_missing_checkpoint_gives_way_to_the_newest_whole_one_after_it(tmp_path, capsys):
    for index in (1, 2, 3, 4):
        _checkpoint(tmp_path, index, 10 * index)
    (tmp_path / "checkpoint_000004" / STATE_FILE).write_bytes(b"")  # cut short
    newest = tune.Checkpoint(str(tmp_path / "checkpoint_000003"), filesystem=FS)
    assert _surviving(newest) is newest  # the newest whole one: Tune's own
    assert capsys.readouterr().err == ""
    for named in ("checkpoint_000000", "checkpoint_000002"):  # gone; there but older
        found = _surviving(tune.Checkpoint(str(tmp_path / named), filesystem=FS))
        assert Path(found.path) == tmp_path / "checkpoint_000003"  # not the partial 000004
        assert found.filesystem is FS
        assert f"{named}: Tune's saved state predates checkpoint_000003" in capsys.readouterr().err
    # Nothing whole at or after it (only older ones): Tune's, to fail as Tune fails.
    (tmp_path / "checkpoint_000003" / MANIFEST_FILE).unlink()
    gone = tune.Checkpoint(str(tmp_path / "checkpoint_000003"), filesystem=FS)
    assert _surviving(gone) is gone


@pytest.mark.parametrize("swapped", [True, False])
def test_a_trial_restored_from_its_final_checkpoint_does_not_train_again(
    tmp_path, monkeypatch, swapped
):
    """Restored from its final checkpoint, a trial returns without training. Its final
    result again only when that checkpoint replaced an older one Tune's state named
    (``_RestoreSurviving``): the search and the scheduler see the final metrics; otherwise
    Tune already holds them. No checkpoint goes with it (none is made)."""
    final = {"top1": 90.5, "flops_mean": 2.0e7, "step": 45, "final": 1}
    folder = tmp_path / "checkpoint_000003"
    folder.mkdir()
    (folder / FINAL_FILE).write_text(json.dumps(final))
    reports = []
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(folder))
    monkeypatch.setattr(tune, "report", lambda m, checkpoint=None: reports.append((m, checkpoint)))
    monkeypatch.setattr(trial_checkpoints, "_SWAPPED", {str(folder)} if swapped else set())
    _run_trial(None, None)  # neither the job nor the plan is needed: nothing trains
    assert reports == ([(final, None)] if swapped else [])
    assert not trial_checkpoints._SWAPPED  # cleared for the next trial of this process


def test_on_object_storage_too(s3, tmp_path):
    """The same on S3 (a moto server, conftest.py), where folders are key prefixes: Tune's
    checkpoints live there in the setting most teams use."""
    from conftest import BUCKET

    from skipnet_sweep.sweep.storage import Storage

    store = Storage(f"s3://{BUCKET}/restore")
    for index in (1, 2):
        folder = _checkpoint(tmp_path, index, 10 * index)
        store.upload(folder, store.path("trial", folder.name))
    fs = pyarrow.fs.S3FileSystem(endpoint_override=s3["AWS_ENDPOINT_URL"])
    trial = f"{BUCKET}/restore/trial"
    assert _whole(fs, f"{trial}/checkpoint_000002")
    found = _surviving(tune.Checkpoint(f"{trial}/checkpoint_000000", filesystem=fs))
    assert found.path.rstrip("/") == f"{trial}/checkpoint_000002"
    fs.delete_file(f"{trial}/checkpoint_000002/{METRICS_FILE}")  # a partial upload
    assert not _whole(fs, f"{trial}/checkpoint_000002")
    found = _surviving(tune.Checkpoint(f"{trial}/checkpoint_000000", filesystem=fs))
    assert found.path.rstrip("/") == f"{trial}/checkpoint_000001"


@pytest.mark.parametrize("swapped", [True, False])
def test_a_trial_resumed_from_a_newer_checkpoint_reports_its_evaluation_first(
    tmp_path, monkeypatch, swapped
):
    """A checkpoint newer than the one Tune's state named (``_surviving``) can be one whose
    result the killed driver never logged to MLflow: its evaluation is reported again
    before training goes on from it, so the learning curve has every point (MLflow logs a
    step once). Resumed from the checkpoint Tune named, the driver had its result."""
    plan = make_plan(load_space(str(write_space(tmp_path))))
    job = plan.trials[0]
    folder = _checkpoint(tmp_path, 2, 20)
    reports, resumed_from = [], []

    def run_stage(stage, out, *, resume, **kw):
        resumed_from.append(resume)
        return SimpleNamespace(metrics={"top1": 80.0})

    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(folder))
    monkeypatch.setattr(tune, "report", lambda m, checkpoint=None: reports.append((m, checkpoint)))
    monkeypatch.setattr(trials, "run_stage", run_stage)
    monkeypatch.setattr(trials, "_threads", lambda cpus: None)  # this process's torch
    monkeypatch.setattr(trial_checkpoints, "_SWAPPED", {str(folder)} if swapped else set())
    _run_trial(job, plan)
    assert resumed_from == [folder / STATE_FILE]
    assert [m for m, _ in reports[:-1]] == ([{"step": 20}] if swapped else [])
    # The checkpoint predates evaluation counting (searcher.EVALUATION): it counts from 0.
    assert reports[-1][0] == {"top1": 80.0, "step": 20, "evaluation": 0, "final": 1}


_TUNE_RUN = """
import json, shutil, sys, tempfile
from pathlib import Path
import ray
from ray import tune
from skipnet_sweep.sweep.trial_checkpoints import _RestoreSurviving, _seal

def trial(config):
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        step = json.loads(Path(ckpt.path, "metrics.json").read_text())["step"]
        with tempfile.TemporaryDirectory() as d:
            Path(d, "metrics.json").write_text(json.dumps({"step": step + 1}))
            _seal(Path(d))
            report = {"step": step + 1, "restored_from": Path(ckpt.path).name}
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(d))
        return
    with tempfile.TemporaryDirectory() as d:
        Path(d, "metrics.json").write_text(json.dumps({"step": 1}))
        _seal(Path(d))
        tune.report({"step": 1}, checkpoint=tune.Checkpoint.from_directory(d))
    # Tune has registered checkpoint_000000. A newer whole one takes its place, as when Tune
    # deleted it after newer ones arrived and its saved state still named it.
    (named,) = Path(config["storage"]).glob("*/*/checkpoint_000000")
    newer = named.with_name("checkpoint_000002")
    shutil.copytree(named, newer)
    (newer / "metrics.json").write_text(json.dumps({"step": 2}))
    _seal(newer)
    shutil.rmtree(named)
    raise RuntimeError("killed")

trial.__mixins__ = (_RestoreSurviving,) if sys.argv[2] == "with" else ()
ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
(result,) = tune.Tuner(
    tune.with_parameters(trial),
    param_space={"storage": sys.argv[1]},
    run_config=tune.RunConfig(
        storage_path=sys.argv[1], name="exp", verbose=0,
        failure_config=tune.FailureConfig(max_failures=1),
    ),
).fit()
print(json.dumps({
    "error": str(result.error).strip().splitlines()[-1] if result.error else None,
    "metrics": {k: result.metrics.get(k) for k in ("step", "restored_from")},
    "checkpoint": Path(result.checkpoint.path).name if result.checkpoint else None,
    "iteration": result.metrics.get("training_iteration"),
}))
"""


def tune_run(storage: Path, mixin: str) -> dict:
    """The trial above, ``with`` or ``without`` ``_RestoreSurviving`` mixed in, on a local
    Ray instance of its own; its result and what it wrote to stderr."""
    with ray_tmpdir("skrs") as ray_dir:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update({k: v for k, v in local_ray_env(ray_dir).items() if v is not None})
        run = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_TUNE_RUN), str(storage), mixin],
            capture_output=True, text=True, env=env, cwd=ray_dir, timeout=300,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "err": run.stderr}


def test_tune_restores_a_trial_from_the_newest_whole_checkpoint_when_its_own_is_gone(
    tmp_path,
) -> None:
    """Through Tune's own restore (``__mixins__`` reaches its trainable through
    ``tune.with_parameters``). Without the mixin, Tune fails the retry: "Could not recover
    from checkpoint as it does not exist on storage anymore" (checked with
    ``tune_run(tmp_path, "without")``, 14 s more; not run by default)."""
    run = tune_run(tmp_path, "with")
    assert run["error"] is None, run["err"][-3000:]
    assert run["metrics"] == {"step": 3, "restored_from": "checkpoint_000002"}
    # Its next checkpoint goes after every folder it wrote, not into checkpoint_000001
    # (Tune numbers it after the one its state named).
    assert run["checkpoint"] == "checkpoint_000003"
    # Tune counted from the named checkpoint's iteration (1); checkpoint_000002 came two
    # reports later (iteration 3), so the next report is the 3rd (in a sweep's trial, that
    # checkpoint's result reported again: ASHA's time as before the kill).
    assert run["iteration"] == 3
    assert "checkpoint_000000: Tune's saved state predates checkpoint_000002" in run["err"]
