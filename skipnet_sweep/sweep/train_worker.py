"""The Ray Train layer of a shared job (the plain baseline, SkipNet's SP) with
``resources.sp.workers`` > 1: ``shared_worker``, the per-worker loop of a ``TorchTrainer``,
and ``_fit_shared``, which builds and fits that trainer from inside the job's Tune trial
(its reports reach Tune, and so MLflow, as they happen, through ``TuneReportCallback``).
With what every job's process sets up first, which the trials share."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import Job, Method, register_method
from skipnet_sweep.runner import run_stage
from skipnet_sweep.stages import StageConfig
from skipnet_sweep.sweep import cache
from skipnet_sweep.sweep.plan import MODEL_FILE, Plan
from skipnet_sweep.sweep.report_keys import STEP, TOTAL_STEPS
from skipnet_sweep.sweep.storage import Storage
from skipnet_sweep.sweep.trial_checkpoints import (
    _local_init,
    _reported,
    _restored,
    _resume_file,
    _write_state,
)


def _threads(cpus: float) -> None:
    # Ray sets OMP_NUM_THREADS=1 in workers; use the CPUs the job asked for.
    torch.set_num_threads(max(1, int(cpus)))


def _adopt(methods: tuple[Method, ...]) -> None:
    # The plan carries its methods: a plugin registered only in the driver (a test file, a
    # user's script) is known in this worker process too.
    for method in methods:
        register_method(method, replace=True)


def _trial_id() -> str:
    """The Tune trial this process runs: the same id across the trial's retries."""
    from ray import tune

    return tune.get_context().get_trial_id()


def _publish(folder: Path, job: Job, plan: Plan) -> dict:
    """Publish a shared job's final checkpoint ``folder`` to its cache entry, recording this
    trial as its producer."""
    return cache.publish(folder, MODEL_FILE, plan.checkpoint(job), job, plan.store, _trial_id())


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
    stage = plan.config_of(job).to_dict()
    # The space gives the global batch; each of the workers takes its share.
    stage["train"]["batch_size"] = max(1, job.config.train.batch_size // res.workers)
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
