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


CURVE_POINTS = 12  # the fixture's points per training curve


def make_store(
    path: Path,
    experiment: str = "ui_fixture",
    with_alpha: bool = True,
    curve_points: int = CURVE_POINTS,
    with_figure: bool = True,
) -> dict[str, str]:
    """A sweep-shaped store: one parent run with a frontier figure under ``report/`` and
    three nested child runs with training curves.

    Fixture data for a UI check, not results: the names, params, metrics and the figure only
    follow the layout of docs/mlflow_layout.md so that the UI has something to show.

    Args:
        with_alpha: False leaves out the HRL child's ``alpha`` param (a store the check rejects).
        curve_points: points of each child's ``train_loss`` and ``lr`` curves (1: no curve).
        with_figure: False logs no figure to the parent run.
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
        client.log_metric(rid, M.TEST_TOP1, top1 - 0.4)
        client.log_metric(rid, M.FLOPS_MEAN, flops)
        for i in range(curve_points):
            step = 10 * i
            client.log_metric(rid, M.TRAIN_LOSS, 2.3 / (1 + 0.5 * i), step=step)
            client.log_metric(rid, M.LR, 0.1 * 0.5 ** (i // 4), step=step)
        client.set_terminated(rid)
        ids[name] = rid
    if with_figure:
        _log_figure(client, parent.info.run_id, path.parent)
    client.set_terminated(parent.info.run_id)
    return ids


def _log_figure(client, run_id: str, folder: Path) -> None:
    # A stand-in for the frontier figure that `run` logs to its parent run.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3), dpi=80)
    ax.plot([2.2, 3.0, 4.1], [88.5, 89.0, 90.0], "o-")
    ax.set(xlabel="MACs (10^7)", ylabel="val top-1 (%)", title="fixture frontier")
    png = folder / ui.FRONTIER_FIGURE
    fig.savefig(png, bbox_inches="tight")
    plt.close(fig)
    client.log_artifact(run_id, str(png), ui.FIGURE_FOLDER)


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
    columns = ("params.`alpha`", "params.`gate`", "metrics.`top1`", "metrics.`test_top1`")
    for column in (*columns, "metrics.`flops_mean`"):
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


def test_tradeoff_figure_is_the_macs_frontier_of_the_parent_runs_pngs():
    assert ui.tradeoff_figure(["pareto.png", "pareto_latency.png"]) == "pareto.png"
    # One figure per dataset when a sweep spans several (reporting.study._pareto_all).
    names = ["pareto_cifar10.png", "pareto_latency.png", "pareto_svhn.png"]
    assert ui.tradeoff_figure(names) == "pareto_cifar10.png"
    assert ui.tradeoff_figure(["pareto_latency.png", "summary.png"]) is None


def _browser_or_skip() -> None:
    if ui.find_chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")


@pytest.mark.browser
def test_check_passes_in_headless_chromium_and_writes_screenshots(tmp_path):
    _browser_or_skip()
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
    # The clicks, counted, from the printed URL to the figure in the parent run's artifacts
    # and to the chart of a child run's training curve (every point of it drawn).
    assert (
        "clicks from the printed URL to the trade-off figure: 4"
        " (ui-fixture-sweep -> Artifacts -> report -> pareto.png)"
    ) in result.stdout
    assert "artifactPath/report/pareto.png" in result.stdout
    assert (
        "clicks from the printed URL to the training curves of 'fixture-baseline': 3"
        " (+ -> fixture-baseline -> Model metrics)"
    ) in result.stdout
    assert f"'train_loss': {CURVE_POINTS} points logged" in result.stdout
    assert f"{CURVE_POINTS} drawn" in result.stdout
    for name in ui.SCREENSHOTS:
        assert _png_size(out / name) == ui.VIEWPORT, name
    assert db.read_bytes() == before  # the view was written into the script's copy only
    assert all(len(run_id) == 32 for run_id in ids.values())


@pytest.mark.browser
@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({"with_alpha": False}, "column 'alpha' not visible"),
        ({"curve_points": 1}, "training curves: 'train_loss' has fewer than 2 points"),
        ({"with_figure": False}, "has no trade-off figure report/pareto.png"),
    ],
    ids=["no-alpha-column", "single-point-curves", "no-figure"],
)
def test_check_fails_with_one_line_per_failed_check(tmp_path, store, message):
    _browser_or_skip()
    db = tmp_path / "mlflow.db"
    make_store(db, **store)
    result = _run_script(
        "--tracking-uri", f"sqlite:///{db}", "--experiment", "ui_fixture", "--out", str(tmp_path)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED:")]
    assert len(failed) == 1 and message in failed[0], result.stdout
