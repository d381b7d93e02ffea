"""Fixtures shared by the test modules."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from sweep_helpers import (
    free_port,
    migrated_store,
    patched_env,
    ray_tmpdir,
    train_shared_jobs,
    wait_for,
    write_space,
)

from skipnet_sweep.models import SkipResNet, build_model

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Three workers share two cores: torch's own threads would spin against each other
    # (docs/benchmarks.md, "OpenMP on a loaded machine"), and the tests' tensors are small.
    torch.set_num_threads(1)


# The order pytest-xdist hands test files out in (``--dist loadfile --no-loadscope-reorder``,
# pyproject.toml; by default it reorders files by their number of tests, which started the
# sweeps minutes late, behind the many-test unit files): one to each worker, then another at
# once to a worker whose file has at most two tests left, then one to each worker that runs
# low. Longest first (measured with ``--durations=0``): the whole-sweep modules (three tests
# or more each, so each starts on a worker of its own) start beside the unit tests instead of
# after them, and the longer unit modules go out before the many short ones that fill the
# gaps at the end. This is what keeps the suite within minutes on two cores.
# (``--dist loadgroup`` with ``xdist_group`` marks did not keep a module on one worker here,
# static marks included.)
LONGEST_FIRST = (
    "test_cluster",  # ~275 s
    "test_faults",  # ~170-250 s
    "test_sweep",  # ~120 s
    "test_sweep_search",  # ~100 s
    "test_sweep_resume",  # ~90 s
    "test_models",  # ~80 s
    "test_benchmarks",  # ~50 s
    "test_failed_job",  # ~35 s (two sweeps)
    "test_restore",  # ~30 s (one Tune run)
    "test_worker_groups",  # ~15 s (one Tune run)
    "test_analysis",
    "test_flops",
    "test_mlflow_ui",
    "test_stages",
    "test_train_cli",
    "test_package",
)


def pytest_collection_modifyitems(items) -> None:
    """Collect the test files in ``LONGEST_FIRST`` order, the rest after them as found."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))


@pytest.fixture
def make_model() -> Callable[..., SkipResNet]:
    """``make_model(arch, gate=None, **kw)``: a registered network built under a fixed seed,
    so a failure reproduces with the same weights."""

    def make(arch: str, gate: str | None = None, **kw) -> SkipResNet:
        torch.manual_seed(0)
        return build_model(arch, gate=gate, **kw)

    return make


@pytest.fixture(scope="module")
def single_thread():
    """Run torch on one intra-op thread for the module: tiny tensors gain nothing from more,
    and on a busy machine spinning worker threads cost many times the work itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- servers of the setting most teams use: S3 storage and an MLflow tracking server ---

MOTO = Path(sys.executable).with_name("moto_server")
BUCKET = "skipnet-test"


@contextlib.contextmanager
def serving(command: list[str], ready, timeout: float, what: str, log=subprocess.DEVNULL):
    """Run the server ``command`` (its own session) until the block ends, once ``ready()``
    is true (waited for up to ``timeout`` seconds)."""
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(ready, timeout, what=what)
        yield
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a SQLite store and proxied artifacts."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    uri = f"http://127.0.0.1:{free_port()}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1"]
    command += ["--port", uri.rsplit(":", 1)[1], "--workers", "1"]
    migrated_store(folder)  # the server's store, its schema made (sweep_helpers)
    command += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(folder / "artifacts")]
    log = folder / "server.log"
    with log.open("w") as out, serving(command, answers, 300, "the MLflow tracking server", out):
        yield uri


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 and the environment that points clients at it."""
    if not MOTO.is_file():
        pytest.skip("moto_server is not installed (pip install 'moto[s3]' flask flask-cors)")
    port = free_port()
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }

    def bucket() -> bool:
        import pyarrow.fs as pafs

        try:
            pafs.S3FileSystem(
                allow_bucket_creation=True, endpoint_override=env["AWS_ENDPOINT_URL"]
            ).create_dir(BUCKET)
            return True
        except OSError:
            return False

    command = [str(MOTO), "-H", "127.0.0.1", "-p", str(port)]
    with patched_env(**env), serving(command, bucket, 30, "the S3 server"):
        yield env


# --- a shared-job cache for sweeps that only differ in their trials ---------------------------


@pytest.fixture(scope="session")
def sp_cache(tmp_path_factory) -> Path:
    """Storage whose cache holds the tiny space's SP job, trained in-process
    (``train_shared_jobs``): sweeps of TINY without the baseline find it under the same key
    (SP does not depend on alpha) with ``seed_sp_cache``, and run only their trials."""
    folder = tmp_path_factory.mktemp("sp_cache")
    train_shared_jobs(write_space(folder, "sp_cache", {"baseline": False}))
    return folder / "runs"


@pytest.fixture(scope="module")
def ray_dir():
    """The module's RAY_TMPDIR for its local sweeps; Ray processes still exiting at the end
    are stopped."""
    with ray_tmpdir() as d:
        yield d
