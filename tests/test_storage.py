"""Object storage through ``Storage``: every operation the sweep uses, on a real S3 server
(moto's, started on 127.0.0.1 by the ``s3`` fixture in conftest.py). A whole sweep on it,
with a tracking server and two faults, is tests/test_faults.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BUCKET
from sweep_helpers import patched_env

from skipnet_sweep.sweep.storage import Storage, is_uri


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


@pytest.mark.parametrize("where", ["local", "s3"])
def test_small_text_files(where, request, tmp_path: Path) -> None:
    env = request.getfixturevalue("s3") if where == "s3" else {}
    with patched_env(**env):
        store = Storage(tmp_path / "root" if where == "local" else f"s3://{BUCKET}/text")
        path = store.path("locks", "a.json")
        assert store.read_text(path) is None
        assert store.create_text(path, "first") and store.read_text(path) == "first"
        assert not store.create_text(path, "second") and store.read_text(path) == "first"
        store.write_text(path, "third")
        assert store.read_text(path) == "third"
        if where == "local":  # no temporary file left beside it
            assert [p.name for p in Path(path).parent.iterdir()] == ["a.json"]
