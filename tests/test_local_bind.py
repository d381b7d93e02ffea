"""A local Ray instance started by the driver listens on loopback only, runs no dashboard,
and keeps Ray's error lines in the driver's log; all of it through Ray's private API, which
``sweep/ray_private.py`` keeps in one place.

``ray_start.start_ray`` without an address starts Ray with its node address at 127.0.0.1 (Ray
has no bind option; see ``ray_private.loopback_node``). Here: the address is set for the
``ray.init`` and restored after it, and a real instance (seconds) has no dashboard process
and writes a killed worker's "(raylet) A worker died" line to the log file, not the terminal.
What every process of a real local instance listens on, with a shared job training, is read
from /proc in tests/test_faults.py (one sweep serves both: each costs CI about a minute).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import patched_env, ray_processes, ray_tmpdir, wait_for, write_space

from skipnet_sweep.sweep import load_space, make_plan, ray_private
from skipnet_sweep.sweep.driver import log_path, start_ray
from skipnet_sweep.sweep.ray_private import loopback_node

ROUTED = ("ray", "mlflow", "optuna", "alembic", "py.warnings")  # ray_start.route_logs' roots


def test_loopback_node_sets_and_restores_the_node_address():
    import ray
    from ray._private import ray_constants, services

    if ray.is_initialized():
        pytest.skip("a Ray instance of this process decides the address")
    before = services.get_node_ip_address()
    saved = ray_constants.ENABLE_RAY_CLUSTER
    with loopback_node():
        assert services.get_node_ip_address() == "127.0.0.1"
    assert ray_constants.ENABLE_RAY_CLUSTER is saved
    assert services.get_node_ip_address() == before


def test_this_ray_has_the_private_names_the_driver_uses():
    ray_private.check()  # fails, naming the name, once Ray moves one


@pytest.mark.parametrize(
    ("moved", "named"),
    [
        ("__mixins__", "wrap_function's __mixins__"),
        ("self._iteration", "Trainable._iteration"),
        ("self._storage", "Trainable._storage"),
        ("self.current_checkpoint_index", "StorageContext.current_checkpoint_index"),
    ],
)
def test_a_ray_whose_trainable_internals_moved_is_refused(monkeypatch, moved, named):
    """Tune's trainable internals that the restore relies on are read from Ray's source at
    start-up: a Ray that renamed one is refused in one line naming it."""
    import inspect

    from skipnet_sweep.errors import SpaceError

    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda f: real(f).replace(moved, "renamed"))
    with pytest.raises(SpaceError, match=f"has no ray.(tune|train) {named}, which"):
        ray_private.check()


def test_the_trainable_helpers_change_what_tune_reads():
    from types import SimpleNamespace

    def fn():
        pass

    class Mixin:
        pass

    ray_private.mix_into_trainable(fn, Mixin)
    assert fn.__mixins__ == (Mixin,)
    trainable = SimpleNamespace(_iteration=3, _storage=SimpleNamespace(current_checkpoint_index=2))
    ray_private.advance_iteration(trainable, 2)
    ray_private.number_checkpoints_after(trainable, 5)
    assert trainable._iteration == 5 and trainable._storage.current_checkpoint_index == 5
    ray_private.number_checkpoints_after(trainable, 1)  # never lowered
    assert trainable._storage.current_checkpoint_index == 5


def test_the_first_sigint_ends_tunes_run_and_is_recorded_the_second_raises():
    from ray.tune import tune

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)
    with ray_private.tune_stops_on_sigint() as interrupt:
        with pytest.raises(KeyboardInterrupt):  # no Tune run yet: nothing to end gracefully
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        ended = tune._setup_signal_catching()  # what tune.run does first (Tuner.fit)
        os.kill(os.getpid(), signal.SIGINT)
        wait_for(ended.is_set, 5, interval=0.01, what="Tune's run to be told to end")
        assert interrupt.received
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)) == before
    assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ


@pytest.fixture
def restored_logging():
    """The loggers ``route_logs`` rewires, as they were before the test."""
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in ROUTED}
    yield
    logging.captureWarnings(False)
    for name, (handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            logger.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            logger.addHandler(handler)
        logger.propagate = propagate


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:  # ended meanwhile
        return ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_local_instance_has_no_dashboard_and_logs_a_worker_death(tmp_path, capfd, restored_logging):
    import ray

    if ray.is_initialized():
        pytest.skip("needs a Ray instance of its own")
    plan = make_plan(load_space(str(write_space(tmp_path))))
    with ray_tmpdir("skb") as ray_dir, patched_env(RAY_TMPDIR=ray_dir, RAY_ADDRESS=None):
        start_ray(plan, None, num_cpus=1, verbose=False)
        try:
            commands = [_cmdline(pid) for pid in ray_processes(ray_dir)]
            assert any("gcs_server" in c for c in commands)  # the instance is there to see
            assert not [c for c in commands if "dashboard/dashboard.py" in c]

            @ray.remote(num_cpus=0)
            def ask_state_api() -> tuple[bool, float]:
                """(whether the state API refused as Ray Train expects, seconds it took)."""
                from ray.util.state import get_actor
                from ray.util.state.exception import RayStateApiException

                start = time.monotonic()
                try:
                    get_actor("0" * 32, timeout=5)
                except RayStateApiException:
                    return True, time.monotonic() - start
                except Exception:  # what Ray Train's watchers do not catch
                    pass
                return False, time.monotonic() - start

            @ray.remote(num_cpus=0)
            class Worker:
                def pid(self) -> int:
                    return os.getpid()

            # Ray Train's watchers of a run ask the state API, which no dashboard serves:
            # they must be refused at once, as they handle it, not search for it for 20 s.
            refused, took = ray.get(ask_state_api.remote())
            assert refused and took < 5, (refused, took)

            os.kill(ray.get(Worker.remote().pid.remote()), signal.SIGKILL)
            log = log_path(plan)
            wait_for(
                lambda: log.is_file() and "A worker died" in log.read_text(),
                timeout=60,
                what="the worker's death in the driver's log",
            )
        finally:
            ray.shutdown()
    out, err = capfd.readouterr()
    assert "A worker died" not in out + err
    assert "\x1b[" not in out + err
