"""Ray's private API, behind one door: what the driver needs of a Ray instance that Ray 2.60
has no option for. Each piece names the Ray source it relies on; ``check`` runs before Ray
starts and refuses, in one line, a Ray that has moved any of it; tests/test_local_bind.py
exercises each piece on a real instance; pyproject.toml keeps Ray below the next minor
release, which has to be checked again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from skipnet_sweep.errors import SpaceError

CHECKED_WITH = "2.60"
_ray_printer = None  # Ray's own print_to_stdstream, once error_lines_to_log has replaced it
API_SERVER_VARIABLE = "RAY_API_SERVER_ADDRESS"  # read by ray/dashboard/utils.py


def check() -> None:
    """Refuse a Ray without the private names used here.

    Raises:
        SpaceError: one line naming the first one missing.
    """
    import ray
    from ray._private import node, ray_constants, services, worker
    from ray.tune import tune

    needs = [
        (tune, "ray.tune.tune", "_setup_signal_catching"),
        (ray_constants, "ray._private.ray_constants", "ENABLE_RAY_CLUSTER"),
        (services, "ray._private.services", "get_node_ip_address"),
        (node.Node, "ray._private.node.Node", "start_api_server"),
        (node.Node, "ray._private.node.Node", "get_session_dir_path"),
        (worker, "ray._private.worker", "print_to_stdstream"),
        (worker, "ray._private.worker", "_global_node"),
    ]
    for owner, where, name in needs:
        if not hasattr(owner, name):
            _refuse(ray.__version__, f"{where}.{name}")
    # Names read inside Tune's functions (instance attributes, not on any class).
    import inspect

    from ray.train._internal.storage import StorageContext
    from ray.tune.trainable import function_trainable, trainable

    read = [
        (function_trainable.wrap_function, "ray.tune wrap_function's __mixins__", "__mixins__"),
        (trainable.Trainable.__init__, "ray.tune Trainable._iteration", "self._iteration"),
        (trainable.Trainable.__init__, "ray.tune Trainable._storage", "self._storage"),
        (
            StorageContext.__init__,
            "ray.train StorageContext.current_checkpoint_index",
            "self.current_checkpoint_index",
        ),
    ]
    from ray.tune.search import SearchGenerator

    read.append(
        (SearchGenerator.get_state, "ray.tune SearchGenerator state's finished", '"finished"')
    )
    for function, what, text in read:
        if text not in inspect.getsource(function):
            _refuse(ray.__version__, what)


def _refuse(version: str, what: str) -> None:
    raise SpaceError(
        f"Ray {version} has no {what}, which skipnet_sweep uses "
        f"(checked with Ray {CHECKED_WITH}); install ray=={CHECKED_WITH}.*"
    )


def mix_into_trainable(function: Any, *classes: type) -> None:
    """Tune's ``wrap_function`` makes a function trainable's class with the function's
    ``__mixins__`` as bases (ray/tune/trainable/function_trainable.py): how ``restore`` is
    overridden for a function."""
    function.__mixins__ = classes


def reopened(search_state: dict) -> dict:
    """A ``SearchGenerator``'s saved state as a restore should take it: not finished. Tune
    saves that the search finished (ray/tune/search/search_generator.py, ``get_state``'s
    ``"finished"``), and a restored experiment would never ask the searcher again, so the
    jobs a resumed sweep retries would never start (the searcher says again when it is done)."""
    return {**search_state, "finished": False}


def advance_iteration(trainable: Any, by: int) -> None:
    """Add ``by`` to Tune's count of a trainable's reports (``Trainable._iteration``, set
    from the restored checkpoint's result in ray/tune/trainable/trainable.py ``restore``)."""
    trainable._iteration += by


def number_checkpoints_after(trainable: Any, index: int) -> None:
    """Make a trainable's next checkpoint folder come after ``index``
    (``_storage.current_checkpoint_index``, ray/train/_internal/storage.py, which names the
    folder ``save`` writes); never lowers it."""
    storage = trainable._storage
    if storage is not None:
        storage.current_checkpoint_index = max(storage.current_checkpoint_index, index)


@contextlib.contextmanager
def loopback_node() -> Iterator[None]:
    """Inside the block Ray takes 127.0.0.1 as this machine's address, so a local instance
    started there listens on loopback only.

    Ray 2.60 has no bind-address option. Each server binds to the node's address or to all
    interfaces, and the node's address comes from ``ray._private.services.get_node_ip_address``:
    the machine's outward address, or 127.0.0.1 when ``ray_constants.ENABLE_RAY_CLUSTER`` is
    false (what Ray does on macOS and Windows; its variable RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
    is read once, when ray is imported, which the driver has done by now). ``ray.init``'s
    ``_node_ip_address="127.0.0.1"`` does not help: ``ray.init`` turns a loopback address
    back into the outward one (``services.resolve_ip_for_localhost``, ray/_private/worker.py).

    With the node at 127.0.0.1 (measured with /proc/net/tcp, tests/test_faults.py):
    the GCS, the raylet (node manager and object manager) and every worker's gRPC server,
    the driver's too, listen on 127.0.0.1 (the GCS passes ``node_ip_address == "127.0.0.1"``
    as ``GrpcServer``'s ``listen_to_localhost_only``, src/ray/gcs/gcs_server.cc and
    src/ray/rpc/grpc_server.cc; the raylet and the workers were measured to do the same);
    the runtime-env agent binds the node's address (ray/_private/runtime_env/agent/main.py).
    On a host where localhost is IPv6 only, Ray's loopback is ::1, which that comparison
    does not match: there the gRPC servers would still listen on all interfaces.
    The rest listen on nothing: the dashboard is not started (``no_dashboard``), the raylet's
    dashboard agent runs ``--minimal``, without an HTTP server, the agent's gRPC server or
    the metrics export (ray/dashboard/agent.py, ``_init_non_minimal``), and the Ray client
    server runs only with ``ray_client_server_port`` (ray/_private/parameter.py).

    The flag is restored on exit: a driver that later joins a cluster must report its real
    address.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


@contextlib.contextmanager
def no_dashboard() -> Iterator[None]:
    """Inside the block a head node that Ray starts has no dashboard process.

    ``include_dashboard=False`` does not do it: Ray 2.60 starts ``dashboard.py`` on every
    head, then with only its usage-stats module (``--minimal`` too without the dashboard's
    extra packages; ray/_private/services.py, ``start_api_server``). The sweep uses none of
    it: usage stats are off, and the state API it would serve is not loaded.

    It did one thing: publish an address for that API, where nothing answers. Ray Train's
    watchers ask the API every second whether a run's controller lives; without any address
    they block 20 s looking for one in the GCS, and a run's end then waits for them to time
    out (measured, a 2-worker TorchTrainer run: 24.8 s; 15.1 s with the dashboard, 14.0 s
    with this address). Inside the block,
    ``$RAY_API_SERVER_ADDRESS`` (unless set) names a loopback port nothing listens on, which
    the processes of the instance inherit: they are refused at once, as before.
    """
    from ray._private.node import Node

    saved = Node.start_api_server
    Node.start_api_server = lambda self, **kwargs: None
    added = API_SERVER_VARIABLE not in os.environ
    if added:
        os.environ[API_SERVER_VARIABLE] = "http://127.0.0.1:1"  # a privileged port, unused
    try:
        yield
    finally:
        Node.start_api_server = saved
        if added:
            os.environ.pop(API_SERVER_VARIABLE, None)


class Interrupt:
    """Whether the first SIGINT came inside ``tune_stops_on_sigint``."""

    received = False


@contextlib.contextmanager
def tune_stops_on_sigint() -> Iterator[Interrupt]:
    """Around ``Tuner.fit``: the first SIGINT (Ctrl-C) ends Tune's run as Tune's own SIGINT
    handler does (trials stopped where they are, the experiment state saved, ``fit``
    returns) and is recorded in the ``Interrupt`` yielded; a second one raises
    KeyboardInterrupt at once.

    Tune's handler sets an event that only ``tune.run`` sees, so a driver cannot tell an
    interrupted run from a finished one. ``tune.run`` installs that handler for SIGUSR1 too,
    whatever ``TUNE_DISABLE_SIGINT_HANDLER`` says (ray/tune/tune.py,
    ``_setup_signal_catching``): inside the block Tune leaves SIGINT alone and this
    block's handler sends the process SIGUSR1. Before ``tune.run`` has installed its
    handler there is no run to end: KeyboardInterrupt.
    """
    import signal
    import threading

    interrupt = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt  # handlers are the main thread's: Tune sets none from another either
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR1)}
    variable = "TUNE_DISABLE_SIGINT_HANDLER"
    saved_variable = os.environ.get(variable)

    def on_sigint(sig, frame) -> None:
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if interrupt.received or tune_handler is saved[signal.SIGUSR1]:
            raise KeyboardInterrupt
        interrupt.received = True
        os.kill(os.getpid(), signal.SIGUSR1)

    os.environ[variable] = "1"
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupt
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if saved_variable is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = saved_variable


def error_lines_to_log(to_log: bool) -> None:
    """Where this driver's Ray error lines go (``(raylet) A worker died ...``): to the "ray"
    logger (the log file of ``ray_start.route_logs``) when ``to_log``, else to the terminal as
    Ray prints them. The GCS publishes them and a thread of the driver prints them to
    stdout whatever ``log_to_driver`` says (ray/_private/worker.py,
    ``listen_error_messages``, which looks ``print_to_stdstream`` up at each line)."""
    from ray._private import worker

    global _ray_printer
    if _ray_printer is None:
        _ray_printer = worker.print_to_stdstream
    worker.print_to_stdstream = _log_lines if to_log else _ray_printer


def _log_lines(data: dict[str, Any], ignore_prefix: bool) -> None:
    for line in data.get("lines", []):
        logging.getLogger("ray").warning("(%s) %s", data.get("pid", "ray"), line)


def session_dir() -> str:
    """The session folder of the Ray instance this process started."""
    from ray._private.worker import _global_node

    return _global_node.get_session_dir_path()
