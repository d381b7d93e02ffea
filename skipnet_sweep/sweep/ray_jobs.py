"""The Ray layer: every stage of a sweep is one Tune trial, and this file only wraps
``stages.run_stage`` for it.

Three layers, each runnable alone (as in Ray's Train/Tune interop example):
``shared_worker`` is the per-worker loop of a ``TorchTrainer`` (a shared pre-training job:
the plain baseline, SkipNet's SP); ``stage_trial`` is the Tune function of every job: for a
data-parallel shared job (``resources.sp.workers`` > 1) it builds and fits that
``TorchTrainer`` (whose reports reach Tune, and so MLflow, as they happen, through
``TuneReportCallback``); any other job, a one-worker shared job included, runs in the trial's
own process, resumed by Tune from its last checkpoint. A shared job's result is cached under
its key. ``TrackingCallback`` is the driver's MLflow writer for all of them.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import Job, Method, register_method
from skipnet_sweep.models import GATE_DESIGNS
from skipnet_sweep.runner import run_stage
from skipnet_sweep.stages import NonFiniteLossError, StageConfig
from skipnet_sweep.sweep import cache, ray_private
from skipnet_sweep.sweep.plan import MODEL_FILE, Plan
from skipnet_sweep.sweep.searcher import AGAIN, ERROR, EVALUATION
from skipnet_sweep.sweep.storage import Storage

if TYPE_CHECKING:  # MLflow only in the driver: a trial process never imports it (~1.6 s)
    from skipnet_sweep.sweep.tracking import Tracker

STATE_FILE = "checkpoint.pt"  # resumable state (weights + optimiser + step)
FINAL_FILE = "final.json"  # a finished trial's final result
METRICS_FILE = "metrics.json"  # the report (metrics, step) a checkpoint was made with
MANIFEST_FILE = "manifest.json"  # every other file of a checkpoint and its size (``_seal``)
STEP = "step"
TOTAL_STEPS = "total_steps"  # the job's optimiser steps, with its training logs (progress)
CACHED = "cached"  # 1 in the final result of a shared job whose cache entry was reused
CACHE_REJECTED = "cache_rejected"  # why a shared job's cache entry was not reused
TUNE_KEYS = frozenset(
    (
        "training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "pid",
        "time_since_restore", "iterations_since_restore", "timesteps_total", "episodes_total",
        "timesteps_since_restore", "done", "final", "checkpoint_path", "node_ip", "hostname",
        "date", "trial_id", "experiment_tag", "config", CACHED, CACHE_REJECTED, STEP,
        TOTAL_STEPS, EVALUATION, AGAIN,
    )
)  # fmt: skip


def _threads(cpus: float) -> None:
    # Ray sets OMP_NUM_THREADS=1 in workers; use the CPUs the job asked for.
    torch.set_num_threads(max(1, int(cpus)))


@contextlib.contextmanager
def _restored(checkpoint) -> Iterator[Path | None]:
    """The folder of a Tune or Train ``checkpoint`` on the local disk for the block (None
    without one): a local checkpoint in place, a remote one downloaded to a temporary folder
    that is removed after it unless the process is killed (``to_directory()`` would leave a
    copy in /tmp for good)."""
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as local:
        yield Path(local)


def _resume_file(restored: Path | None) -> Path | None:
    state = restored / STATE_FILE if restored is not None else None
    return state if state is not None and state.is_file() else None


def _write_state(folder: Path, save, report: dict) -> None:
    """A checkpoint folder: the resumable state (``save``) and the evaluation it is
    reported with, which a resumed job reads back (``_reported``)."""
    save(folder / STATE_FILE)
    (folder / METRICS_FILE).write_text(json.dumps(report))


def _seal(folder: Path) -> None:
    """Writes the checkpoint folder's manifest: every other file in it and its size. Tune's
    upload keeps no order, so a copy cut short lacks a file or has one at another size
    (``_whole``)."""
    sizes = {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(sizes))


def _whole(fs, path: str) -> bool:
    """Whether the checkpoint folder at ``path`` on the pyarrow filesystem ``fs`` has its
    manifest and every file of it at its size."""
    import pyarrow.fs

    try:
        with fs.open_input_stream(f"{path}/{MANIFEST_FILE}") as f:
            sizes = json.loads(f.read())
    except (OSError, ValueError):
        return False
    infos = fs.get_file_info([f"{path}/{name}" for name in sizes])
    return all(
        info.type == pyarrow.fs.FileType.File and info.size == sizes[name]
        for info, name in zip(infos, sizes, strict=True)
    )


# Tune's checkpoint folder names (ray/train/_internal/storage.py,
# ``StorageContext._make_checkpoint_dir_name``: ``checkpoint_{index:06d}``).
_CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")


def _written(checkpoint) -> list[tuple[int, str]]:
    """(index, path) of every checkpoint folder of the trial that ``checkpoint`` belongs to,
    newest first."""
    import pyarrow.fs

    fs = checkpoint.filesystem
    parent = checkpoint.path.rstrip("/").rpartition("/")[0]
    found = []
    for info in fs.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True)):
        name = _CHECKPOINT_DIR.fullmatch(info.base_name)
        if info.type == pyarrow.fs.FileType.Directory and name:
            found.append((int(name.group(1)), info.path))
    return sorted(found, reverse=True)


def _surviving(checkpoint):
    """The newest whole checkpoint of the trial at or after ``checkpoint`` (a Tune
    ``Checkpoint`` that Tune's state names), or ``checkpoint`` itself if there is none.

    Tune deletes a trial's older checkpoints as soon as newer ones arrive
    (``CheckpointConfig(num_to_keep)``) but uploads its experiment state, which names the
    latest, in the background afterwards (ray/tune/execution/experiment_state.py,
    ``sync_up_experiment_state``): a driver killed in between leaves state naming an older
    checkpoint, or a deleted one, which Tune's restore refuses ("does not exist on storage
    anymore") however many retries it is given. The trial's newer checkpoints are where it
    got to."""
    named = _CHECKPOINT_DIR.fullmatch(checkpoint.path.rstrip("/").rpartition("/")[2])
    if named is None:
        return checkpoint
    for index, path in _written(checkpoint):
        if index < int(named.group(1)):
            break
        if _whole(checkpoint.filesystem, path):
            if index == int(named.group(1)):
                return checkpoint
            from ray import tune

            print(
                f"{checkpoint.path}: Tune's saved state predates checkpoint_{index:06d}; "
                "resuming from it, the trial's newest whole checkpoint",
                file=sys.stderr,
            )
            return tune.Checkpoint(path, filesystem=checkpoint.filesystem)
    return checkpoint


# Checkpoints this process restored a trial from in place of the older one Tune's state
# named (``_RestoreSurviving``): the trial reports their result again (``_run_trial``).
_SWAPPED: set[str] = set()


def _index(checkpoint) -> int:
    return int(_CHECKPOINT_DIR.fullmatch(checkpoint.path.rstrip("/").rpartition("/")[2])[1])


class _RestoreSurviving:
    """Mixed into ``stage_trial``'s Tune trainable (``ray_private.mix_into_trainable``):
    restores a trial from ``_surviving`` of the checkpoint Tune's state
    names, and numbers its next checkpoint after every folder the trial has written. (Tune
    numbers it after the checkpoint its state names, ray/tune/experiment/trial.py
    ``on_checkpoint``, and would write the next ones into the newer folders.)

    Tune counts the trial's iterations from the named checkpoint's result
    (ray/tune/trainable/trainable.py, ``restore``). Every evaluation of a trial carries a
    checkpoint, so the newer one restored came at least that many reports later; its result,
    reported again, takes at least the iteration it had (the training logs reported between
    evaluations, which carry none, are not counted; ASHA's time is the evaluation count each
    result carries, ``searcher.EVALUATION``, not Tune's iterations)."""

    def restore(self, checkpoint_path):
        named = getattr(checkpoint_path, "checkpoint", None)  # a _TrainingResult
        if named is None:
            return super().restore(checkpoint_path)
        found = checkpoint_path.checkpoint = _surviving(named)
        restored = super().restore(checkpoint_path)
        if found is not named:
            _SWAPPED.add(found.path)
            ray_private.advance_iteration(self, _index(found) - _index(named) - 1)
        written = _written(named)
        if written:
            ray_private.number_checkpoints_after(self, written[0][0])
        return restored


def _reported(resume: Path | None) -> dict | None:
    """The report (metrics and step) of the checkpoint whose state is ``resume``."""
    if resume is None or not (resume.parent / METRICS_FILE).is_file():
        return None
    return json.loads((resume.parent / METRICS_FILE).read_text())


def _adopt(methods: tuple[Method, ...]) -> None:
    # The plan carries its methods: a plugin registered only in the driver (a test file, a
    # user's script) is known in this worker process too.
    for method in methods:
        register_method(method, replace=True)


# --- shared pre-training on Ray Train -------------------------------------------------------


def shared_worker(config: dict) -> None:
    """One data-parallel worker of a shared job; rank 0 evaluates, reports and saves."""
    import ray.train

    method: Method = config["method"]
    _adopt((method,))
    with _restored(ray.train.get_checkpoint()) as restored:
        resume = _resume_file(restored)
        stage = StageConfig.from_dict(config["stage"])
        with _local_init(stage, Storage(config["storage"]), resume) as stage:
            _shared_stage(stage, method, config, resume)


def _shared_stage(stage: StageConfig, method: Method, config: dict, resume: Path | None) -> None:
    """``shared_worker``'s body, with the stage's initial weights and the state it resumes
    from (``resume``) on the local disk."""
    import ray.train
    import ray.train.torch

    _threads(config.get("cpus", 1))
    rank = ray.train.get_context().get_world_rank()
    last = {STEP: 0}
    again = _reported(resume)
    if again is not None:
        # The evaluation of the checkpoint resumed from, again: a driver that died after Ray
        # Train kept the checkpoint but before MLflow got its metrics would otherwise lose
        # that point of the curve (the tracker logs a step once, so a repeat is harmless).
        # Every rank reports (a report is collective); rank 0 carries the metrics.
        ray.train.report(again if rank == 0 else {}, checkpoint=None)

    def prepare(model, loader):
        return ray.train.torch.prepare_model(model), ray.train.torch.prepare_data_loader(loader)

    def on_log(step: int, total: int, logs: dict) -> None:
        last[TOTAL_STEPS] = total
        # A report is collective: every rank logs at the same steps, rank 0 with the logs.
        ray.train.report({**logs, STEP: step, TOTAL_STEPS: total} if logs else {})

    def on_report(step: int, metrics: dict, save) -> None:
        last[STEP] = step
        if save is None:
            ray.train.report({}, checkpoint=None)
            return
        report = {**metrics, STEP: step}
        if TOTAL_STEPS in last:  # for the terminal's progress line
            report[TOTAL_STEPS] = last[TOTAL_STEPS]
        with tempfile.TemporaryDirectory() as d:
            _write_state(Path(d), save, report)
            ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(d))

    with tempfile.TemporaryDirectory() as d:
        run_stage(
            stage,
            Path(d) / MODEL_FILE if rank == 0 else None,
            device=ray.train.torch.get_device(),
            on_report=on_report,
            resume=resume,
            progress=False,
            prepare=prepare,
            is_main=rank == 0,
            artifacts=Path(d) / M.ARTIFACT_DIR if rank == 0 else None,
            method=method,
            on_log=on_log,
        )
        # One more report from every rank (a barrier): the final weights and evaluation
        # files, which the trial publishes to the cache. Its metrics carry no step: the
        # trial reports the final result itself once the cache entry exists.
        if rank == 0:
            ray.train.report(
                {"final_weights": 1}, checkpoint=ray.train.Checkpoint.from_directory(d)
            )
        else:
            ray.train.report({}, checkpoint=None)


def _fit_shared(job: Job, plan: Plan) -> dict:
    """Fit a ``TorchTrainer`` for a shared job and publish its result to the cache; returns
    the final metrics. Re-running after an interruption resumes the trainer (same run name
    and storage) from its last checkpoint; a worker that dies is replaced and training goes
    on from the last checkpoint, ``max_failures`` times."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = plan.space.resources.sp
    stage = plan.stage_of(job).to_dict()
    # The space gives the global batch; each of the workers takes its share.
    stage["train"]["batch_size"] = max(1, job.stage.train.batch_size // res.workers)
    trainer = TorchTrainer(
        shared_worker,
        train_loop_config={
            "stage": stage,
            "cpus": res.cpu,
            "method": plan.method(job.method),
            "storage": plan.space.storage_path,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.workers,
            use_gpu=res.gpu > 0,
            resources_per_worker={"CPU": res.cpu, **({"GPU": res.gpu} if res.gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=job.id,
            storage_path=str(plan.store.path("train")),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=plan.space.max_failures),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        payload = _publish(Path(d), job, plan)
    return {**payload["metrics"], STEP: payload["step"]}


def _trial_id() -> str:
    """The Tune trial this process runs: the same id across the trial's retries."""
    from ray import tune

    return tune.get_context().get_trial_id()


def _publish(folder: Path, job: Job, plan: Plan) -> dict:
    """Publish a shared job's final checkpoint ``folder`` to its cache entry, recording this
    trial as its producer."""
    return cache.publish(folder, MODEL_FILE, plan.checkpoint(job), job, plan.store, _trial_id())


def _run_shared(job: Job, plan: Plan) -> None:
    """A shared job: its verified cache entry, else trained (a rejected entry is moved aside
    and the reason reported with the result)."""
    from ray import tune

    entry = plan.checkpoint(job)
    rejected = {}
    if plan.store.is_file(entry):
        payload, why = cache.verify(entry, job, plan.store)
        if payload is not None:
            # This trial's own entry when it is retried after publishing (killed before its
            # final report): trained in this sweep, not reused.
            own = payload[cache.RECORD].get("producer") == _trial_id()
            tune.report(
                {**payload["metrics"], STEP: payload["step"], CACHED: int(not own), "final": 1}
            )
            return
        aside = cache.set_aside(entry, plan.store)
        rejected = {CACHE_REJECTED: f"{why}; moved to {aside} and trained again"}
    if plan.space.resources.sp.data_parallel:
        tune.report({**_fit_shared(job, plan), **rejected, "final": 1})
    else:
        # One worker needs no process group: Ray Train would only add its controller and
        # worker actors (about a minute of start-up per job on a 2-CPU machine, measured),
        # and Tune retries the trial from its last checkpoint as Train would.
        _run_trial(job, plan, rejected)


# --- trials -------------------------------------------------------------------------------


def rejected_start(job: Job, plan: Plan) -> str | None:
    """Check the cache entry ``job`` starts from (its shared job's) where it is loaded: None
    when it is that job's own; else it is set aside (a wrong or damaged entry: swapped for
    another checkpoint, cut short, gone), with the shared job's Ray Train run, so that job
    trains again, and the reason is returned in one line."""
    if job.needs is None or not plan.job(job.needs).shared:
        return None
    needed = plan.job(job.needs)
    entry = plan.checkpoint(needed)
    payload, why = cache.verify(entry, needed, plan.store)
    if payload is not None:
        return None
    where = "moved aside"
    try:
        if plan.store.exists(str(entry).rsplit("/", 1)[0]):
            where = f"moved to {cache.set_aside(entry, plan.store)}"
    except OSError:  # another trial that starts from it moved it first
        pass
    plan.store.remove(plan.store.path("train", needed.id))  # not resumed: trained anew
    return f"{why}; {where}; {needed.id} is trained again, then this job"


def _run_trial(job: Job, plan: Plan, extra: dict | None = None) -> None:
    """One job in one process, resumed from its last checkpoint. A shared job publishes its
    final weights to the cache before its final report; ``extra`` goes with that report. A
    job whose start (a shared job's cache entry) is wrong or damaged reports ``AGAIN`` and
    ends: the searcher runs that shared job again, then this job."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    # Restored from a newer checkpoint than Tune's state named: its result may never have
    # reached the driver (nor MLflow, which logs a step once, so a repeat is harmless).
    again = checkpoint is not None and checkpoint.path in _SWAPPED
    _SWAPPED.clear()
    with _restored(checkpoint) as restored:
        if restored is not None and (restored / FINAL_FILE).is_file():
            # Restored from the trial's final checkpoint (the driver died between the
            # trial's end and Tune's next state save): do not retrain; its final result
            # again if Tune's state holds an older one, for the search and the scheduler.
            if again:
                tune.report(json.loads((restored / FINAL_FILE).read_text()))
            return
        resume = _resume_file(restored)
        # Only a job that starts (no state of its own to resume) loads what it starts from.
        why = rejected_start(job, plan) if resume is None else None
        if why is not None:
            tune.report({AGAIN: job.needs, CACHE_REJECTED: why, STEP: 0})
            return
        _train_trial(job, plan, resume, extra, again)


def _train_trial(
    job: Job, plan: Plan, resume: Path | None, extra: dict | None, again: bool = False
) -> None:
    """``_run_trial``'s training, from the state ``resume`` (None: from the start), whose
    evaluation it reports ``again`` first."""
    from ray import tune

    res = plan.space.resources.sp if job.shared else plan.space.resources.trial
    _threads(res.cpu)
    device = "cuda" if res.gpu > 0 and torch.cuda.is_available() else "cpu"
    last: dict = {STEP: 0, EVALUATION: 0}
    resumed = _reported(resume)
    if resumed is not None:
        # Its final result carries the step it resumed at, even with no step left to train.
        last[STEP] = resumed[STEP]
        last[EVALUATION] = resumed.get(EVALUATION, 0)
        if again:
            tune.report(resumed)

    def on_log(step: int, total: int, logs: dict) -> None:
        last[TOTAL_STEPS] = total
        tune.report({**logs, STEP: step, TOTAL_STEPS: total})

    def on_report(step: int, metrics: dict, save) -> None:
        last.update({STEP: step, M.TOP1: metrics[M.TOP1], M.FLOPS_MEAN: metrics[M.FLOPS_MEAN]})
        last[EVALUATION] += 1
        # ASHA's time: the evaluations so far (saved with the checkpoint, for a resume).
        report = {**metrics, STEP: step, EVALUATION: last[EVALUATION]}
        if TOTAL_STEPS in last:
            report[TOTAL_STEPS] = last[TOTAL_STEPS]
        with tempfile.TemporaryDirectory() as d:
            _write_state(Path(d), save, report)
            _seal(Path(d))
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(d))

    try:
        with (
            _local_init(plan.stage_of(job), plan.store, resume) as stage,
            tempfile.TemporaryDirectory() as d,
        ):
            result = run_stage(
                stage,
                Path(d) / MODEL_FILE,  # the final weights travel with the final checkpoint
                device=device,
                on_report=on_report,
                resume=resume,
                progress=False,
                artifacts=Path(d) / M.ARTIFACT_DIR,
                method=plan.method(job.method),
                on_log=on_log,
            )
            final = {
                **result.metrics,
                STEP: last[STEP],
                EVALUATION: last[EVALUATION],
                **(extra or {}),
                "final": 1,
            }
            if job.shared:
                _publish(Path(d), job, plan)
            (Path(d) / FINAL_FILE).write_text(json.dumps(final))
            _seal(Path(d))
            tune.report(final, checkpoint=tune.Checkpoint.from_directory(d))
    except NonFiniteLossError as err:
        # Stop this trial with its reason; not an error Tune would retry (it would recur).
        # The search learns it failed (``ERROR`` in the result), not a fake objective.
        tune.report({**last, ERROR: str(err), STEP: last[STEP] + 1})


@contextlib.contextmanager
def _local_init(stage: StageConfig, store: Storage, resume: Path | None = None):
    """``stage`` with its initial checkpoint on the local disk (downloaded from object
    storage for the duration of the block); not fetched for a job that resumes from its
    own state (``resume``), which ``run_stage`` reads instead."""
    if stage.init is None or resume is not None:
        yield stage
        return
    with store.local_copy(stage.init) as local:
        yield replace(stage, init=str(local))


def stage_trial(config: dict, plan: Plan) -> None:
    """The Tune function of every job of a sweep (see the module docstring)."""
    _adopt(plan.methods)
    job = plan.job_of(config)
    if job.shared:
        _run_shared(job, plan)
    else:
        _run_trial(job, plan)


ray_private.mix_into_trainable(stage_trial, _RestoreSurviving)


def trial_resources(config: dict, plan: Plan) -> dict:
    """What Tune reserves for a job's trial. A data-parallel shared job's trial only drives
    its ``TorchTrainer`` (whose workers reserve their own CPUs/GPUs), so it reserves nothing:
    holding a CPU there would starve its own workers on a small machine. (A placement group
    needs some resource: a token of memory stands in.) A one-worker shared job trains in its
    trial and reserves what ``resources.sp`` gives one worker."""
    # A sampled (adaptive-search) job is never shared: its config names no grid job.
    shared = bool(config.get("job")) and plan.job(config["job"]).shared
    if shared and plan.space.resources.sp.data_parallel:
        return {"cpu": 0, "memory": 2**20}
    res = plan.space.resources.sp if shared else plan.space.resources.trial
    return {"cpu": res.cpu, "gpu": res.gpu}


# --- the driver's MLflow callback -------------------------------------------------------

# What every evaluation logs and what every training-log point logs: a resumed run's last
# logged step is the later of the two.
_CURVES = (M.TOP1, M.TRAIN_LOSS)


def _tune_callback_base():
    from ray.tune import Callback

    return Callback


@dataclass
class _Logged:
    """What the tracker holds of one trial's MLflow run."""

    run_id: str
    step: int  # the last step logged (-1: none)
    done: bool  # finished before this driver started: recorded in full
    job: Job
    keys: set[str]  # the metric keys logged at ``step``


BACKLOG_FILE = "tracking_backlog.json"  # what the callback could not log, for the next run
RETRY_S = 30.0  # how often a store that failed is tried again while the sweep runs


@dataclass
class _Seen:
    """What the callback reads of a Tune trial at one event, kept (as JSON) while the
    tracking store is down and replayed once it answers: it reads like the trial."""

    trial_id: str
    config: dict
    last_result: dict
    checkpoint_uri: str | None = None
    error: str | None = None

    @classmethod
    def of(cls, trial, error: bool = False) -> _Seen:
        ckpt = getattr(trial, "checkpoint", None)
        uri = None
        if ckpt is not None:
            kind = ckpt.filesystem.type_name
            uri = ckpt.path if kind == "local" else f"{kind}://{ckpt.path.lstrip('/')}"
        err = trial.get_error() if error else None
        return cls(
            trial.trial_id,
            _plain(trial.config),
            _plain(getattr(trial, "last_result", None) or {}),
            uri,
            str(err).strip().splitlines()[-1] if err else ("trial errored" if error else None),
        )

    @property
    def checkpoint(self):
        if self.checkpoint_uri is None:
            return None
        from ray import tune

        return tune.Checkpoint(self.checkpoint_uri)

    def get_error(self) -> str | None:
        return self.error


def _plain(d: dict) -> dict:
    """The JSON-able entries of a result or config (Tune adds a few objects)."""
    return {
        k: v
        for k, v in d.items()
        if isinstance(v, str | int | float | bool | type(None)) or (k == "sample")
    }


def store_errors() -> tuple[type[BaseException], ...]:
    """What a tracking store that fails raises: a server down or slow, a full disk, a
    locked sqlite file (MLflow wraps some, not all)."""
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    return MlflowException, OSError, requests.RequestException, sqlalchemy.exc.SQLAlchemyError


class TrackingCallback(_tune_callback_base()):
    """Logs every trial of the sweep to its own nested MLflow run: created when the trial
    starts (RUNNING), each report logged as it comes (training curves between evaluations,
    shared jobs' included), marked finished or failed at the end, found again by the
    trial-id tag after a restore.

    Args:
        tracker: the MLflow tracker.
        parent: the sweep's parent run id.
        plan: the sweep plan (maps a trial's config to its job).
    """

    def __init__(self, tracker: Tracker, parent: str, plan: Plan):
        self.tracker = tracker
        self.parent = parent
        self.plan = plan
        self._runs: dict[str, _Logged] = {}  # by Tune trial id
        # Events the store missed, in order ((event, _Seen, result)); saved beside the
        # sweep's state so that the next run logs them if this one cannot.
        self._backlog: list[tuple[str, _Seen, dict | None]] = []
        self._down_since: float | None = None  # when the store last failed
        self._loaded = False

    def __getstate__(self) -> dict:
        return {"tracker": self.tracker, "parent": self.parent, "plan": self.plan}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["tracker"], state["parent"], state["plan"])

    def describe(self, job: Job) -> tuple[dict, dict]:
        """(params, tags) of a job's run."""
        method = self.plan.method(job.method)
        tags = {
            M.TAG_STAGE: job.stage.train.stage,
            M.TAG_METHOD: job.curve,
            M.TAG_METHOD_NAME: job.method,
            M.TAG_METHOD_LABEL: method.label or method.name,
            M.TAG_METHOD_MARKER: method.marker,
        }
        if job.cost_weight is not None:
            tags[M.TAG_COST_WEIGHT] = job.cost_weight
        if job.needs:
            needed = self.tracker.find(M.TAG_TRIAL_ID, job.needs, self.parent)
            if needed:
                # What it starts from, by what it is: an SP run's id is also its sp_run_id
                # (an ACT run's start is the plain baseline, not SP).
                tags[M.TAG_INIT_RUN_ID] = needed
                if self.plan.job(job.needs).stage.train.stage == "sp":
                    tags[M.TAG_SP_RUN_ID] = needed
        return job_params(job, self.plan), tags

    def note(self, job: Job, tags: dict) -> str:
        """A run's description (Markdown, on its page): what it is, what it starts from and
        what its metrics hold, the split of every accuracy named."""
        method = self.plan.method(job.method)
        what = f"{method.label or method.name} {job.stage.train.stage} of {job.backbone}"
        if job.cost_weight is not None:
            what += f", {job.cost_weight} {job.cost_weight_value:g}"
        if M.TAG_INIT_RUN_ID in tags:
            what += f"; starts from run `{tags[M.TAG_INIT_RUN_ID]}` ({job.needs})"
        lines = [what, "", "| metric | what it holds |", "|---|---|"]
        described = M.describe_metrics(self.plan.stage_of(job).data.selection_set)
        lines += [f"| `{name}` | {text} |" for name, text in described.items()]
        return "\n".join(lines)

    def _run(self, trial) -> _Logged:
        if trial.trial_id not in self._runs:
            job = self.plan.job_of(trial.config)
            params, tags = self.describe(job)
            run_id, created = self.tracker.get_or_create(
                M.TAG_TRIAL_ID, job.id, job.id, parent=self.parent, params=params, tags=tags
            )
            if created:
                self.tracker.set_description(run_id, self.note(job, tags))
            done = not created and self.tracker.status(run_id) == "FINISHED"
            if not created and not done:
                # A retried or resumed run: running again, and no longer failed.
                self.tracker.clear_error(run_id)
            # A resumed trial re-reports what followed its checkpoint: evaluations and the
            # training logs between them, each logged once.
            last = -1 if created else max(self.tracker.last_step(run_id, k) for k in _CURVES)
            logged = set() if created else self.tracker.metric_keys(run_id)
            self._runs[trial.trial_id] = _Logged(run_id, last, done, job, logged)
        return self._runs[trial.trial_id]

    # --- a store that fails: the sweep goes on, the missed events are logged later -----

    @property
    def backlog_path(self) -> Path:
        return self.plan.store.local_dir(self.plan.sweep_id) / BACKLOG_FILE

    def _event(self, kind: str, seen: _Seen, result: dict | None = None) -> None:
        """Log one event; while the store fails, keep it (and every later one, in order)
        and try the store again every ``RETRY_S`` seconds."""
        if not self._loaded:
            self._loaded = True
            self._backlog = self._saved() + self._backlog
        self._backlog.append((kind, seen, result))
        if self._down_since is not None and time.monotonic() - self._down_since < RETRY_S:
            self._save()
            return
        self.flush()

    def flush(self) -> bool:
        """Log what the store missed; True once nothing is left."""
        missed = len(self._backlog)
        while self._backlog:
            kind, seen, result = self._backlog[0]
            try:
                self._handle(kind, seen, result)
            except store_errors() as err:
                if self._down_since is None:
                    reason = " ".join(str(err).split())[:160] or type(err).__name__
                    print(
                        f"warning: the tracking store {self.tracker.tracking_uri} failed "
                        f"({type(err).__name__}: {reason}); training and checkpoints go on, "
                        "and what it misses is logged once it answers again (or when the "
                        "same command runs next)",
                        flush=True,
                    )
                self._down_since = time.monotonic()
                self._save()
                return False
            self._backlog.pop(0)
        if self._down_since is not None or missed > 1:
            print(
                f"the tracking store {self.tracker.tracking_uri} answers again: logged the "
                f"{missed} events it missed",
                flush=True,
            )
        self._down_since = None
        self._save()
        return True

    def _handle(self, kind: str, seen: _Seen, result: dict | None) -> None:
        if kind == "start":
            self._run(seen)
        elif kind == "result":
            self._on_result(seen, result or {})
        elif kind == "complete":
            self._on_complete(seen)
        else:
            self._on_error(seen)

    def _saved(self) -> list:
        path = self.backlog_path
        if not path.is_file():
            return []
        try:
            items = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        return [(kind, _Seen(**seen), result) for kind, seen, result in items]

    def _save(self) -> None:
        path = self.backlog_path
        try:
            if not self._backlog:
                path.unlink(missing_ok=True)
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            items = [(kind, seen.__dict__, result) for kind, seen, result in self._backlog]
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(items))
            tmp.replace(path)
        except OSError:  # a full disk: kept in memory for this run
            pass

    def catch_up(self) -> bool:
        """Log what an earlier run of this sweep (or this one) could not, quietly if the
        store still fails (its failure was said); True once nothing is left."""
        self._loaded = True
        self._backlog = self._saved() + self._backlog
        if not self._backlog:
            return True
        self._down_since = time.monotonic()
        return self.flush()

    def on_experiment_end(self, trials, **info):
        if self._backlog:
            self.flush()

    # --- Tune's calls ---------------------------------------------------------------------

    def on_trial_start(self, iteration, trials, trial, **info):
        self._event("start", _Seen.of(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._event("result", _Seen.of(trial), _plain(result))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._event("complete", _Seen.of(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._event("error", _Seen.of(trial, error=True))

    def _on_result(self, trial, result: dict) -> None:
        entry = self._run(trial)
        step = result.get(STEP)
        if step is None or ERROR in result or AGAIN in result or entry.done:
            return
        if entry.step < 0 and result.get("node_ip"):
            # Where the trial ran: placement on a cluster is visible from MLflow.
            self.tracker.set_tags(entry.run_id, {"node_ip": str(result["node_ip"])})
        if result.get(CACHED):
            self.tracker.set_tags(entry.run_id, {"cached": "true"})
        if result.get(CACHE_REJECTED):
            self.tracker.set_tags(entry.run_id, {CACHE_REJECTED: str(result[CACHE_REJECTED])[:500]})
        # Tune's bookkeeping (times, pid, iteration counters) is not a metric of the run.
        ours = {k: v for k, v in result.items() if k not in TUNE_KEYS}
        if step > entry.step:
            self.tracker.log_metrics(entry.run_id, ours, step)
            entry.step, entry.keys = step, set(ours)
        elif result.get("final"):
            # The final result repeats the last evaluation: log only what it adds, once
            # (a resumed run's history has no point twice).
            new = {k: v for k, v in ours.items() if k not in entry.keys}
            if step == entry.step and new:
                self.tracker.log_metrics(entry.run_id, new, step)
                entry.keys |= set(new)

    def _on_complete(self, trial) -> None:
        entry = self._run(trial)
        run_id, job = entry.run_id, entry.job
        if entry.done:  # recorded in full by an earlier driver
            return
        result = trial.last_result or {}
        if ERROR in result:
            self.tracker.set_tags(run_id, {M.TAG_ERROR: result[ERROR]})
            self.tracker.finish(run_id, "FAILED")
            return
        if AGAIN in result:
            # Both runs again from the start, as new runs: these are kept, retired.
            why = str(result.get(CACHE_REJECTED, ""))[:400]
            self.retire(run_id, job.id, f"its start was rejected: {why}")
            needed = self.tracker.find(M.TAG_TRIAL_ID, result[AGAIN], self.parent)
            if needed is not None and self.tracker.status(needed) == "FINISHED":
                self.retire(needed, result[AGAIN], f"its cache entry was rejected: {why}")
            self._runs.pop(trial.trial_id, None)
            return
        # Its final checkpoint, which Tune's restored state may name after its deletion.
        ckpt = _surviving(trial.checkpoint) if trial.checkpoint is not None else None
        try:
            with self._artifacts(ckpt, job) as folder:
                if folder is not None:
                    self.tracker.log_artifacts(run_id, folder, M.ARTIFACT_DIR)
        except OSError as err:  # the run finished; its files stay in storage
            self.tracker.set_tags(run_id, {"skipnet.artifacts_error": str(err)[:300]})
        weights = self._weights(ckpt, job)
        if weights is not None:
            self.tracker.set_tags(run_id, {M.TAG_CHECKPOINT: weights})
        self.tracker.finish(run_id, "FINISHED")

    def retire(self, run_id: str, job_id: str, why: str) -> None:
        """Keep a run that will run again from the start but no longer find it by its job
        (its trial-id tag renamed), FAILED with the reason: the rerun is a run of its own."""
        self.tracker.set_tags(
            run_id, {M.TAG_TRIAL_ID: f"{job_id}-retired-{int(time.time())}", M.TAG_ERROR: why}
        )
        self.tracker.finish(run_id, "FAILED")

    def _weights(self, ckpt, job: Job) -> str | None:
        """Where the run's final weights are (the cache for a shared job, the trial's final
        checkpoint ``ckpt`` otherwise): ``train eval --checkpoint`` takes it."""
        if job.shared:
            return str(self.plan.checkpoint(job))
        if ckpt is None:
            return None
        kind = ckpt.filesystem.type_name
        root = ckpt.path.rstrip("/") if kind == "local" else f"{kind}://{ckpt.path.strip('/')}"
        return f"{root}/{MODEL_FILE}"

    @contextlib.contextmanager
    def _artifacts(self, ckpt, job: Job):
        """The run's evaluation files as a local folder (None if it has none): a shared
        job's from its cache entry, a trial's from its final checkpoint ``ckpt``."""
        if job.shared:
            store = self.plan.store
            folder = f"{str(self.plan.checkpoint(job)).rsplit('/', 1)[0]}/{M.ARTIFACT_DIR}"
            if not store.exists(folder):
                yield None
                return
            with store.local_copy(folder) as local:
                yield local
            return
        with _restored(ckpt) as restored:
            local = restored / M.ARTIFACT_DIR if restored is not None else None
            yield local if local is not None and local.is_dir() else None

    def _on_error(self, trial) -> None:
        run_id = self._run(trial).run_id
        msg = trial.get_error() or "trial errored"
        self.tracker.set_tags(run_id, {M.TAG_ERROR: msg[:500]})
        self.tracker.finish(run_id, "FAILED")


def job_params(job: Job, plan: Plan) -> dict:
    """MLflow params of a job: its stage config, its coordinates, its method's own."""
    stage = plan.stage_of(job)
    t = stage.train
    params = {
        M.PARAM_DATASET: stage.data.dataset,
        M.PARAM_ARCH: stage.model.arch,
        # Only a network with gates has a gate design (ACT's halting units and the plain
        # ResNet have none; the method tag says what they are).
        M.PARAM_GATE: stage.model.gate if stage.model.gate in GATE_DESIGNS else None,
        M.PARAM_SEED: t.seed,
        M.PARAM_VARIANT: stage.variant,
        M.SELECTION_SET: stage.data.selection_set,
        "val_split": stage.data.val_split,
        "lr": t.lr,
        "iterations": t.iterations,
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        # How many rounds each speed-up's median and quartiles are over.
        "latency_repeats": stage.latency.repeats if stage.latency.batch_sizes else None,
        # Where its initial weights are (the run they come from: tag init_run_id).
        "init": _uri(stage.init) if stage.init else None,
        M.PARAM_SP_KEY: job.key
        if job.shared
        else (Path(stage.init).parent.name if stage.init else None),
    }
    params.update({k: v for k, v in job.coords if k not in ("backbone", "gate")})
    params.update(plan.method(job.method).params(job))
    return params


def _uri(path: str) -> str:
    """A storage path as a URI: ``file://`` for a local one, object storage's as it is."""
    return path if "://" in path else Path(path).resolve().as_uri()
