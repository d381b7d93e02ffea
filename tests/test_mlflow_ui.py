"""scripts/check_mlflow_ui.py: the URL it gives users, the saved view it writes, its exit
codes, and (marked ``browser``) a full check in headless Chromium against a store built here."""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import migrated_store

from skipnet_sweep import metrics as M

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_mlflow_ui.py"

_spec = importlib.util.spec_from_file_location("check_mlflow_ui", SCRIPT)
ui = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ui  # dataclasses look their module up while the script loads
_spec.loader.exec_module(ui)


def make_store(
    path: Path, experiment: str = "ui_fixture", with_alpha: bool = True
) -> dict[str, str]:
    """A sweep-shaped store: one parent run and three nested child runs.

    Fixture data for a UI check, not results: the names, params and metrics only follow the
    layout of docs/mlflow_layout.md so that the table has something to show.

    Args:
        with_alpha: False leaves out the HRL child's ``alpha`` param (a store the check rejects).
    Returns:
        run name -> run id.
    """
    from mlflow.tracking import MlflowClient

    assert path.name == "mlflow.db", path
    migrated_store(path.parent)  # the schema made once per test process, not per store
    client = MlflowClient(f"sqlite:///{path}")
    eid = client.create_experiment(
        experiment, artifact_location=(path.parent / "artifacts").as_uri()
    )
    parent = client.create_run(
        eid,
        run_name="ui-fixture-sweep",
        tags={M.TAG_STAGE: M.SWEEP_STAGE, M.TAG_SWEEP_ID: "ui-fixture-0"},
    )
    ids = {"ui-fixture-sweep": parent.info.run_id}
    children = [
        ("fixture-baseline", "baseline", "none", "baseline", {}, 90.0, 4.1e7),
        ("fixture-sp-rnn", "sp", "rnn", "sp", {}, 89.0, 3.0e7),
        (
            "fixture-hrl-rnn-alpha0.1",
            "hrl",
            "rnn",
            "hrl+sp",
            {M.PARAM_ALPHA: "0.1"} if with_alpha else {},
            88.5,
            2.2e7,
        ),
    ]
    for name, stage, gate, variant, extra, top1, flops in children:
        run = client.create_run(
            eid,
            run_name=name,
            tags={
                "mlflow.parentRunId": parent.info.run_id,
                M.TAG_STAGE: stage,
                M.TAG_METHOD: M.method_of(stage, gate),
                M.TAG_TRIAL_ID: name,
                M.TAG_PARETO: "true",
            },
        )
        rid = run.info.run_id
        params = {
            M.PARAM_ARCH: "cifar_resnet20",
            M.PARAM_GATE: gate,
            M.PARAM_VARIANT: variant,
            **extra,
        }
        for key, value in params.items():
            client.log_param(rid, key, value)
        client.log_metric(rid, M.TOP1, top1)
        client.log_metric(rid, M.FLOPS_MEAN, flops)
        client.set_terminated(rid)
        ids[name] = rid
    client.set_terminated(parent.info.run_id)
    return ids


def test_runs_view_url_opens_runs_table_in_training_mode_with_the_saved_view():
    url = ui.runs_view_url("http://127.0.0.1:5000/", "7")
    assert url == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=skipnet-sweep"
    )
    assert ui.runs_view_url("http://h:1", "7", view_key=None) == (
        "http://h:1/#/experiments/7/runs?workflowType=machine_learning"
    )


def test_saved_view_is_the_envelope_mlflow_ui_reads():
    tags = ui.sweep_view_tags(created_ms=1234)
    assert list(tags) == ["mlflow.sharedViewState.skipnet-sweep"]
    envelope = json.loads(tags["mlflow.sharedViewState.skipnet-sweep"])
    # The UI rejects a view without a string name, a number createdAt and a string state.
    assert envelope["name"] == "SkipNet sweep" and envelope["createdAt"] == 1234
    state = json.loads(envelope["state"])
    for column in ("params.`alpha`", "params.`gate`", "metrics.`top1`", "metrics.`flops_mean`"):
        assert column in state["selectedColumns"]
    # Only this order keeps child runs nested under the sweep run.
    assert state["orderByKey"] == "attributes.start_time"


def test_read_sweep_finds_parent_and_children(tmp_path):
    ids = make_store(tmp_path / "mlflow.db")
    sweep = ui.read_sweep(f"sqlite:///{tmp_path / 'mlflow.db'}", "ui_fixture")
    assert sweep.parent == ui.Run(ids["ui-fixture-sweep"], "ui-fixture-sweep")
    assert [c.name for c in sweep.children] == [
        "fixture-baseline",
        "fixture-sp-rnn",
        "fixture-hrl-rnn-alpha0.1",
    ]


def _run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )


@pytest.mark.parametrize(
    ("uri", "experiment", "message"),
    [
        ("file:///tmp/mlruns", "ui_fixture", "--tracking-uri must be sqlite:///<path>"),
        ("sqlite:///{tmp}/missing.db", "ui_fixture", "no sqlite file"),
        ("sqlite:///{tmp}/mlflow.db", "nope", "no experiment 'nope'"),
    ],
)
def test_bad_input_exits_2_and_leaves_the_store_unchanged(tmp_path, uri, experiment, message):
    db = tmp_path / "mlflow.db"
    make_store(db)
    before = db.read_bytes()
    result = _run_script(
        "--tracking-uri",
        uri.format(tmp=tmp_path),
        "--experiment",
        experiment,
        "--out",
        str(tmp_path / "o"),
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert db.read_bytes() == before


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.browser
def test_check_passes_in_headless_chromium_and_writes_screenshots(tmp_path):
    if ui.find_chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    db = tmp_path / "mlflow.db"
    ids = make_store(db)
    before = db.read_bytes()
    out = tmp_path / "shots"
    result = _run_script(
        "--tracking-uri", f"sqlite:///{db}", "--experiment", "ui_fixture", "--out", str(out)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "workflowType=machine_learning&viewStateShareKey=skipnet-sweep" in result.stdout
    assert "3 child runs" in result.stdout
    assert _png_size(out / "runs_table.png") == ui.VIEWPORT
    assert _png_size(out / "run_page.png") == ui.VIEWPORT
    assert db.read_bytes() == before  # the view was written into the script's copy only
    assert all(len(run_id) == 32 for run_id in ids.values())


@pytest.mark.browser
def test_check_fails_with_one_line_per_missing_column(tmp_path):
    if ui.find_chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    db = tmp_path / "mlflow.db"
    make_store(db, with_alpha=False)
    result = _run_script(
        "--tracking-uri", f"sqlite:///{db}", "--experiment", "ui_fixture", "--out", str(tmp_path)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED:")]
    assert len(failed) == 1 and "column 'alpha' not visible" in failed[0], result.stdout
