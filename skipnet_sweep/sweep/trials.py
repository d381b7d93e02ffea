"""The Tune layer: every stage of a sweep is one Tune trial, and ``stage_trial`` only wraps
``stages.run_stage`` for it.

Three layers, each runnable alone (as in Ray's Train/Tune interop example):
``shared_worker`` is the per-worker loop of a ``TorchTrainer`` (a shared pre-training job:
the plain baseline, SkipNet's SP; ``sweep/train_worker.py``); ``stage_trial`` is the Tune
function of every job: for a data-parallel shared job (``resources.sp.workers`` > 1) it
builds and fits that ``TorchTrainer`` (whose reports reach Tune, and so MLflow, as they
happen, through ``TuneReportCallback``); any other job, a one-worker shared job included,
runs in the trial's own process, resumed by Tune from its last checkpoint. A shared job's
result is cached under its key. ``TrackingCallback`` (``sweep/tracking_callback.py``) is the
driver's MLflow writer for all of them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import Job
from skipnet_sweep.runner import run_stage
from skipnet_sweep.stages import NonFiniteLossError
from skipnet_sweep.sweep import cache, ray_private
from skipnet_sweep.sweep.plan import MODEL_FILE, Plan
from skipnet_sweep.sweep.report_keys import CACHE_REJECTED, CACHED, STEP, TOTAL_STEPS
from skipnet_sweep.sweep.searcher import AGAIN, ERROR, EVALUATION
from skipnet_sweep.sweep.train_worker import _adopt, _fit_shared, _publish, _threads, _trial_id
from skipnet_sweep.sweep.trial_checkpoints import (
    FINAL_FILE,
    _local_init,
    _reported,
    _restored,
    _RestoreSurviving,
    _resume_file,
    _seal,
    _write_state,
    take_swapped,
)


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
    again = take_swapped(checkpoint.path if checkpoint is not None else None)
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
            _local_init(plan.config_of(job), plan.store, resume) as stage,
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
