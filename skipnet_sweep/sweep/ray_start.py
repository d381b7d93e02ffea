"""Ray's start-up for a sweep: a cluster joined or a local instance on loopback only, where
Ray's, Tune's and MLflow's messages go, and the checks that the cluster can serve the space
(GPUs, shared storage)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from skipnet_sweep.sweep import ray_private, reaper
from skipnet_sweep.sweep.plan import Plan
from skipnet_sweep.sweep.preflight import check_fits
from skipnet_sweep.sweep.space import SpaceError


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
