"""The Ray layer: what runs on workers (SP on Ray Train, trials on Ray Tune) and the driver's
MLflow callback. The training itself is ``stages.run_stage``; this file only wraps it.

Three layers, each runnable alone (as in Ray's Train/Tune interop example):
``sp_worker`` is the per-worker loop of a ``TorchTrainer``; ``sp_driver`` is a Tune function
that builds and fits that trainer (so independent SP jobs run concurrently under Tune's
resource management) and caches its result; ``trial_fn`` is a Tune function for one HRL,
ACT or SACT trial, starting from the cached checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from skipnet_sweep import metrics as M
from skipnet_sweep.stages import NonFiniteLossError, StageConfig, load_checkpoint, run_stage
from skipnet_sweep.stages.checkpoint import save_checkpoint
from skipnet_sweep.sweep.plan import Plan, Point, SPJob
from skipnet_sweep.sweep.tracking import Tracker

STATE_FILE = "checkpoint.pt"  # resumable state (weights + optimiser + step)
MODEL_FILE = "model.pt"  # final weights
FINAL_FILE = "final.json"  # a finished trial's final result
STEP = "step"
ERROR = "error"
TUNE_KEYS = frozenset(
    (
        "training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "pid",
        "time_since_restore", "iterations_since_restore", "timesteps_total", "episodes_total",
        "timesteps_since_restore", "done", "final", STEP,
    )
)  # fmt: skip


def _threads(cpus: float) -> None:
    # Ray sets OMP_NUM_THREADS=1 in workers; use the CPUs the trial asked for.
    torch.set_num_threads(max(1, int(cpus)))


def _resume_file(checkpoint) -> Path | None:
    if checkpoint is None:
        return None
    local = Path(checkpoint.to_directory())
    state = local / STATE_FILE
    return state if state.is_file() else None


# --- SP on Ray Train --------------------------------------------------------------------


def sp_worker(config: dict) -> None:
    """One data-parallel worker of an SP (or baseline) job; rank 0 evaluates and saves."""
    import ray.train
    import ray.train.torch

    stage = StageConfig.from_dict(config["stage"])
    _threads(config.get("cpus", 1))
    rank = ray.train.get_context().get_world_rank()
    resume = _resume_file(ray.train.get_checkpoint())
    last = {STEP: 0}

    def prepare(model, loader):
        return ray.train.torch.prepare_model(model), ray.train.torch.prepare_data_loader(loader)

    def on_report(step: int, metrics: dict, save) -> None:
        last[STEP] = step
        if save is None:
            ray.train.report({}, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as d:
            save(Path(d) / STATE_FILE)
            ray.train.report(
                {**metrics, STEP: step}, checkpoint=ray.train.Checkpoint.from_directory(d)
            )

    with tempfile.TemporaryDirectory() as d:
        result = run_stage(
            stage,
            Path(d) / MODEL_FILE if rank == 0 else None,
            device=ray.train.torch.get_device(),
            on_report=on_report,
            resume=resume,
            progress=False,
            prepare=prepare,
            is_main=rank == 0,
            artifacts=Path(d) / M.ARTIFACT_DIR if rank == 0 else None,
        )
        # One more report from every rank (a barrier): the final weights and evaluation files.
        if rank == 0:
            ray.train.report(
                {**result.metrics, STEP: last[STEP], "final": 1},
                checkpoint=ray.train.Checkpoint.from_directory(d),
            )
        else:
            ray.train.report({}, checkpoint=None)


@dataclass
class SPOutcome:
    """What an SP job ended with: its metrics at every evaluation, and where its final
    evaluation files are; ``error`` when it failed."""

    job: SPJob
    history: list[dict] = field(default_factory=list)
    cached: bool = False
    error: str | None = None

    @property
    def metrics(self) -> dict:
        return self.history[-1] if self.history else {}


def fit_sp_job(job: SPJob, plan: Plan) -> SPOutcome:
    """Reuse an SP job's cached checkpoint, or fit a ``TorchTrainer`` for it and cache the
    result under its key in shared storage. Re-running after an interruption resumes the
    trainer (same run name and storage) from its last checkpoint."""
    import ray.train
    from ray.train.torch import TorchTrainer

    cache = job.checkpoint(plan.storage)
    if cache.is_file():
        payload = load_checkpoint(cache)
        return SPOutcome(job, [{**payload["metrics"], STEP: payload["step"]}], cached=True)
    res = plan.space.resources.sp
    stage = job.stage.to_dict()
    # The space gives the global batch; each of the workers takes its share.
    stage["train"]["batch_size"] = max(1, job.stage.train.batch_size // res.workers)
    trainer = TorchTrainer(
        sp_worker,
        train_loop_config={"stage": stage, "cpus": res.cpu},
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.workers,
            use_gpu=res.gpu > 0,
            resources_per_worker={"CPU": res.cpu, **({"GPU": res.gpu} if res.gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=job.trial_id,
            storage_path=str(plan.storage / "train"),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as err:  # Ray raises TrainingFailedError and friends
        lines = str(err).strip().splitlines()
        return SPOutcome(job, error=(lines[-1] if lines else type(err).__name__)[:500])
    history = []
    if result.metrics_dataframe is not None:
        history = [
            {k: v for k, v in row.items() if isinstance(v, int | float) and v == v}
            for row in result.metrics_dataframe.to_dict("records")
        ]
    with result.checkpoint.as_directory() as d:
        _publish(Path(d), cache)
    return SPOutcome(job, [h for h in history if STEP in h or "final" in h])


def _publish(src: Path, cache: Path) -> None:
    """Copy a finished job's weights and evaluation files into the cache, weights last and
    atomically, so a cache entry exists only once it is complete."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    if (src / M.ARTIFACT_DIR).is_dir():
        shutil.copytree(src / M.ARTIFACT_DIR, cache.parent / M.ARTIFACT_DIR, dirs_exist_ok=True)
    payload = load_checkpoint(src / MODEL_FILE)
    save_checkpoint(cache, {k: v for k, v in payload.items() if k != "format"})


# --- trials on Ray Tune -----------------------------------------------------------------


def trial_fn(config: dict, plan: Plan) -> None:
    """Tune function for one HRL (or ACT/SACT) trial; resumes from its last checkpoint."""
    from ray import tune

    point = Point.from_config(config)
    stage = plan.trial_stage(point)
    res = plan.space.resources.trial
    _threads(res.cpu)
    device = "cuda" if res.gpu > 0 and torch.cuda.is_available() else "cpu"
    last: dict = {STEP: 0, M.TOP1: 0.0, M.FLOPS_MEAN: 1e18}
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None and (Path(checkpoint.to_directory()) / FINAL_FILE).is_file():
        # Restored from the trial's final checkpoint (the driver died between the trial's
        # end and Tune's next state save): its result is already reported; do not retrain.
        return

    def on_report(step: int, metrics: dict, save) -> None:
        last.update({STEP: step, M.TOP1: metrics[M.TOP1], M.FLOPS_MEAN: metrics[M.FLOPS_MEAN]})
        with tempfile.TemporaryDirectory() as d:
            save(Path(d) / STATE_FILE)
            tune.report({**metrics, STEP: step}, checkpoint=tune.Checkpoint.from_directory(d))

    try:
        with tempfile.TemporaryDirectory() as d:
            result = run_stage(
                stage,
                None,
                device=device,
                on_report=on_report,
                resume=_resume_file(checkpoint),
                progress=False,
                artifacts=Path(d) / M.ARTIFACT_DIR,
            )
            final = {**result.metrics, STEP: last[STEP], "final": 1}
            (Path(d) / FINAL_FILE).write_text(json.dumps(final))
            tune.report(final, checkpoint=tune.Checkpoint.from_directory(d))
    except NonFiniteLossError as err:
        # Stop this trial with its reason; not an error Tune would retry (it would recur). A
        # search algorithm needs its objectives in every result: the last evaluated ones (or
        # the worst possible before any evaluation) stand in.
        tune.report({**last, ERROR: str(err), STEP: last[STEP] + 1})


# --- the driver's MLflow callback -------------------------------------------------------


def _tune_callback_base():
    from ray.tune import Callback

    return Callback


class TrackingCallback(_tune_callback_base()):
    """Logs every trial of a Tuner to its own nested MLflow run (created once, found again by
    the trial-id tag after a restore) and marks it finished or failed.

    Args:
        tracker: the MLflow tracker.
        parent: the sweep's parent run id.
        plan: the sweep plan (maps a trial's config to its job or point).
    """

    def __init__(self, tracker: Tracker, parent: str, plan: Plan):
        self.tracker = tracker
        self.parent = parent
        self.plan = plan
        # Tune trial id -> [run id, last logged step, finished before this driver started]
        self._runs: dict[str, list] = {}

    def __getstate__(self) -> dict:
        return {"tracker": self.tracker, "parent": self.parent, "plan": self.plan}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["tracker"], state["parent"], state["plan"])

    def describe(self, config: dict) -> tuple[str, str, dict, dict]:
        """(trial id, run name, params, tags) of a trial's config."""
        if "job" in config:
            job = next(j for j in self.plan.sp_jobs if j.trial_id == config["job"])
            return (
                job.trial_id,
                job.trial_id,
                job_params(job),
                {
                    M.TAG_STAGE: job.kind,
                    M.TAG_METHOD: M.method_of(job.kind, job.gate),
                },
            )
        point = Point.from_config(config)
        stage = self.plan.trial_stage(point)
        tags = {M.TAG_STAGE: point.stage, M.TAG_METHOD: point.method}
        if point.variant == "hrl+sp":
            sp = self.plan.sp_job("sp", point.backbone, point.gate)
            sp_run = self.tracker.find(M.TAG_TRIAL_ID, sp.trial_id, self.parent)
            if sp_run:
                tags[M.TAG_SP_RUN_ID] = sp_run
        elif point.stage in ("act", "sact"):
            base = self.plan.sp_job("baseline", point.backbone, None)
            base_run = self.tracker.find(M.TAG_TRIAL_ID, base.trial_id, self.parent)
            if base_run:
                tags[M.TAG_SP_RUN_ID] = base_run
        tid = point.trial_id(self.plan.sweep_id)
        params = stage_params(stage, self.plan)
        params[M.PARAM_VARIANT] = point.variant
        params[M.PARAM_ALPHA if point.stage == "hrl" else M.PARAM_TAU] = point.weight
        return tid, tid, params, tags

    def _run(self, trial) -> list:
        if trial.trial_id not in self._runs:
            tid, name, params, tags = self.describe(trial.config)
            run_id, created = self.tracker.get_or_create(
                M.TAG_TRIAL_ID, tid, name, parent=self.parent, params=params, tags=tags
            )
            done = not created and self.tracker.status(run_id) == "FINISHED"
            last = -1 if created else self.tracker.last_step(run_id)
            self._runs[trial.trial_id] = [run_id, last, done]
        return self._runs[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        entry = self._run(trial)
        step = result.get(STEP)
        if step is None or ERROR in result or entry[2]:
            return
        if entry[1] < 0 and result.get("node_ip"):
            # Where the trial ran: placement on a cluster is visible from MLflow.
            self.tracker.set_tags(entry[0], {"node_ip": str(result["node_ip"])})
        if step > entry[1] or result.get("final"):
            # Tune's bookkeeping (times, pid, iteration counters) is not a metric of the run.
            ours = {k: v for k, v in result.items() if k not in TUNE_KEYS}
            self.tracker.log_metrics(entry[0], ours, step)
            entry[1] = max(entry[1], step)

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id, _, done = self._run(trial)
        if done:  # recorded in full by an earlier driver
            return
        result = trial.last_result or {}
        if ERROR in result:
            self.tracker.set_tags(run_id, {M.TAG_ERROR: result[ERROR]})
            self.tracker.finish(run_id, "FAILED")
            return
        ckpt = trial.checkpoint
        if ckpt is not None:
            with ckpt.as_directory() as d:
                if (Path(d) / M.ARTIFACT_DIR).is_dir():
                    self.tracker.log_artifacts(run_id, Path(d) / M.ARTIFACT_DIR, M.ARTIFACT_DIR)
        self.tracker.finish(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run(trial)[0]
        err = trial.get_error()
        msg = str(err).strip().splitlines()[-1] if err else "trial errored"
        self.tracker.set_tags(run_id, {M.TAG_ERROR: msg[:500]})
        self.tracker.finish(run_id, "FAILED")


def stage_params(stage: StageConfig, plan: Plan) -> dict:
    """MLflow params of a stage config (names from ``skipnet_sweep.metrics``)."""
    t = stage.train
    return {
        M.PARAM_DATASET: stage.data.dataset,
        M.PARAM_ARCH: stage.model.arch,
        M.PARAM_GATE: stage.model.gate or "none",
        M.PARAM_SEED: t.seed,
        "lr": t.lr,
        "iterations": t.iterations,
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "gamma": t.gamma if t.stage == "hrl" else None,
        "rl_weight": t.rl_weight if t.stage == "hrl" else None,
        "cost": t.cost if t.stage == "hrl" else None,
        "init": os.path.basename(stage.init) if stage.init else None,
        M.PARAM_SP_KEY: Path(stage.init).parent.name if stage.init else None,
    }


def job_params(job: SPJob) -> dict:
    params = stage_params(job.stage, None)
    params[M.PARAM_VARIANT] = job.stage.variant
    params[M.PARAM_SP_KEY] = job.key
    return params
