"""The setting most teams use: storage on object storage and MLflow behind a tracking server.
A sweep whose ``storage_path`` is ``s3://...`` on a real S3 server (moto's, started by the
test on 127.0.0.1 with an endpoint override) and whose tracking URI is an ``mlflow server``
on 127.0.0.1 (proxied artifacts), through the cache, Ray Train, Tune's state and a resume
after the driver is killed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_helpers import (
    Mlflow,
    free_port,
    local_sweep,
    patched_env,
    ray_tmpdir,
    spawn_driver,
    wait_for,
    write_space,
)

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep import load_space, make_plan
from skipnet_sweep.sweep.storage import Storage, is_uri

MOTO = Path(sys.executable).with_name("moto_server")
BUCKET = "skipnet-test"


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a SQLite store and proxied artifacts."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1"]
        + ["--port", str(port), "--workers", "1"]
        + ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
        + ["--artifacts-destination", str(folder / "artifacts")],
        stdout=(folder / "server.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(answers, 120, what="the MLflow tracking server")
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 and the environment that points clients at it."""
    if not MOTO.is_file():
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    server = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    try:
        with patched_env(**env):
            import pyarrow.fs as pafs

            def bucket() -> bool:
                try:
                    pafs.S3FileSystem(
                        allow_bucket_creation=True, endpoint_override=env["AWS_ENDPOINT_URL"]
                    ).create_dir(BUCKET)
                    return True
                except OSError:
                    return False

            wait_for(bucket, 30, what="the S3 server")
            yield env
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_storage_operations_on_s3(s3, tmp_path: Path) -> None:
    with patched_env(**s3):
        store = Storage(f"s3://{BUCKET}/unit")
        assert not store.is_local and is_uri(store.root)
        assert store.path("cache", "a.pt") == f"s3://{BUCKET}/unit/cache/a.pt"
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "x.txt").write_text("hello")
        store.upload(tmp_path / "d", store.path("folder"))
        assert store.is_file(store.path("folder", "x.txt"))
        with store.local_copy(store.path("folder", "x.txt")) as local:
            assert local.read_text() == "hello"
        with store.local_copy(store.path("folder")) as local:  # a folder, recursively
            assert (local / "x.txt").read_text() == "hello"
        store.move(store.path("folder"), store.path("moved"))
        assert not store.exists(store.path("folder")) and store.exists(store.path("moved"))
        store.remove(store.path("moved"))
        assert not store.exists(store.path("moved"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_sweep_on_s3_with_a_tracking_server_resumes_after_a_driver_kill(
    s3, tracking_server, tmp_path: Path
) -> None:
    storage = f"s3://{BUCKET}/sweep"
    space = write_space(
        tmp_path,
        "s3sweep",
        {
            "storage_path": storage,
            "baseline": False,
            "alpha": [0.0, 1.0, 2.0],
            "max_concurrent_trials": 1,
            "resources": {"sp": {"workers": 1, "cpu": 1}, "trial": {"cpu": 1}},
            "mlflow": {"tracking_uri": tracking_server},
        },
    )
    plan = make_plan(load_space(str(space)))
    assert plan.storage == storage
    mlflow = Mlflow(tracking_server, "s3sweep")

    def an_hrl_run_finished():
        if driver.poll() is not None:
            raise AssertionError(f"the driver exited early:\n{log.read_text()[-3000:]}")
        try:
            return mlflow.runs("tags.stage = 'hrl' and attributes.status = 'FINISHED'")
        except Exception:  # the store is being created by the driver
            return None

    with ray_tmpdir("sks") as ray_dir:
        log = tmp_path / "driver.log"
        driver = spawn_driver(space, ray_dir, log, **s3)
        try:
            wait_for(an_hrl_run_finished, 300, interval=0.5, what="a finished HRL run")
        finally:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
        time.sleep(2)
    with ray_tmpdir("sks") as ray_dir, patched_env(**s3):
        code, out, err = local_sweep(["--space", str(space), "--num-cpus", "2"], ray_dir)
        store = plan.store
        cached = [store.is_file(plan.checkpoint(j)) for j in plan.shared_jobs]
        resumed_from = store.path("tune", f"sweep-{plan.sweep_id}")
        assert store.exists(resumed_from)
    assert code == 0, out[-3000:] + err[-3000:]
    assert f"resuming sweep-{plan.sweep_id} from {resumed_from}" in out
    assert all(cached)
    children = mlflow.children(mlflow.parent().info.run_id)
    ids = sorted(r.data.tags[M.TAG_TRIAL_ID] for r in children)
    assert ids == sorted(j.id for j in plan.jobs)  # each job once: nothing duplicated
    for r in children:
        assert r.info.status == "FINISHED"
        assert r.data.tags[M.TAG_CHECKPOINT].startswith(f"s3://{BUCKET}/sweep/")
        # Artifacts went through the server (proxied), from the cache on S3 for the SP job.
        files = [a.path for a in mlflow.client.list_artifacts(r.info.run_id, M.ARTIFACT_DIR)]
        assert f"{M.ARTIFACT_DIR}/{M.PER_SAMPLE_CSV}" in files
    # Every frontier run has its network registered.
    front = [r for r in children if r.data.tags.get(M.TAG_PARETO) == "true"]
    assert front and all(M.TAG_MODEL_VERSION in r.data.tags for r in front)
    assert not Path(ray_dir, "s3:").exists() and not (tmp_path / "s3:").exists()
