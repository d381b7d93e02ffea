"""One Tuner for every job of a sweep (restored when the sweep was interrupted), Tune's
settings for it, and why each job has not finished."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep import ray_private
from skipnet_sweep.sweep.plan import Plan
from skipnet_sweep.sweep.ray_start import _env_defaults
from skipnet_sweep.sweep.tracking import Tracker


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the sweep once Tune had stopped its trials and saved its state (a
    second Ctrl-C is a plain KeyboardInterrupt); the same command resumes it."""


def _storage_for_job(plan: Plan, job) -> list[Path | str]:
    """What a fresh start removes for a shared job: its cache entry and Ray Train run."""
    entry = str(plan.checkpoint(job)).rsplit("/", 1)[0]
    return [entry, plan.store.path("train", job.id)]


def _trial_dirname(trial, plan: Plan) -> str:
    config = trial.config
    if config.get("job"):
        again = f"-again{config['attempt']}" if config.get("attempt") else ""
        return config["job"][:120] + again
    return f"{config['method']}-optuna{config.get('optuna_trial', '')}"


def run_jobs(
    plan: Plan, tracker: Tracker, parent: str, fresh: bool, verbose: bool = False
) -> dict[str, str]:
    """Run every job of the plan as Tune trials of one Tuner (restored when this sweep was
    interrupted); returns why each failed or never ran, by job id."""
    from ray import tune

    from skipnet_sweep.sweep.progress import ProgressCallback
    from skipnet_sweep.sweep.searcher import JobSearch, JobSearcher, SharedAwareASHA
    from skipnet_sweep.sweep.tracking_callback import TrackingCallback
    from skipnet_sweep.sweep.trials import stage_trial, trial_resources

    space = plan.space
    name = f"sweep-{plan.sweep_id}"
    path = str(plan.store.path("tune", name))
    if fresh:
        for job in plan.shared_jobs:
            for folder in _storage_for_job(plan, job):
                plan.store.remove(folder)
        plan.store.remove(path)
        Path(plan.optuna_storage.removeprefix("sqlite:///")).unlink(missing_ok=True)
    trainable = tune.with_resources(
        tune.with_parameters(stage_trial, plan=plan), partial(trial_resources, plan=plan)
    )
    if plan.store.exists(path) and tune.Tuner.can_restore(path):
        print(f"resuming {name} from {path}")
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        scheduler = None
        if space.scheduler is not None:
            scheduler = SharedAwareASHA(
                plan,
                metric=M.TOP1,
                mode="max",
                grace_period=space.scheduler.grace_period,
                reduction_factor=space.scheduler.reduction_factor,
            )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=JobSearch(JobSearcher(plan, space.max_concurrent_trials)),
                num_samples=-1,
                scheduler=scheduler,
                trial_dirname_creator=partial(_trial_dirname, plan=plan),
                # A finished trial's process runs the next trial of the same resources (a
                # process start-up is seconds, longer than a short trial), unless shared jobs
                # are data-parallel: Tune keeps reused processes with their CPUs, and a shared
                # job asks Ray for its Train workers from inside its trial, where Tune cannot
                # see the request (measured: the SP waited forever for the CPUs that cached
                # ACT and SACT processes held).
                reuse_actors=not space.resources.sp.data_parallel,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(plan.store.path("tune")),
                callbacks=[TrackingCallback(tracker, parent, plan), ProgressCallback(plan)],
                failure_config=tune.FailureConfig(max_failures=space.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=1 if verbose else 0,
            ),
        )
    with _env_defaults(tune_settings(plan)), ray_private.tune_stops_on_sigint() as interrupt:
        grid = tuner.fit()
    if interrupt.received:
        raise SweepInterrupted(f"Tune stopped the trials of {name} and saved its state")
    failed = _failures(grid, plan)
    catching_up = TrackingCallback(tracker, parent, plan)  # Tune's copy saved what it missed
    if not catching_up.catch_up():
        failed["tracking"] = (
            f"{len(catching_up._backlog)} events not logged to {tracker.tracking_uri} (kept in "
            f"{catching_up.backlog_path}); run the same command once the store answers"
        )
    return failed


def tune_settings(plan: Plan) -> dict[str, str]:
    """Tune's settings for this sweep (read by Tune in the driver, from the environment).

    - ``TUNE_MAX_PENDING_TRIALS_PG``: Tune lets only one trial at a time wait for its
      process unless the searcher is its own ConcurrencyLimiter
      (ray/tune/execution/tune_controller.py, ``_get_max_pending_trials``), which would run
      trials shorter than a process start-up (seconds) one after another. The searcher
      enforces max_concurrent_trials itself.
    - ``TUNE_GLOBAL_CHECKPOINT_S``: Tune saves its experiment state every second (its default:
      about 10 s, adapted), so a trial that finished just before the driver was killed is
      not run again on resume. Not on object storage: there every save uploads the whole
      experiment folder (Tune's syncer), one upload after another at this period; Tune's own
      period keeps uploads to a few per cent of the sweep's time (measured,
      tests/test_faults.py alone: its S3 server's CPU 15.8 s -> 6.8 s, the test 114 s ->
      101 s), and a finished trial that a resume runs again returns from its final
      checkpoint at once.
    """
    pending = plan.space.max_concurrent_trials or len(plan.jobs) or 1
    return {
        "TUNE_MAX_PENDING_TRIALS_PG": str(pending),
        "TUNE_GLOBAL_CHECKPOINT_S": "1" if plan.store.is_local else "auto",
    }


def _failures(grid, plan: Plan) -> dict[str, str]:
    """Why each job of the plan has not finished: its trial failed, or it never ran (what
    it starts from failed, or it waits to be trained again). A job counts as finished once
    one of its trials did, so a job retried by a later run is failed only until it succeeds."""
    from skipnet_sweep.sweep.searcher import AGAIN, ERROR

    out: dict[str, str] = {}
    done = set()
    for r in grid:
        job = plan.job_of(r.config)
        metrics = r.metrics or {}
        if r.error is not None:
            out.setdefault(job.id, str(r.error).strip().splitlines()[-1][:300])
        elif ERROR in metrics:
            out.setdefault(job.id, str(metrics[ERROR]))
        elif AGAIN in metrics:
            out.setdefault(job.id, f"waits for {metrics[AGAIN]}, whose cache entry was set aside")
        else:
            done.add(job.id)
    for job_id in done:
        out.pop(job_id, None)
    for job in plan.jobs:  # in plan order: what a job needs is listed before it
        if job.id in done or job.id in out:
            continue
        if job.needs in out:
            out[job.id] = f"not run: it starts from {job.needs}, which has not finished"
        else:
            out[job.id] = "not run"
    return out
