"""The sweep's driver: Ray start-up and checks, one Tuner for every job, the Pareto frontier.

Resume: every name is deterministic (the sweep id, the Tune experiment name, the job ids),
so re-running the same command after the driver was killed restores the Tune experiment
(finished trials are not re-run, the searcher knows what it handed out), finds the cached
pre-training checkpoints and finds the MLflow runs by their tags. ``fresh=True`` starts over
deliberately.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

from skipnet_sweep.reporting.sweep_figures import log_frontier_figures
from skipnet_sweep.sweep import lock
from skipnet_sweep.sweep.frontier import (
    log_frontier_models,
    model_version_labels,
    registered_model_name,
    update_frontier,
)
from skipnet_sweep.sweep.frontier_table import frontier_table
from skipnet_sweep.sweep.parent_run import open_parent
from skipnet_sweep.sweep.plan import Plan
from skipnet_sweep.sweep.preflight import check_fits, preflight, worker_group_order
from skipnet_sweep.sweep.ray_start import (
    _env_defaults,
    log_path,
    route_logs,
    ship_plugins,
    start_ray,
)
from skipnet_sweep.sweep.result import (
    COMPARABLE_LATENCY,
    LATENCY_INTERVAL,
    ROUTING,
    VERDICT,
    SweepResult,
)
from skipnet_sweep.sweep.tracking import tracker_for
from skipnet_sweep.sweep.tuner import SweepInterrupted, _failures, run_jobs, tune_settings

# The names the entry points and tests import from the driver, wherever they are defined.
__all__ = [
    "COMPARABLE_LATENCY",
    "LATENCY_INTERVAL",
    "ROUTING",
    "VERDICT",
    "SweepInterrupted",
    "SweepResult",
    "_env_defaults",
    "_failures",
    "check_fits",
    "frontier_table",
    "log_frontier_models",
    "log_path",
    "model_version_labels",
    "open_parent",
    "preflight",
    "registered_model_name",
    "run_sweep",
    "start_ray",
    "tracker_for",
    "tune_settings",
    "update_frontier",
    "worker_group_order",
]


def run_sweep(
    plan: Plan,
    *,
    address: str | None = None,
    fresh: bool = False,
    num_cpus: int | None = None,
    verbose: bool = False,
) -> SweepResult:
    """Run a whole sweep: every job, then the frontier. Ray must not be running yet.

    Raises:
        SweepLocked: another driver runs this sweep (nothing was started).
        KeyboardInterrupt: Ctrl-C (``SweepInterrupted`` once Tune saved its state); the
            parent run and the runs that were running are KILLED.
    """
    preflight(plan, address, num_cpus)  # before anything slow is imported or started
    with lock.hold(plan.store, plan.sweep_id):
        return _drive(plan, address, fresh, num_cpus, verbose)


def _drive(
    plan: Plan, address: str | None, fresh: bool, num_cpus: int | None, verbose: bool
) -> SweepResult:
    """``run_sweep`` once its checks passed and its lock is held."""
    with _env_defaults(MLFLOW_FAIL_FAST):
        return _drive_tracked(plan, address, fresh, num_cpus, verbose)


# A tracking server that stops answering fails a call in about 30 s (3 tries of 10 s), not
# MLflow's 8 minutes of retries (7 tries, 120 s each, backoff 2): the sweep says so and goes
# on (``TrackingCallback``).
MLFLOW_FAIL_FAST = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


def _drive_tracked(
    plan: Plan, address: str | None, fresh: bool, num_cpus: int | None, verbose: bool
) -> SweepResult:
    import ray

    from skipnet_sweep.sweep.progress import opening_line
    from skipnet_sweep.sweep.tracking_callback import store_errors

    tracker = tracker_for(plan)
    print(opening_line(plan), flush=True)
    if not verbose:
        route_logs(log_path(plan))
        print(f"Ray, Tune and MLflow messages: {log_path(plan)}", flush=True)
    # The tracking store opens (a new sqlite store is created and migrated, ~3 s here) while
    # Ray starts (~4 s): both wait on start-ups that are not this process's work.
    with ThreadPoolExecutor(1) as pool:
        store = pool.submit(lambda: tracker.experiment_id)
        start_ray(plan, address, num_cpus, verbose)
    parent = None
    try:
        store.result()
        ship_plugins(plan)
        parent = open_parent(plan, tracker, fresh)
        tracker.client.update_run(parent, status="RUNNING")
        failed = run_jobs(plan, tracker, parent, fresh, verbose)
        try:
            result = update_frontier(tracker, parent, plan)
            result.figures = log_frontier_figures(parent, tracker.tracking_uri)
            tracker.finish(parent, "FAILED" if failed else "FINISHED")
        except store_errors() as err:
            # Every job's result is in storage: the next run logs them and the frontier.
            result = SweepResult(parent)
            failed["frontier"] = (
                f"not computed: the tracking store failed ({type(err).__name__}); run the "
                "same command once it answers"
            )
        result.failed = failed
        return result
    except KeyboardInterrupt:
        if parent is not None:
            with contextlib.suppress(*store_errors()):
                tracker.end_killed(parent)
        raise
    except BaseException:
        if parent is not None:  # a crash of the driver itself: the parent run says so
            with contextlib.suppress(*store_errors()):
                tracker.finish(parent, "FAILED")
        raise
    finally:
        ray.shutdown()
