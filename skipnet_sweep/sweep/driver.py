"""The sweep's driver: Ray start-up and checks, one Tuner for every job, the Pareto frontier.

Resume: every name is deterministic (the sweep id, the Tune experiment name, the job ids),
so re-running the same command after the driver was killed restores the Tune experiment
(finished trials are not re-run, the searcher knows what it handed out), finds the cached
pre-training checkpoints and finds the MLflow runs by their tags. ``fresh=True`` starts over
deliberately.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from skipnet_sweep import metrics as M
from skipnet_sweep.analysis.sweep_figures import LoggedFigures, log_frontier_figures
from skipnet_sweep.data import DEFAULT_DOWNLOAD_ROOT, FASHION_MNIST_ROOT
from skipnet_sweep.methods import load_trained, short_hash
from skipnet_sweep.pareto import (
    NOT_FASTER,
    TOO_NOISY,
    format_hypervolume,
    interval_front,
    latency_intervals,
    normalised_hypervolume,
    pareto_front,
    speedup_verdict,
)
from skipnet_sweep.routing import NO_SKIP, ROUTES, routing_kind
from skipnet_sweep.stages import CheckpointError
from skipnet_sweep.stages.checkpoint import make_payload, save_checkpoint
from skipnet_sweep.sweep import lock, ray_private, reaper
from skipnet_sweep.sweep.plan import MODEL_FILE, Plan
from skipnet_sweep.sweep.space import SpaceError, space_to_yaml
from skipnet_sweep.sweep.tracking import Tracker, default_tracking_uri

# A row's batch-1 latency on the scale its frontier is chosen on (``comparable_latency``),
# and the interval the timing's noise gives it (``latency_intervals``).
COMPARABLE_LATENCY = "latency_comparable_ms_b1"
LATENCY_INTERVAL = "latency_interval_ms_b1"
ROUTING = "routing"  # a row's ``routing_kind``: routes, prunes or no skip
VERDICT = "speed_verdict"  # a row's ``speedup_verdict`` at batch 1: faster, not faster, too noisy


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the sweep once Tune had stopped its trials and saved its state (a
    second Ctrl-C is a plain KeyboardInterrupt); the same command resumes it."""


@dataclass
class SweepResult:
    """What a sweep ended with.

    Attributes:
        parent_run_id: the MLflow parent run.
        frontier: rows (run name, method, backbone, weight, top1, flops_mean) on the frontier.
        failed: job ids that failed or never ran, with the reason.
        trials: number of finished runs (shared jobs included).
        hypervolume: of the frontier, as a share of the plain ResNet's box (top-1 in
            [0, 100] x MACs in [0, plain]), in [0, 1].
        latency_frontier: the rows on the frontier of top-1 against measured latency.
        rows: every finished run's row (the frontier's and the rest).
        figures: the frontier figures logged to the parent run (or why they were not).
    """

    parent_run_id: str
    frontier: list[dict] = field(default_factory=list)
    latency_frontier: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    trials: int = 0
    hypervolume: float = 0.0
    figures: LoggedFigures | None = None


def tracker_for(plan: Plan) -> Tracker:
    mlflow = plan.space.mlflow
    return Tracker(default_tracking_uri(mlflow.tracking_uri), mlflow.experiment or plan.space.name)


def preflight(plan: Plan, address: str | None, num_cpus: int | None = None) -> None:
    """Everything that can be checked before Ray starts or anything is written: the tracking
    store answers, a cluster's address answers, every resource request fits this machine
    (a local run), and this Ray has the private names the driver uses. Each problem is one
    ``SpaceError`` naming the field.
    """
    _check_tracking(plan)
    if address is not None:
        _check_address(address)
    else:
        _check_local(plan, num_cpus)
    ray_private.check()


def _check_local(plan: Plan, num_cpus: int | None) -> None:
    """Every job fits a local instance of ``num_cpus`` (else this machine's) CPUs and this
    machine's GPUs: a local Ray cannot grow, and would wait forever."""
    import torch

    cpus = os.cpu_count() or 1
    if num_cpus is not None:
        need = max(ask for _, ask, unit in _requests(plan) if unit == "CPUs")
        least = max(1, math.ceil(need))
        if num_cpus < least:
            raise SpaceError(
                f"{plan.space.source}: --num-cpus: {num_cpus} is fewer than the {need:g} that "
                f"one job of this space asks for (resources); allowed: {least} or more, or "
                f"leave it out for this machine's {cpus}"
            )
        cpus = num_cpus
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    check_fits(plan, cpus, gpus, "this machine")


def _requests(plan: Plan) -> list[tuple[str, float, str]]:
    """What one job of the sweep reserves at most: (field, amount, "CPUs" or "GPUs")."""
    res = plan.space.resources
    return [
        ("resources.trial.cpu", res.trial.cpu, "CPUs"),
        ("resources.trial.gpu", res.trial.gpu, "GPUs"),
        ("resources.sp (workers x cpu)", res.sp.workers * res.sp.cpu, "CPUs"),
        ("resources.sp (workers x gpu)", res.sp.workers * res.sp.gpu, "GPUs"),
    ]


def worker_group_order(plan: Plan, cpus: float | None, gpus: float, where: str) -> str | None:
    """One line for ``--dry-run``: how many data-parallel shared jobs run at once on
    ``cpus``/``gpus`` (None: a cluster's, unknown before it is joined) and in which order
    (the searcher's, ``JobSearcher.footprint``); None when shared jobs are not data-parallel."""
    res = plan.space.resources.sp
    if not res.data_parallel or not plan.shared_jobs:
        return None
    order = ", ".join(j.id for j in plan.shared_jobs)
    group = f"{res.workers} workers x {res.cpu:g} CPU" + (f", {res.gpu:g} GPU" if res.gpu else "")
    if cpus is None:
        at_once = "as many at once as the cluster's CPUs and GPUs hold"
    else:
        fit = [cpus // (res.workers * res.cpu) if res.cpu else math.inf]
        if res.gpu:
            fit.append(gpus // (res.workers * res.gpu))
        n = int(min(fit))
        gpu = f", {gpus:g} GPUs" if res.gpu else ""
        at_once = f"{n} at a time on {cpus:g} CPUs{gpu} ({where})"
    return (
        f"  shared worker groups ({group} each): {at_once}, in this order: {order}; "
        "the trials use what they leave"
    )


def check_fits(plan: Plan, cpus: float, gpus: float, where: str) -> None:
    """Refuse a trial or a shared job's worker group that ``cpus``/``gpus`` cannot hold: Tune
    or Ray Train would wait for it forever."""
    for name, ask, unit in _requests(plan):
        have = cpus if unit == "CPUs" else gpus
        if ask > have:
            raise SpaceError(
                f"{plan.space.source}: {name}: asks for {ask:g} {unit} but {where} has "
                f"{have:g}; lower it{' or pass --address of a larger cluster' if unit == 'GPUs' else ''}"
            )


def _check_tracking(plan: Plan, timeout: float = 5.0) -> None:
    """An http(s) tracking server must answer within ``timeout`` seconds (a wrong URI would
    otherwise hang the sweep after Ray has started)."""
    import urllib.error
    import urllib.request

    uri = tracker_for(plan).tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:
            r.read(64)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise SpaceError(
            f"{plan.space.source}: mlflow.tracking_uri: {uri} does not answer ({reason}); "
            "start the server or fix the URI"
        ) from None


def _check_address(address: str, timeout: float = 5.0) -> None:
    """A cluster given as ``host:port`` (or ``ray://host:port``) must accept a connection
    within ``timeout`` seconds: ``ray.init`` retries an unreachable one for minutes, silently.
    ``auto`` is left to Ray."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, OverflowError) as err:
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise SpaceError(
            f"--address {address}: nothing answers at {host}:{port} ({reason}); start the "
            "cluster there (ray start --head) or fix the address"
        ) from None


def log_path(plan: Plan) -> Path:
    """Where Ray's, Tune's and MLflow's own messages go unless ``-v``."""
    return plan.store.local_dir(plan.sweep_id) / "logs" / f"{plan.sweep_id}.log"


def route_logs(path: Path) -> None:
    """Send the libraries' log records and Python warnings to ``path`` instead of the
    terminal, which shows the sweep's own progress."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)
    roots = ("ray", "mlflow", "optuna", "alembic", "py.warnings")
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in roots]
    for name in {*roots, *names}:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        if name in roots:
            logger.addHandler(handler)
            logger.propagate = False


def start_ray(
    plan: Plan, address: str | None, num_cpus: int | None = None, verbose: bool = False
) -> None:
    """Join a cluster (``address`` or ``$RAY_ADDRESS``) or start a local instance; then check
    that the cluster can serve the space (GPUs, shared storage). Unless ``verbose``, Ray's
    workers keep their output in Ray's session logs and the driver's in ``log_path``."""
    import ray

    ray_private.error_lines_to_log(not verbose)
    env = {
        "RAY_TRAIN_V2_ENABLED": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        # A loaded machine can take longer than the default minute to start a worker group.
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
        # Poll Train workers more often: ~5 s less per SP job on small runs.
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
        "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    }
    if not verbose:
        # Tune's console reporter (boxes, status tables) off: the sweep prints its own lines.
        env["RAY_AIR_NEW_OUTPUT"] = "0"
    for k, v in env.items():
        os.environ.setdefault(k, v)
    kwargs = dict(
        include_dashboard=False,
        log_to_driver=verbose,
        configure_logging=verbose,
        logging_level="WARNING",
        runtime_env={"env_vars": {k: os.environ[k] for k in env}},
    )
    if address:
        try:
            # Ray's C++ client repeats its connection errors on stderr while it retries.
            with _stderr_to(None if verbose else log_path(plan)):
                ray.init(address=address, **kwargs)
        except Exception as err:  # Ray raises several types when it cannot join
            raise SpaceError(_join_error(address, err)) from None
    else:
        # "local": always a new instance, never one that a `ray start` left on this machine.
        # On loopback only (ray_private.loopback_node), without the dashboard
        # (ray_private.no_dashboard). One socket stays open to the network, and it
        # is torch's, not Ray's: while a shared job trains, its rank-0 worker hosts the
        # process group's TCPStore on all interfaces. Ray Train creates the process group,
        # for any number of workers, through a TCPStore (ray/train/torch/config.py,
        # TorchConfig.init_method "env" or "tcp"), and torch binds that store to "::" or
        # "0.0.0.0" unless handed a bound socket (makeWithPort in
        # torch/csrc/distributed/c10d/TCPStoreLibUvBackend.cpp), which Ray Train cannot pass.
        # The raylet starts one Python worker per CPU when the first driver connects, for
        # tasks; Tune's trial actors start processes of their own beside them (measured: the
        # prestarted workers stayed idle in every sweep, about 1 s of CPU each at start-up).
        # What Ray's start-up writes to file descriptor 2 (its token-authentication warning,
        # C++ logs) goes to the log too unless -v.
        with (
            ray_private.loopback_node(),
            ray_private.no_dashboard(),
            _env_defaults({"RAY_prestart_worker_first_driver": "0"}),
            _stderr_to(None if verbose else log_path(plan)),
        ):
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
        # Whatever happens to this driver (even SIGKILL), its instance does not outlive it.
        reaper.start(ray_private.session_dir())
    if not verbose:
        route_logs(log_path(plan))  # again: ray.init adds handlers of its own
    try:
        _check_cluster(plan)
    except SpaceError:
        ray.shutdown()
        raise


@contextlib.contextmanager
def _stderr_to(path: Path | None):
    """Send what is written to file descriptor 2 (C++ logs too) to ``path`` for the block."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "a") as log:
            os.dup2(log.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _join_error(address: str, err: Exception) -> str:
    """One line for a cluster this driver could not join (a missing token above all: Ray
    reports it only as a failed connection, its reason in its own log)."""
    text = " ".join(str(err).split())
    return (
        f"--address {address}: cannot join the Ray cluster ({type(err).__name__}: {text[:100]});"
        " a cluster with token authentication needs its token here (RAY_AUTH_MODE=token with"
        " RAY_AUTH_TOKEN, or the head's ~/.ray/auth_token)"
    )


def ship_plugins(plan: Plan) -> None:
    """Send plugin methods (defined outside this package: a user's module, a test file) to
    the Ray workers by value with the plan, so the nodes need nothing installed for them."""
    import sys

    from ray import cloudpickle

    for method in plan.methods:
        module = type(method).__module__
        if not module.startswith("skipnet_sweep.") and module in sys.modules:
            cloudpickle.register_pickle_by_value(sys.modules[module])


def _check_cluster(plan: Plan) -> None:
    import ray

    space = plan.space
    if space.uses_gpu and ray.cluster_resources().get("GPU", 0) == 0:
        raise SpaceError(
            f"{space.source}: resources: asks for GPUs but the Ray cluster has none; set "
            "resources.sp.gpu and resources.trial.gpu to 0"
        )
    total = ray.cluster_resources()
    try:
        check_fits(plan, total.get("CPU", 0), total.get("GPU", 0), "the Ray cluster")
    except SpaceError as err:
        # A cluster may grow (an autoscaler, nodes still joining): say so, do not refuse.
        print(f"warning: {str(err).split(': ', 1)[1]} now; the trials wait until it grows")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and plan.store.is_local and not _storage_is_shared(plan.storage, nodes):
        raise SpaceError(
            f"{space.source}: storage_path: {plan.storage} is local to the driver's node but the "
            f"cluster has {len(nodes)} nodes; use shared storage (an NFS path mounted on every node)"
        )


def _storage_is_shared(storage: Path, nodes: list[dict]) -> bool:
    """Write a marker from the driver and look for it from every node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    storage.mkdir(parents=True, exist_ok=True)
    marker = storage / f".shared-check-{os.getpid()}-{time.time_ns()}"
    marker.write_text("x")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return Path(path).is_file()

    try:
        refs = [
            sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(marker))
            for n in nodes
        ]
        return all(ray.get(refs, timeout=60))
    finally:
        marker.unlink(missing_ok=True)


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


@contextlib.contextmanager
def _env_defaults(settings: dict[str, str]) -> Iterator[None]:
    """Each of ``settings`` in the environment inside the block, unless already set there (a
    user's own setting wins); none outlives the block (several sweeps can run in one
    process)."""
    added = [name for name in settings if name not in os.environ]
    os.environ.update({name: settings[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


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


def update_frontier(tracker: Tracker, parent: str, plan: Plan) -> SweepResult:
    """Tag the frontier of the sweep's finished child runs, log its hypervolume and CSV."""
    rows = []
    for run in tracker.children(parent):
        m, p, t = run.data.metrics, run.data.params, run.data.tags
        if run.info.status != "FINISHED" or M.TOP1 not in m or M.FLOPS_MEAN not in m:
            continue
        # Runs logged before the tag carry alpha or tau.
        weight = t.get(M.TAG_COST_WEIGHT) or next(
            (k for k in (M.PARAM_ALPHA, M.PARAM_TAU) if k in p), ""
        )
        weight = weight if weight in p else ""
        rows.append(
            {
                "run_id": run.info.run_id,
                "run_name": t.get("mlflow.runName", run.info.run_id),
                "stage": t.get(M.TAG_STAGE, ""),
                "method": t.get(M.TAG_METHOD, ""),
                "backbone": p.get(M.PARAM_ARCH, ""),
                "weight": f"{weight}={float(p[weight]):g}" if weight else "",
                M.TOP1: m[M.TOP1],
                M.TEST_TOP1: m.get(M.TEST_TOP1),
                M.FLOPS_MEAN: m[M.FLOPS_MEAN],
                M.FLOPS_PLAIN: m.get(M.FLOPS_PLAIN, m[M.FLOPS_MEAN]),
                M.latency_ms(1): m.get(M.latency_ms(1)),
                M.latency_plain_ms(1): m.get(M.latency_plain_ms(1)),
                M.speedup(1): m.get(M.speedup(1)),
                M.speedup_q1(1): m.get(M.speedup_q1(1)),
                M.speedup_q3(1): m.get(M.speedup_q3(1)),
                VERDICT: speedup_verdict(
                    m.get(M.speedup(1)), m.get(M.speedup_q1(1)), m.get(M.speedup_q3(1))
                ),
                M.SKIPPED_MEAN: m.get(M.SKIPPED_MEAN, 0.0),
                M.ROUTING_SHARE: m.get(M.ROUTING_SHARE),
                M.ROUTED_GATES: m.get(M.ROUTED_GATES),
                ROUTING: routing_kind(m),
            }
        )
    result = SweepResult(parent, trials=len(rows), rows=rows)
    if not rows:
        return result
    front = set(pareto_front([(r[M.FLOPS_MEAN], r[M.TOP1]) for r in rows]))
    # The frontier in measured latency too (batch 1), over the runs that were timed, each
    # against the plain ResNet timed beside it (``comparable_latency``); a run leaves it only
    # for one at least as accurate and faster beyond the noise of both timings.
    lat = latency_intervals(
        [r[M.latency_ms(1)] for r in rows],
        [r[M.latency_plain_ms(1)] for r in rows],
        [r["backbone"] for r in rows],  # one dataset per sweep
        [(r[M.speedup_q1(1)], r[M.speedup_q3(1)]) for r in rows],
    )
    for r, (lo, value, hi) in zip(rows, lat, strict=True):
        r[COMPARABLE_LATENCY], r[LATENCY_INTERVAL] = value, (lo, hi)
    timed = [i for i, (_, value, _) in enumerate(lat) if math.isfinite(value)]
    fast = {
        timed[j]
        for j in interval_front(
            [rows[i][LATENCY_INTERVAL] for i in timed], [rows[i][M.TOP1] for i in timed]
        )
    }
    for i, r in enumerate(rows):
        r["pareto"], r["pareto_latency"] = i in front, i in fast
        tags = {M.TAG_PARETO: str(i in front).lower(), M.TAG_ROUTING: r[ROUTING]}
        if i in timed:
            tags[M.TAG_PARETO_LATENCY] = str(i in fast).lower()
        tracker.set_tags(r["run_id"], tags)
    plain = max(r[M.FLOPS_PLAIN] for r in rows)
    result.hypervolume = normalised_hypervolume([(r[M.FLOPS_MEAN], r[M.TOP1]) for r in rows], plain)
    tracker.log_metrics(parent, {M.HYPERVOLUME: result.hypervolume})
    result.frontier = sorted((r for r in rows if r["pareto"]), key=lambda r: r[M.FLOPS_MEAN])
    result.latency_frontier = sorted(
        (r for r in rows if r["pareto_latency"]), key=lambda r: r[COMPARABLE_LATENCY]
    )
    cols = ["run_name", "method", "backbone", "weight", M.TOP1, M.FLOPS_MEAN]
    # Rounded as a person reads them: top-1 to 0.01 point, MACs to one multiply-add.
    shown = {M.TOP1: lambda v: f"{v:.2f}", M.FLOPS_MEAN: lambda v: f"{v:.0f}"}
    csv = (
        ",".join(cols)
        + "\n"
        + "".join(",".join(shown.get(c, str)(r[c]) for c in cols) + "\n" for r in result.frontier)
    )
    tracker.log_text(parent, csv, M.PARETO_CSV)
    tracker.set_description(parent, frontier_table(result, plan, markdown=True))
    log_frontier_models(tracker, plan, result)
    return result


def registered_model_name(plan: Plan) -> str:
    """The model registry name of a sweep's frontier (one version per frontier run)."""
    return f"skipnet-{plan.sweep_id}"


def log_frontier_models(tracker: Tracker, plan: Plan, result: SweepResult) -> None:
    """Log each frontier run's network as an MLflow model (as it is deployed: thresholded
    gates, sparse execution) and register it, each version labelled with the point it is
    (``model_version_labels``); once per run (a resumed sweep skips them)."""
    import tempfile

    import torch

    name = registered_model_name(plan)
    for row in result.frontier:
        tags = tracker.client.get_run(row["run_id"]).data.tags
        weights = tags.get(M.TAG_CHECKPOINT)
        if M.TAG_MODEL_VERSION in tags or not weights:
            continue
        try:
            with plan.store.local_copy(weights) as local:
                net, payload = load_trained(local)
        except (CheckpointError, OSError) as err:
            print(f"warning: {row['run_name']}: no model logged ({err})")
            continue
        shape = payload.get("input_shape") or [net.config.in_channels, 32, 32]
        stage = payload.get("stage_config")
        with tempfile.TemporaryDirectory(prefix="skipnet-model-") as tmp:
            # The weights and the config that rebuilds them; not the optimiser's state.
            model = save_checkpoint(
                Path(tmp, MODEL_FILE), make_payload(net, stage, input_shape=tuple(shape))
            )
            version = tracker.log_model(
                row["run_id"],
                model,
                input_example=torch.zeros(1, *shape).numpy(),
                registered_name=name,
                metadata={
                    "model_config": net.config.to_dict(),
                    "stage_config": stage,
                    M.TOP1: round(row[M.TOP1], 2),
                    M.FLOPS_MEAN: round(row[M.FLOPS_MEAN]),
                },
            )
        alias, description, version_tags = model_version_labels(row, plan)
        tracker.label_model_version(
            name,
            version,
            alias=alias,
            description=description,
            tags=version_tags,
            model_description=(
                f"The frontier of sweep {plan.sweep_id} ({plan.space.name}): one version per "
                "run on the MACs frontier. Each version's description, tags and alias (its "
                "run's name) say which point it is; load one with "
                f"models:/{name}@<alias>."
            ),
        )
        tracker.set_tags(row["run_id"], {M.TAG_MODEL_VERSION: version})


def model_version_labels(row: dict, plan: Plan) -> tuple[str, str, dict[str, str]]:
    """(alias, description, tags) of a frontier run's registered version: its method,
    backbone, cost weight, accuracy (split named) and MACs, rounded, so the versions of one
    registered model tell their points apart."""
    accuracy = M.accuracy_label(plan.data.selection_set)
    top1 = f"{row[M.TOP1]:.2f}"
    macs = row[M.FLOPS_MEAN]
    tags = {
        "method": row.get("method", ""),
        "backbone": row.get("backbone", ""),
        "cost_weight": row.get("weight", ""),
        f"{plan.data.selection_set}_top1": top1,
        "macs": f"{macs / 1e6:.2f} M",
        "run_id": row["run_id"],
    }
    text = [f"{accuracy} {top1} %"]
    if row.get(M.TEST_TOP1) is not None and accuracy != M.accuracy_label(M.SELECTION_TEST):
        tags["test_top1"] = f"{row[M.TEST_TOP1]:.2f}"
        text.append(f"test top-1 {row[M.TEST_TOP1]:.2f} %")
    text.append(f"{macs / 1e6:.2f} M MACs")
    if row.get(M.FLOPS_PLAIN):
        text[-1] += f" ({100 * macs / row[M.FLOPS_PLAIN]:.1f} % of the plain ResNet's)"
    what = " ".join(x for x in (row.get("method"), row.get("backbone"), row.get("weight")) if x)
    description = f"{what or row['run_name']}: {', '.join(text)}; run {row['run_name']}"
    # MLflow aliases take letters, digits, _ and - only.
    alias = re.sub(r"[^\w-]", "_", row["run_name"])
    return alias, description, {k: v for k, v in tags.items() if v}


def frontier_table(result: SweepResult, plan: Plan, *, markdown: bool = False) -> str:
    """The frontiers as a titled table a person reads: the runs on the MACs frontier and
    on the measured-latency frontier, the plain ResNet as the reference and the best SkipNet
    point; a run whose MACs are below the plain ResNet's but that runs no faster beyond the
    timing's noise is flagged (its savings are counted, not realised), and one whose timing
    is too noisy to tell is marked so. Plain text, or Markdown for MLflow."""
    space = plan.space
    shown = sorted(
        {r["run_id"]: r for r in [*result.frontier, *result.latency_frontier]}.values(),
        key=lambda r: r[M.FLOPS_MEAN],
    )
    rows = [("", r) for r in shown]
    extra = []  # rows beyond the frontiers', named in the title
    plain = [r for r in result.rows if r["stage"] == "baseline"]
    if plain:
        reference = max(plain, key=lambda r: r[M.TOP1])
        if reference in shown:  # mark it where it stands
            rows[shown.index(reference)] = ("reference", reference)
        else:
            rows.append(("reference", reference))
            extra.append("the plain ResNet")
    # The best SkipNet is a point that skips: one that closes no gate is the plain ResNet
    # with gates attached, whatever its accuracy.
    skipnet = [r for r in result.rows if r["method"].startswith("skipnet-")]
    skipping = [r for r in skipnet if r[ROUTING] != NO_SKIP]
    if skipping:
        best = max(skipping, key=lambda r: (r[M.TOP1], -r[M.FLOPS_MEAN]))
        if best in shown:
            rows[shown.index(best)] = ("best SkipNet", best)
        else:
            rows.append(("best SkipNet", best))
            extra.append("the best SkipNet")
    title = (
        f"Pareto frontier of {space.name}: {space.dataset.name}, {', '.join(space.backbones)}"
        f" ({len(rows)} of {result.trials} runs: {len(shown)} on a frontier (MACs "
        f"{len(result.frontier)}, latency {len(result.latency_frontier)})"
        + "".join(f", {what}" for what in extra)
        + ")"
    )
    # The cost weight's column is headed by its name(s): alpha, tau, or both.
    weights = sorted({r["weight"].partition("=")[0] for _, r in rows if r["weight"]})

    def weight(r: dict) -> str:
        name, _, value = r["weight"].partition("=")
        return value if len(weights) == 1 else (f"{name} {value}" if value else "")

    flags: set[str] = set()

    def frontiers(r: dict) -> str:
        return "+".join(n for n, k in (("MACs", "pareto"), ("latency", "pareto_latency")) if r[k])

    def speed(r: dict) -> str:
        if r[M.speedup(1)] is None:
            return ""
        text = f"{r[M.speedup(1)]:.2f}x"
        q1, q3 = r.get(M.speedup_q1(1)), r.get(M.speedup_q3(1))
        if q1 is not None and q3 is not None:
            text += f" ({q1:.2f}-{q3:.2f})"
        # Only a run that saves MACs has a saving to realise or not.
        if r[M.FLOPS_MEAN] < 0.95 * r[M.FLOPS_PLAIN]:
            flag = {NOT_FASTER: "!", TOO_NOISY: "?"}.get(r.get(VERDICT), "")
            flags.add(flag)
            text += f" {flag}" if flag else ""
        return text

    def routing(r: dict) -> str:
        if r[ROUTING] == NO_SKIP or r[M.ROUTING_SHARE] is None:
            return ""
        mark = "" if r[ROUTING] == ROUTES else " (pruned)"
        return f"{r[M.ROUTING_SHARE]:.0f} %{mark}"

    header = ("run", "method", " / ".join(weights) or "cost weight",
              f"{M.accuracy_label(plan.data.selection_set)} %", "MACs (M)", "% of plain MACs",
              "speed-up at batch 1 (IQR)", "routed", "frontier", "note")  # fmt: skip
    table = [
        (
            r["run_name"][:44],
            r["method"],
            weight(r),
            f"{r[M.TOP1]:.2f}",
            f"{r[M.FLOPS_MEAN] / 1e6:.2f}",
            f"{100 * r[M.FLOPS_MEAN] / r[M.FLOPS_PLAIN]:.1f}",
            speed(r),
            routing(r),
            frontiers(r),
            note,
        )
        for note, r in rows
    ]
    footer = [
        format_hypervolume(result.hypervolume) + " (share of the plain ResNet's box)",
        f"{M.accuracy_label(plan.data.selection_set)}: on the "
        f"{M.split_name(plan.data.selection_set)}, where the frontiers were chosen; MACs: "
        "multiply-adds per image",
        "routed: % of images whose blocks differ from the most common route; (pruned): the "
        "same blocks skipped for every image, a statically pruned ResNet",
    ]
    if skipnet and not skipping:
        footer.append("no SkipNet run skips a block: every gate stays open")
    if any(r[M.speedup(1)] is not None for _, r in rows):
        footer.append(
            "speed-up: the plain ResNet's time over the run's, timed side by side at batch 1; "
            f"median (interquartile range) over {space.latency.repeats} timed rounds"
        )
    if "!" in flags:
        footer.append(
            "!: fewer MACs than the plain ResNet but no faster beyond the timing's noise "
            "(its interquartile range is at or below 1x): the saving is counted, not realised"
        )
    if "?" in flags:
        footer.append(
            "?: fewer MACs, but the timing is too noisy to tell whether it runs faster (its "
            "interquartile range spans 1x); time it on a quiet machine or with more "
            "latency.repeats"
        )
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(row) + " |" for row in table]
        return "\n".join([*lines, "", *footer])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=True)]
    left = {0, 1, 2, 8, 9}
    fmt = "  ".join(f"{{:{'<' if i in left else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [title, fmt.format(*header).rstrip()]
    lines += [fmt.format(*row).rstrip() for row in table]
    return "\n".join([*lines, *footer])


def open_parent(plan: Plan, tracker: Tracker, fresh: bool) -> str:
    """The sweep's parent run, found by its sweep id (a fresh start retires the old one)."""
    if fresh:
        old = tracker.find(M.TAG_SWEEP_ID, plan.sweep_id)
        if old is not None:
            tracker.set_tags(old, {M.TAG_SWEEP_ID: f"{plan.sweep_id}-retired-{int(time.time())}"})
    run_id, created = tracker.get_or_create(
        M.TAG_SWEEP_ID,
        plan.sweep_id,
        plan.space.name,
        params={
            M.PARAM_DATASET: plan.space.dataset.name,
            "space_file": plan.space.source,
            "shared_jobs": len(plan.shared_jobs),
            "grid_trials": len(plan.trials),
            "search": plan.space.search.algorithm,
        },
        tags={M.TAG_STAGE: M.SWEEP_STAGE, M.TAG_SPACE: plan.space.name},
    )
    if created:
        tracker.log_text(run_id, space_to_yaml(plan.space), "space.yaml")
        data = plan.data
        default = FASHION_MNIST_ROOT if data.dataset == "fashion_mnist" else DEFAULT_DOWNLOAD_ROOT
        root = Path(data.root) if data.root else default
        tracker.log_dataset(
            run_id,
            data.dataset,
            root.resolve().as_uri(),
            short_hash([data.dataset, data.train_subset, data.test_subset, data.val_split]),
            "train",
        )
        commit = _git_commit()
        if commit:
            tracker.set_tags(run_id, {MLFLOW_GIT_COMMIT: commit})
    return run_id


def _git_commit() -> str | None:
    """The commit of the skipnet_sweep checkout that runs, if it runs from one."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


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
