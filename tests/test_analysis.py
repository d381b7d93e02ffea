"""Analysis end to end on a synthetic sweep written to MLflow exactly as docs/mlflow_layout.md
describes: runs are read back, every figure is drawn, and the numbers behind the figures
are checked against values worked out by hand below."""

from __future__ import annotations

import importlib.util
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from skipnet_sweep import metrics as M
from skipnet_sweep.pareto import pareto_front
from skipnet_sweep.report import main as report_main
from skipnet_sweep.reporting import figures as F
from skipnet_sweep.reporting import study
from skipnet_sweep.reporting.baselines import COLUMNS
from skipnet_sweep.reporting.runs import (
    ExperimentNotFoundError,
    find_parent_run,
    finished,
    load_eval,
    load_runs,
)
from skipnet_sweep.reporting.study import make_comparison, make_report
from skipnet_sweep.reporting.sweep_figures import log_frontier_figures

PNG = b"\x89PNG\r\n\x1a\n"
PDF = b"%PDF"
PLAIN = 100e6  # flops_plain of the synthetic backbone: round, so areas are easy by hand
BACKBONE = "cifar_resnet38"


@dataclass
class Spec:
    """One child run of the synthetic sweep."""

    name: str
    stage: str
    gate: str
    variant: str
    top1: float
    macs: float
    alpha: float | None = None
    tau: float | None = None
    status: str = "FINISHED"
    artifacts: dict[str, object] = field(default_factory=dict)
    timing: float = 1.0  # how slow its machine is: every latency it logs, times this


# Per-sample tables (3 classes, 4 images each). HRL+SP, rnn, alpha 0.1:
#   class 0: skipped 5 6 6 7, all right     -> top-1 100%, median 6
#   class 1: skipped 1 2 2 9, two right     -> top-1  50%, median 2
#   class 2: skipped 3 3 4 4, three right   -> top-1  75%, median 3.5
HRL_SAMPLES = pd.DataFrame(
    {
        "index": range(12),
        "label": [0] * 4 + [1] * 4 + [2] * 4,
        "pred": [0, 0, 0, 0, 1, 1, 0, 2, 2, 2, 2, 0],
        "skipped": [5, 6, 6, 7, 1, 2, 2, 9, 3, 3, 4, 4],
        "macs": [60e6] * 12,
    }
)
# SP, rnn: medians 2.5 / 0.5 / 1 (only per_sample.csv is logged: the report rebuilds the
# per-class table from it).
SP_SAMPLES = HRL_SAMPLES.assign(skipped=[2, 2, 3, 3, 0, 0, 1, 1, 1, 1, 1, 2])
HRL_PER_CLASS = pd.DataFrame(
    {
        "label": [0, 1, 2],
        "count": [4, 4, 4],
        "top1": [100.0, 50.0, 75.0],
        "median_skipped": [6.0, 2.0, 3.5],
        "mean_skipped": [6.0, 3.5, 3.5],
    }
)
MEAN = np.array([0.5, 0.4, 0.3], dtype=np.float32)
STD = np.array([0.2, 0.2, 0.2], dtype=np.float32)


def easy_hard_arrays() -> dict[str, np.ndarray]:
    """Easy images are 0.9 everywhere, hard ones 0.1, once un-normalised; one hard pixel is
    far out of range and must be clipped to 1."""
    raw_easy = np.full((2, 3, 4, 4), 0.9, dtype=np.float32)
    raw_hard = np.full((2, 3, 4, 4), 0.1, dtype=np.float32)
    norm = lambda x: (x - MEAN[None, :, None, None]) / STD[None, :, None, None]  # noqa: E731
    hard = norm(raw_hard)
    hard[0, 0, 0, 0] = 50.0
    return {
        "easy_images": norm(raw_easy).astype(np.float32),
        "hard_images": hard.astype(np.float32),
        "easy_skipped": np.array([9.0, 8.0]),
        "hard_skipped": np.array([1.0, 2.0]),
        "easy_labels": np.array([0, 2]),
        "hard_labels": np.array([1, 1]),
        "mean": MEAN,
        "std": STD,
    }


SPECS = [
    Spec("plain", "baseline", "none", "baseline", 92.0, 100e6),  # dominated by the SP runs
    Spec("sp-ff1", "sp", "ff1", "sp", 92.2, 90e6),  # frontier
    Spec("sp-rnn", "sp", "rnn", "sp", 92.1, 80e6, artifacts={"per_sample": SP_SAMPLES}),  # front
    Spec(
        "hrl-rnn-0.1",
        "hrl",
        "rnn",
        "hrl+sp",
        91.9,
        60e6,
        alpha=0.1,
        artifacts={"per_sample": HRL_SAMPLES, "per_class": HRL_PER_CLASS, "npz": True},
    ),  # frontier
    Spec("hrl-rnn-0.5", "hrl", "rnn", "hrl+sp", 91.0, 40e6, alpha=0.5),  # frontier
    Spec("hrl-rnn-1.0", "hrl", "rnn", "hrl+sp", 88.0, 45e6, alpha=1.0),  # dominated by 0.5
    Spec("hrl-ff1-0.1", "hrl", "ff1", "hrl+sp", 91.6, 70e6, alpha=0.1),  # dominated by rnn 0.1
    Spec("hrls-rnn-0.1", "hrl", "rnn", "hrl+s", 85.0, 55e6, alpha=0.1),
    Spec("rl-rnn-0.1", "hrl", "rnn", "rl", 10.0, 30e6, alpha=0.1),  # frontier: cheapest
    Spec("soft-rnn", "sp", "rnn", "soft", 66.0, 61e6),
    Spec("act-0.01", "act", "none", "act", 90.5, 50e6, tau=0.01),  # dominated by hrl 0.5
    Spec("sact-0.005", "sact", "none", "sact", 89.0, 35e6, tau=0.005),  # frontier
    Spec("hrl-rnn-4.0", "hrl", "rnn", "hrl+sp", math.nan, math.nan, alpha=4.0, status="FAILED"),
]
FRONTIER = ["rl-rnn-0.1", "sact-0.005", "hrl-rnn-0.5", "hrl-rnn-0.1", "sp-rnn", "sp-ff1"]
# Strips from ref_macs = 100e6 down, one per frontier point (top-1 rising along it):
#   70e6*10 + 65e6*79 + 60e6*2 + 40e6*0.9 + 20e6*0.2 + 10e6*0.1
HYPERVOLUME = 700e6 + 5135e6 + 120e6 + 36e6 + 4e6 + 1e6
# As a fraction of the plain ResNet's box, 100 % x PLAIN MACs: 5996e6 / 10000e6.
HV_FRACTION = HYPERVOLUME / (100 * PLAIN)


def _log_child(client: MlflowClient, exp_id: str, parent_id: str, spec: Spec, tmp: Path) -> str:
    method = M.method_of(spec.stage, spec.gate)
    run = client.create_run(
        exp_id,
        run_name=spec.name,
        tags={
            "mlflow.parentRunId": parent_id,
            M.TAG_STAGE: spec.stage,
            M.TAG_METHOD: method,
            M.TAG_TRIAL_ID: f"trial-{spec.name}",
            M.TAG_PARETO: str(spec.name in FRONTIER).lower(),
        },
    )
    rid = run.info.run_id
    params = {
        M.PARAM_DATASET: "cifar10",
        M.PARAM_ARCH: BACKBONE,
        M.PARAM_GATE: spec.gate,
        M.PARAM_VARIANT: spec.variant,
        M.PARAM_ALPHA: "None" if spec.alpha is None else str(spec.alpha),
        M.PARAM_TAU: "None" if spec.tau is None else str(spec.tau),
        M.PARAM_SEED: "0",
    }
    now = int(time.time() * 1000)
    metrics = []
    if spec.status == "FINISHED":
        final = {
            M.TOP1: spec.top1,
            M.TOP5: min(100.0, spec.top1 + 5),
            M.FLOPS_MEAN: spec.macs,
            M.FLOPS_STD: 1e5,
            M.CONV_FLOPS_MEAN: spec.macs - 640,
            M.FLOPS_FULL: PLAIN,
            M.FLOPS_PLAIN: PLAIN,
            M.GATE_FLOPS: 0.0,
            M.COMPUTATION_PCT: 100 * spec.macs / PLAIN,
            M.REDUCTION_PCT: 100 - 100 * spec.macs / PLAIN,
            M.SKIPPED_MEAN: 3.0,
            M.SKIP_RATIO: 0.2,
            M.ROUTING_SHARE: 25.0,
            M.ROUTED_GATES: 2.0,
            M.gate_skip_ratio(0): 0.1,
            # Measured latency as the sweep logs it: here proportional to the MACs.
            M.latency_ms(1): spec.timing * spec.macs / 1e7,
            M.latency_plain_ms(1): spec.timing * PLAIN / 1e7,
            M.speedup(1): PLAIN / spec.macs,
        }
        # An early evaluation first: the report must read the final value, not this one.
        metrics.append(Metric(M.TOP1, 50.0, now, 10))
        metrics += [Metric(k, float(v), now + 1, 100) for k, v in final.items()]
    client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    if spec.artifacts:
        folder = tmp / spec.name / M.ARTIFACT_DIR
        folder.mkdir(parents=True)
        if "per_sample" in spec.artifacts:
            spec.artifacts["per_sample"].to_csv(folder / M.PER_SAMPLE_CSV, index=False)
        if "per_class" in spec.artifacts:
            spec.artifacts["per_class"].to_csv(folder / M.PER_CLASS_CSV, index=False)
        if "npz" in spec.artifacts:
            np.savez_compressed(folder / M.EASY_HARD_NPZ, **easy_hard_arrays())
        client.log_artifacts(rid, str(folder), M.ARTIFACT_DIR)
    if spec.status == "FAILED":
        client.set_tag(rid, M.TAG_ERROR, "loss became NaN at step 40")
    client.set_terminated(rid, spec.status)
    return rid


@dataclass
class Sweep:
    uri: str
    tmp: Path
    ids: dict[str, str]
    parent_id: str


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("quick", artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(
        exp_id,
        run_name="quick",
        tags={M.TAG_SWEEP_ID: "sweep-1", M.TAG_STAGE: M.SWEEP_STAGE, M.TAG_SPACE: "quick"},
    )
    ids = {s.name: _log_child(client, exp_id, parent.info.run_id, s, tmp) for s in SPECS}
    # A sweep with only a plain run and an SP run, no parent and no artifacts.
    small = client.create_experiment("small", artifact_location=(tmp / "art2").as_uri())
    dummy_parent = "0" * 32
    for s in SPECS[:2]:
        _log_child(client, small, dummy_parent, s, tmp / "small")
    return Sweep(uri, tmp, ids, parent.info.run_id)


def is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def is_pdf(path: Path) -> bool:
    return path.stat().st_size > 500 and path.read_bytes()[:4] == PDF


def assert_drawn(files: list[Path]) -> None:
    exts = {p.suffix for p in files}
    assert {".png", ".pdf"} <= exts
    for p in files:
        if p.suffix == ".png":
            assert is_png(p), p
        elif p.suffix == ".pdf":
            assert is_pdf(p), p


# --------------------------------------------------------------------------- runs


def test_load_runs_reads_children_and_final_metrics(sweep: Sweep) -> None:
    runs = load_runs("quick", sweep.uri)
    assert len(runs) == len(SPECS)  # the parent (stage=sweep) is not a row
    row = runs.set_index("run_name").loc["hrl-rnn-0.1"]
    assert row[M.TOP1] == 91.9  # the final value, not the step-10 one
    assert row[M.PARAM_ALPHA] == 0.1 and math.isnan(row[M.PARAM_TAU])
    assert row[M.TAG_METHOD] == "skipnet-rnn" and row[M.PARAM_VARIANT] == "hrl+sp"
    assert row["parent"] == sweep.parent_id and row[M.TAG_PARETO] is True
    assert row[M.gate_skip_ratio(0)] == 0.1
    failed = runs.set_index("run_name").loc["hrl-rnn-4.0"]
    assert failed["status"] == "FAILED" and "NaN" in failed["error"]
    assert math.isnan(failed[M.TOP1])
    assert len(finished(runs)) == len(SPECS) - 1
    assert find_parent_run("quick", sweep.uri).info.run_id == sweep.parent_id
    assert find_parent_run("small", sweep.uri) is None


def test_missing_experiment_lists_existing(sweep: Sweep) -> None:
    with pytest.raises(ExperimentNotFoundError, match=r"'nope' not found.*quick.*small"):
        load_runs("nope", sweep.uri)
    with pytest.raises(ExperimentNotFoundError, match="no MLflow tracking store"):
        load_runs("quick", f"sqlite:///{sweep.tmp}/absent.db")
    assert not (sweep.tmp / "absent.db").exists()


def test_load_eval_artifacts(sweep: Sweep, tmp_path: Path) -> None:
    art = load_eval(sweep.ids["hrl-rnn-0.1"], tmp_path, sweep.uri)
    pd.testing.assert_frame_equal(art.per_class, HRL_PER_CLASS, check_dtype=False)
    assert list(art.per_sample["skipped"]) == list(HRL_SAMPLES["skipped"])
    assert art.easy_hard["easy_images"].shape == (2, 3, 4, 4)
    none = load_eval(sweep.ids["plain"], tmp_path, sweep.uri)
    assert none.per_sample is None and none.per_class is None and none.easy_hard is None


# --------------------------------------------------------------------------- figures


@pytest.fixture(scope="module")
def runs(sweep: Sweep) -> pd.DataFrame:
    return load_runs("quick", sweep.uri)


def write_baselines(path: Path) -> pd.DataFrame:
    rows = [
        ("plain", BACKBONE, "cifar10", "", 83280512, 92.5, "", "Table 2", ""),
        ("skipnet-rnn", BACKBONE, "cifar10", "computation_pct=70.27 (blocks)", "", 92.75, "",
         "README", "blocks"),
        ("sact", BACKBONE, "cifar10", "tau=0.01", 50e6, 90.0, "", "S", ""),
        ("sact", BACKBONE, "cifar10", "tau=0.001", 70e6, 91.0, "", "S", ""),
        ("plain", BACKBONE, "cifar100", "", 83286272, 68.54, "", "Table 2", ""),
        ("plain", "cifar_resnet110", "cifar10", "", 253149824, 93.6, "", "Table 2", ""),
    ]  # fmt: skip
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)
    from skipnet_sweep.reporting.baselines import load_baselines

    return load_baselines(path)


def test_pareto_figure(runs: pd.DataFrame, tmp_path: Path) -> None:
    table = write_baselines(tmp_path / "b.csv")
    data = F.pareto_figure(runs, tmp_path / "pareto", baselines=table)
    assert list(data.frontier["run_name"]) == FRONTIER
    assert data.ref_macs == PLAIN
    assert data.hypervolume == pytest.approx(0.5996)
    assert data.hypervolume == pytest.approx(HV_FRACTION)
    assert "hrl-rnn-4.0" not in set(data.points["run_name"])  # the failed run
    # Same dataset and backbone only: the CIFAR-100 and ResNet-110 rows are never drawn.
    assert sorted(data.baselines_plotted["top1"]) == [90.0, 91.0, 92.5]
    assert list(data.baselines_listed["method"]) == ["skipnet-rnn"]
    assert any("Not plotted (no MACs)" in n and "70.27" in n for n in data.notes)
    # The collapsed RL run (10%) is below the plotted range: listed, still on the frontier.
    assert data.notes[0] == (
        "Below the plotted range: SkipNet, RNNGate ResNet-38 RL α=0.1, top-1 10.00% at 30 M MACs."
    )
    assert_drawn(data.files)
    csv = pd.read_csv(tmp_path / "pareto.csv")
    assert list(csv["run_name"]) == FRONTIER
    assert list(csv[M.FLOPS_MEAN]) == [30e6, 35e6, 40e6, 60e6, 80e6, 90e6]


def test_latency_frontier_compares_each_run_with_the_plain_resnet_timed_beside_it(
    runs: pd.DataFrame, tmp_path: Path
) -> None:
    """A run timed in a process twice as fast as the others (its plain reference took half
    the usual time) but itself 2x slower than that reference has the fewest raw milliseconds
    of all; on the frontier's scale it is 2x the plain ResNet's, so not on the frontier, and
    it is flagged as saving MACs without time."""
    pts = runs.copy()
    plain = pts.loc[pts[M.TAG_STAGE] == "baseline"].iloc[0]
    lat, ref = M.latency_ms(1), M.latency_plain_ms(1)
    candidates = pts[(pts[M.TOP1] < plain[M.TOP1]) & (pts[M.FLOPS_MEAN] < 0.9 * PLAIN)]
    odd = candidates.index[0]
    pts.loc[odd, ref] = plain[ref] / 100
    pts.loc[odd, lat] = 2 * plain[ref] / 100
    pts.loc[odd, M.speedup(1)] = 0.5
    assert pts.loc[odd, lat] == pts[lat].min()  # raw: the fastest run of the sweep
    data = F.latency_figure(pts, tmp_path / "latency")
    name = pts.loc[odd, "run_name"]
    point = data.points.set_index("run_name").loc[name]
    assert point[lat] == pytest.approx(2 * plain[ref])  # all the others ran beside PLAIN/1e7
    assert name not in set(data.frontier["run_name"])
    assert name in set(data.counted_only["run_name"])


def test_latency_frontier_and_flags_are_decided_beyond_the_timings_noise(
    runs: pd.DataFrame, tmp_path: Path
) -> None:
    """The same slow run, timed so noisily that its speed-up's interquartile range spans
    1x: it is neither flagged as no faster nor left off the frontier by runs whose timings
    overlap it."""
    pts = runs.copy()
    plain = pts.loc[pts[M.TAG_STAGE] == "baseline"].iloc[0]
    lat, ref = M.latency_ms(1), M.latency_plain_ms(1)
    candidates = pts[(pts[M.TOP1] < plain[M.TOP1]) & (pts[M.FLOPS_MEAN] < 0.9 * PLAIN)]
    odd = candidates.index[0]
    pts.loc[odd, lat] = 2 * plain[ref]
    pts[M.speedup_q1(1)] = pts[M.speedup(1)]
    pts[M.speedup_q3(1)] = pts[M.speedup(1)]
    pts.loc[odd, [M.speedup(1), M.speedup_q1(1), M.speedup_q3(1)]] = [0.5, 0.01, 100.0]
    data = F.latency_figure(pts, tmp_path / "latency")
    name = pts.loc[odd, "run_name"]
    assert name not in set(data.counted_only["run_name"])
    assert name in set(data.frontier["run_name"])  # no run is faster beyond its bar
    # Timed without noise, the others keep their classic frontier.
    exact = F.latency_figure(pts.drop(index=odd), tmp_path / "exact")
    front = pareto_front(exact.points[[lat, M.TOP1]].to_numpy(dtype=float))
    assert set(exact.frontier["run_name"]) == set(exact.points["run_name"].iloc[front])


def test_pareto_figure_without_matching_baseline(runs: pd.DataFrame, tmp_path: Path) -> None:
    table = write_baselines(tmp_path / "b.csv")
    other = runs.assign(**{M.PARAM_ARCH: "cifar_resnet20"})
    data = F.pareto_figure(other, tmp_path / "p", baselines=table, flops_unit="K")
    assert data.baselines_plotted.empty
    assert any("none for CIFAR-10 with ResNet-20" in n for n in data.notes)
    everything = F.pareto_figure(runs, tmp_path / "q", top1_range=None)
    assert everything.notes == ["Published baselines: none loaded."]
    with pytest.raises(ValueError, match="flops_unit"):
        F.pareto_figure(runs, tmp_path / "r", flops_unit="T")


def test_alpha_tradeoff(runs: pd.DataFrame, tmp_path: Path) -> None:
    out = F.alpha_tradeoff_figure(runs, tmp_path / "alpha")
    rnn = out.data[out.data[M.PARAM_GATE] == "rnn"]
    assert list(rnn[M.PARAM_ALPHA]) == [0.1, 0.5, 1.0]
    assert list(rnn[M.TOP1]) == [91.9, 91.0, 88.0]
    assert list(out.data[out.data[M.PARAM_GATE] == "ff1"][M.FLOPS_MEAN]) == [70e6]
    assert_drawn(out.files)


def test_reduction_picks_cheapest_hrl_within_tolerance(runs: pd.DataFrame, tmp_path: Path) -> None:
    out = F.reduction_figure(runs, tmp_path / "reduction")
    by_gate = out.data.set_index(M.PARAM_GATE)
    # ff1: SP 90e6 -> 10%; the only HRL+SP (91.6%, within 0.5 of plain's 92.0) 70e6 -> 30%.
    assert by_gate.loc["ff1", "sp_reduction"] == pytest.approx(10.0)
    assert by_gate.loc["ff1", "hrl_reduction"] == pytest.approx(30.0)
    # rnn: SP 80e6 -> 20%; alpha 0.5 and 1.0 lose > 0.5 points, so alpha 0.1 at 60e6 -> 40%.
    assert by_gate.loc["rnn", "sp_reduction"] == pytest.approx(20.0)
    assert by_gate.loc["rnn", "hrl_reduction"] == pytest.approx(40.0)
    assert by_gate.loc["rnn", M.PARAM_ALPHA] == 0.1
    assert by_gate["within_tolerance"].all()
    assert set(by_gate["rule"]) == {"within_tolerance"}
    # The caption states the rule and, per bar, which run it chose.
    assert out.notes[0].startswith("HRL+SP bar: the run with the largest reduction whose top-1")
    assert (
        "SkipNet, RNNGate, ResNet-38: α=0.1, top-1 91.90% vs. plain ResNet 92.00% "
        "(rule: within 0.5 pt)." in out.notes
    )
    title = out.figure.axes[0].get_title()
    assert "CIFAR-10, ResNet-38" in title and "RNNGate α=0.1" in title
    # With a looser tolerance the cheaper alpha 0.5 (91.0%) qualifies: 60%.
    loose = F.select_hrl_runs(runs, tolerance=1.0).set_index(M.PARAM_GATE)
    assert loose.loc["rnn", "hrl_reduction"] == pytest.approx(60.0)
    assert_drawn(out.files)


def test_reduction_states_the_fallback(runs: pd.DataFrame, tmp_path: Path) -> None:
    # A plain ResNet at 95%: no HRL+SP run is within 0.5 pt, so each bar falls back to the
    # most accurate HRL+SP run, and the figure says so.
    strong = runs.copy()
    strong.loc[strong["run_name"] == "plain", M.TOP1] = 95.0
    out = F.reduction_figure(strong, tmp_path / "reduction")
    by_gate = out.data.set_index(M.PARAM_GATE)
    assert set(by_gate["rule"]) == {"most_accurate"}
    assert (
        by_gate.loc["rnn", "hrl_run_id"] == runs.set_index("run_name").loc["hrl-rnn-0.1", "run_id"]
    )
    assert (
        "SkipNet, RNNGate, ResNet-38: no α within 0.5 pt of the plain ResNet (95.00%); shown: "
        "the most accurate, α=0.1 at 91.90% (rule: fallback)." in out.notes
    )
    texts = " ".join(t.get_text() for t in out.figure.texts)
    assert "rule: fallback" in texts
    bar_labels = [t.get_text() for t in out.figure.axes[0].texts]
    assert "40%\nα=0.1*" in bar_labels


def test_hard_soft_table(runs: pd.DataFrame, sweep: Sweep, tmp_path: Path) -> None:
    out = F.hard_soft_table(runs, tmp_path / "hard_soft")
    # The soft rnn run (61e6) pairs with the closest hard rnn run: HRL+SP alpha 0.1 (60e6).
    assert list(out.data[M.PARAM_VARIANT]) == ["hard", "soft"]
    assert list(out.data["run_id"]) == [sweep.ids["hrl-rnn-0.1"], sweep.ids["soft-rnn"]]
    assert list(out.data[M.TOP1]) == [91.9, 66.0]
    md = (tmp_path / "hard_soft.md").read_text()
    assert "| CIFAR-10 | SkipNet-38-Hard | RNNGate | hard | 91.90 | 60 |" in md
    assert "| CIFAR-10 | SkipNet-38-Soft | RNNGate | soft | 66.00 | 61 |" in md
    assert len(pd.read_csv(tmp_path / "hard_soft.csv")) == 2


def test_variants_figure(runs: pd.DataFrame, tmp_path: Path) -> None:
    out = F.variants_figure(runs, tmp_path / "variants")
    at = out.data[out.data[M.PARAM_ALPHA] == 0.1].set_index(M.PARAM_VARIANT)
    assert at.loc["hrl+s", M.TOP1] == 85.0 and at.loc["rl", M.TOP1] == 10.0
    assert_drawn(out.files)
    only_hrl = runs[~runs[M.PARAM_VARIANT].isin(["hrl+s", "rl"])]
    with pytest.raises(F.NotEnoughData, match="no HRL\\+S or RL runs"):
        F.variants_figure(only_hrl, tmp_path / "v2")


def test_per_class_and_histogram(tmp_path: Path) -> None:
    sp = F.per_class_from_samples(SP_SAMPLES)
    assert list(sp["median_skipped"]) == [2.5, 0.5, 1.0]
    assert list(sp["top1"]) == [100.0, 50.0, 75.0]
    out = F.per_class_figure(sp, HRL_PER_CLASS, tmp_path / "per_class", dataset="cifar10")
    # Ordered by HRL+SP accuracy: class 1 (50%), class 2 (75%), class 0 (100%).
    assert list(out.data["name"]) == ["automobile", "bird", "airplane"]
    assert list(out.data["sp_median"]) == [0.5, 1.0, 2.5]
    assert list(out.data["hrl_median"]) == [2.0, 3.5, 6.0]
    assert_drawn(out.files)
    # The axis names each class as the dataset registry does; ImageNet's are numbers.
    for dataset, names in (("fashion_mnist", ["Trouser", "Pullover", "T-shirt/top"]),
                           ("imagenet", ["1", "2", "0"])):  # fmt: skip
        drawn = F.per_class_figure(sp, HRL_PER_CLASS, tmp_path / dataset, dataset=dataset)
        ticks = [t.get_text() for t in drawn.figure.axes[0].get_xticklabels()]
        assert ticks == [f"{n}\n{a}%" for n, a in zip(names, (50, 75, 100), strict=True)]

    hist = F.skip_histogram_figure(HRL_SAMPLES, tmp_path / "hist", dataset="cifar10")
    assert (hist.extra["easy_label"], hist.extra["hard_label"]) == (0, 1)
    assert (hist.extra["easy_name"], hist.extra["hard_name"]) == ("airplane", "automobile")
    h = hist.data.assign(centre=(hist.data.bin_left + hist.data.bin_right) / 2).set_index("centre")
    assert list(h.index) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert h.loc[[5, 6, 7], "easy"].tolist() == [0.25, 0.5, 0.25]
    assert h.loc[[1, 2, 9], "hard"].tolist() == [0.25, 0.5, 0.25]
    assert h["easy"].sum() == pytest.approx(1.0) and h["hard"].sum() == pytest.approx(1.0)
    assert_drawn(hist.files)


def test_easy_hard_grid_unnormalises(tmp_path: Path) -> None:
    out = F.easy_hard_grid(easy_hard_arrays(), tmp_path / "grid", dataset="cifar10")
    assert np.allclose(out.extra["easy"], 0.9, atol=1e-6)
    hard = out.extra["hard"]
    assert hard.shape == (2, 4, 4, 3)  # HWC for imshow
    assert hard[0, 0, 0, 0] == 1.0  # clipped
    assert np.allclose(hard[1], 0.1, atol=1e-6)
    assert list(out.data["skipped"]) == [9.0, 8.0, 1.0, 2.0]
    assert_drawn(out.files)
    # One channel: drawn in grayscale from (N, 1, H, W).
    gray = {
        "easy_images": np.zeros((3, 1, 5, 5), np.float32),
        "hard_images": np.ones((1, 1, 5, 5), np.float32),
        "easy_skipped": np.array([3, 3, 3]),
        "hard_skipped": np.array([0]),
        "easy_labels": np.array([1, 2, 3]),
        "hard_labels": np.array([4]),
        "mean": np.array([0.5], np.float32),
        "std": np.array([0.25], np.float32),
    }
    g = F.easy_hard_grid(gray, tmp_path / "gray")
    assert g.extra["easy"].shape == (3, 5, 5, 1)
    assert np.allclose(g.extra["easy"], 0.5) and np.allclose(g.extra["hard"], 0.75)


# --------------------------------------------------------------------------- report


def test_make_report(sweep: Sweep, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = make_report("quick", out, tracking_uri=sweep.uri, log=True)
    expected = {
        "pareto",
        "pareto_latency",
        "alpha_tradeoff",
        "reduction",
        "variants",
        "hard_soft",
        "per_class",
        "skip_histogram",
        "easy_hard",
    }
    assert set(result.figures) == expected, result.skipped
    assert result.skipped == {}
    for name in expected - {"hard_soft"}:
        assert_drawn(result.figures[name])
    # The eval figures use the Fig. 4 pair: SP rnn and the HRL+SP run chosen for it.
    assert result.data["eval_runs"]["per_class"] == (sweep.ids["sp-rnn"], sweep.ids["hrl-rnn-0.1"])
    assert list(result.data["per_class"].data["sp_median"]) == [0.5, 1.0, 2.5]
    assert result.data["pareto"].hypervolume == pytest.approx(HV_FRACTION)
    # The shipped baselines: the Table 2 ResNet-38 is drawn, the published SkipNet-38
    # (block percentage only) is listed.
    assert list(result.data["pareto"].baselines_plotted["top1"]) == [92.5]
    assert list(result.data["pareto"].baselines_listed["top1"]) == [92.75]

    summary = pd.read_csv(out / "summary.csv").set_index("run_id")
    hrl = summary.loc[sweep.ids["hrl-rnn-0.1"]]
    assert hrl["reduction_pct"] == pytest.approx(40.0)
    assert hrl["delta_top1"] == pytest.approx(-0.1)
    assert bool(hrl["pareto"]) is True
    assert bool(summary.loc[sweep.ids["plain"], "pareto"]) is False
    assert summary["pareto"].sum() == len(FRONTIER)
    text = result.summary.read_text()
    assert (
        "| CIFAR-10 | ResNet-38 | SkipNet, RNNGate | HRL+SP | α=0.1 | 91.90 | -0.10 | 60 | 40.0 "
        "| 1.67 | 25 | ✓ |" in text
    )
    assert "Routing: 12 of the 12 runs that skip blocks route per image" in text
    assert "| τ=0.005 |" in text
    assert "- Hypervolume (pareto): HV 0.600, the fraction of the plain ResNet's box" in text
    # Each figure of one run says which run, on which data and backbone.
    hrl_id = sweep.ids["hrl-rnn-0.1"][:8]
    for name in ("per_class", "skip_histogram", "easy_hard"):
        fig = result.data[name].figure
        title = fig.axes[0].get_title() if name != "easy_hard" else fig.get_suptitle()
        assert "CIFAR-10, ResNet-38" in title, name
        assert f"SkipNet, RNNGate HRL+SP α=0.1 (run {hrl_id})" in title, name
    assert "hrl-rnn-4.0 (FAILED): loss became NaN at step 40" in text
    assert "Figures not made" not in text

    # Logged to the sweep's parent run under report/.
    client = MlflowClient(tracking_uri=sweep.uri)
    logged = {Path(a.path).name for a in client.list_artifacts(sweep.parent_id, "report")}
    assert {"summary.md", "summary.csv", "pareto.png", "pareto.pdf", "pareto.csv"} <= logged
    assert result.parent_run_id == sweep.parent_id
    assert (
        result.logged_to
        == (sweep.tmp / "artifacts").as_uri() + f"/{sweep.parent_id}/artifacts/report"
    )


def test_frontier_figures_logged_to_the_parent_run_replace_themselves(sweep: Sweep) -> None:
    """What a sweep logs when it ends: the frontier figures in MACs and in latency, drawn
    from every finished run, under the parent's report/; logged again (a resumed sweep), the
    same files are replaced, not added."""
    client = MlflowClient(tracking_uri=sweep.uri)
    logged = log_frontier_figures(sweep.parent_id, sweep.uri)
    assert logged.error is None, logged.error
    assert logged.images == ["report/pareto.png", "report/pareto_latency.png"]
    assert {"report/pareto.pdf", "report/pareto.csv"} <= set(logged.files)
    assert logged.artifact_uri == (
        (sweep.tmp / "artifacts").as_uri() + f"/{sweep.parent_id}/artifacts/report"
    )
    sizes = {a.path: a.file_size for a in client.list_artifacts(sweep.parent_id, "report")}
    assert all(sizes[f] > 1000 for f in logged.images)
    # The figures hold the points of the runs: every finished one, the frontier's marked.
    done = {s.name for s in SPECS if s.status == "FINISHED"}
    pareto = logged.data["pareto"]
    assert set(pareto.points["run_id"]) == {sweep.ids[n] for n in done}
    assert set(pareto.frontier["run_id"]) == {sweep.ids[n] for n in FRONTIER}
    assert set(logged.data["pareto_latency"].points["run_id"]) == {sweep.ids[n] for n in done}
    assert logged.seconds < 60

    again = log_frontier_figures(sweep.parent_id, sweep.uri)
    assert again.error is None and again.files == logged.files
    after = {a.path: a.file_size for a in client.list_artifacts(sweep.parent_id, "report")}
    assert set(after) == set(sizes)


def test_frontier_figures_that_fail_say_why_and_raise_nothing(
    sweep: Sweep, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = log_frontier_figures("f" * 32, sweep.uri)
    assert missing.files == [] and missing.artifact_uri is None
    assert missing.error.startswith("MlflowException: ") and "\n" not in missing.error

    def broken(*args, **kwargs):
        raise RuntimeError("the figure\nbroke")

    monkeypatch.setattr(study, "frontier_figures", broken)
    failed = log_frontier_figures(sweep.parent_id, sweep.uri)
    assert failed.error == "RuntimeError: the figure broke"
    assert failed.files == []


def test_report_lists_figures_not_made(sweep: Sweep, tmp_path: Path) -> None:
    result = make_report("small", tmp_path / "r", tracking_uri=sweep.uri, log=True)
    assert set(result.figures) == {"pareto", "pareto_latency"}
    assert result.skipped["hard_soft"] == "no soft-gating runs (variant=soft)"
    assert "HRL+SP" in result.skipped["alpha_tradeoff"]
    assert "easy_hard.npz" in result.skipped["easy_hard"]
    assert result.parent_run_id is None  # no stage=sweep run in this experiment
    text = result.summary.read_text()
    assert "## Figures not made" in text and "- hard_soft: no soft-gating runs" in text


def test_report_cli(sweep: Sweep, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = report_main(
        ["--experiment", "nope", "--out", str(tmp_path), "--tracking-uri", sweep.uri]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: experiment 'nope' not found") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # nothing written: not even the --out folder
    # An experiment without runs: the same, nothing written.
    MlflowClient(tracking_uri=sweep.uri).create_experiment("empty-cli")
    out = tmp_path / "never"
    code = report_main(
        ["--experiment", "empty-cli", "--out", str(out), "--tracking-uri", sweep.uri]
    )
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err == f"error: experiment 'empty-cli' in {sweep.uri} has no sweep runs to report on\n"
    argv = ["--experiment", "small", "--out", str(tmp_path / "o"), "--tracking-uri", sweep.uri]
    assert report_main(argv) == 0
    assert (tmp_path / "o" / "summary.md").is_file()
    assert report_main([*argv, "--log"]) == 0
    assert "not logged: experiment 'small' has no sweep parent run" in capsys.readouterr().out


def files_under(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_report_on_a_copy_of_a_store_writes_only_under_out(
    sweep: Sweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy's runs keep the original's absolute artifact paths: the report reads the
    artifacts from there but writes nothing outside --out, and logs nothing unless --log."""
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(sweep.tmp / "mlflow.db", copy / "mlflow.db")
    uri = f"sqlite:///{copy}/mlflow.db"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    client = MlflowClient(tracking_uri=uri)
    logged = lambda: [a.path for a in client.list_artifacts(sweep.parent_id, "report")]  # noqa: E731
    original, logged_before = files_under(sweep.tmp), logged()
    out = tmp_path / "out"
    assert report_main(["--experiment", "quick", "--tracking-uri", uri, "--out", str(out)]) == 0
    assert files_under(sweep.tmp) == original  # the original store and its artifacts
    assert logged() == logged_before
    assert list(work.iterdir()) == [] and [p.name for p in copy.iterdir()] == ["mlflow.db"]
    # The eval figures were made from the original's artifacts, into --out.
    assert {"summary.md", "per_class.png", "easy_hard.png"} <= {p.name for p in out.iterdir()}


# --------------------------------------------------------------------------- comparison

# A second study of the same network on a machine ten times as fast. Its frontier, by hand:
# hrl 0.1 (50e6, 92.0), SP (75e6, 92.4), plain (100e6, 92.5); alpha 1.0 is dominated.
CLUSTER = [
    Spec("plain", "baseline", "none", "baseline", 92.5, 100e6, timing=0.1),
    Spec("sp-rnn", "sp", "rnn", "sp", 92.4, 75e6, timing=0.1),
    Spec("hrl-rnn-0.1", "hrl", "rnn", "hrl+sp", 92.0, 50e6, alpha=0.1, timing=0.1),
    Spec("hrl-rnn-1.0", "hrl", "rnn", "hrl+sp", 89.0, 55e6, alpha=1.0, timing=0.1),
]
# The first study: the plain run and four of SPECS, frontier hrl 0.5, hrl 0.1, SP rnn, SP ff1.
CPU = SPECS[:5]
CPU_FRONTIER = ["hrl-rnn-0.5", "hrl-rnn-0.1", "sp-rnn", "sp-ff1"]
CLUSTER_FRONTIER = ["hrl-rnn-0.1", "sp-rnn", "plain"]
# In the box top-1 [0, 100] x MACs [0, 100e6] (both plain ResNets' MACs), strip by strip:
#   cpu: 60e6*91.0 + 40e6*0.9 + 20e6*0.2 + 10e6*0.1;  cluster: 50e6*92.0 + 25e6*0.4 + 0
CPU_HV = (60 * 91.0 + 40 * 0.9 + 20 * 0.2 + 10 * 0.1) / 10_000
CLUSTER_HV = (50 * 92.0 + 25 * 0.4) / 10_000


@dataclass
class Studies:
    uri: str
    tmp: Path
    parents: dict[str, str]  # experiment -> its sweep's parent run id


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Studies:
    """Two experiments in one store, one sweep each: ``cpu`` (sweep ``cpu-1111``) and
    ``cluster`` (sweep ``cluster-2222``)."""
    tmp = tmp_path_factory.mktemp("studies")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    parents = {}
    for name, specs in (("cpu", CPU), ("cluster", CLUSTER)):
        exp_id = client.create_experiment(name, artifact_location=(tmp / name).as_uri())
        parent = client.create_run(
            exp_id,
            run_name=name,
            tags={M.TAG_SWEEP_ID: f"{name}-{'1111' if name == 'cpu' else '2222'}",
                  M.TAG_STAGE: M.SWEEP_STAGE},
        )  # fmt: skip
        parents[name] = parent.info.run_id
        for spec in specs:
            _log_child(client, exp_id, parent.info.run_id, spec, tmp / name / "logged")
    return Studies(uri, tmp, parents)


def plot_pareto():
    """``analysis/plot_pareto.py`` as a module."""
    path = Path(__file__).resolve().parents[1] / "analysis" / "plot_pareto.py"
    spec = importlib.util.spec_from_file_location("plot_pareto", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def drawn(fig, kind: str) -> dict[str, int]:
    """Points (``runs``) or step lines' corners (``frontier``) drawn per series, from the
    artists' ids (``<kind>:<series>[:<method>]``)."""
    out: dict[str, int] = {}
    artists = [*fig.axes[0].collections, *fig.axes[0].lines]
    for a in artists:
        gid = a.get_gid() or ""
        if gid.startswith(f"{kind}:"):
            series = gid.split(":")[1]
            n = len(a.get_offsets()) if hasattr(a, "get_offsets") else len(a.get_xdata())
            out[series] = out.get(series, 0) + n
    return out


def test_plot_pareto_draws_two_experiments_on_one_figure(studies: Studies, tmp_path: Path) -> None:
    out = tmp_path / "macs"
    argv = ["--experiment", "cpu", "--experiment", "cluster", "--tracking-uri", studies.uri]
    assert plot_pareto().main([*argv, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["pareto.csv", "pareto.pdf", "pareto.png"]
    assert is_png(out / "pareto.png") and is_pdf(out / "pareto.pdf")
    csv = pd.read_csv(out / "pareto.csv")
    assert list(csv["series"]) == ["cpu"] * 4 + ["cluster"] * 3
    assert list(csv["run_name"]) == CPU_FRONTIER + CLUSTER_FRONTIER

    # What is on the figure (the same call, in the library).
    result = make_comparison(
        [("experiment", "cpu"), ("experiment", "cluster")],
        tmp_path / "lib",
        tracking_uri=studies.uri,
    )
    data = result.data["pareto"]
    assert data.series_hypervolume == pytest.approx({"cpu": CPU_HV, "cluster": CLUSTER_HV})
    assert drawn(data.figure, "runs") == {"cpu": 5, "cluster": 4}
    # A step line per study, through its frontier and on to the largest plain ResNet.
    assert drawn(data.figure, "frontier") == {"cpu": 4 + 1, "cluster": 3 + 1}
    (cpu_line,) = [ln for ln in data.figure.axes[0].lines if ln.get_gid() == "frontier:cpu"]
    assert list(cpu_line.get_xdata()) == [40, 60, 80, 90, 100]  # M MACs
    # The bundled baselines: the published ResNet-38 (Table 2) is drawn beside both.
    assert drawn(data.figure, "published") == {"plain": 1}
    legend = [t.get_text() for t in data.figure.legends[0].get_texts()]
    assert legend[:2] == [
        f"cpu: HV {CPU_HV:.3f}, 4 of 5 runs on its frontier",
        f"cluster: HV {CLUSTER_HV:.3f}, 3 of 4 runs on its frontier",
    ]
    assert "2 studies, 9 finished runs" in data.figure.axes[0].get_title()
    # Written only under --out: nothing logged to either sweep.
    client = MlflowClient(tracking_uri=studies.uri)
    assert all(client.list_artifacts(run_id) == [] for run_id in studies.parents.values())


def test_plot_pareto_by_sweep_on_measured_latency(studies: Studies, tmp_path: Path) -> None:
    out = tmp_path / "latency"
    argv = ["--sweep", "cluster-2222", "--sweep", "cpu-1111", "--tracking-uri", studies.uri]
    assert plot_pareto().main([*argv, "--x", "latency", "--out", str(out), "--name", "t"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["t.pdf", "t.png"]
    result = make_comparison(
        [("sweep", "cluster-2222"), ("sweep", "cpu-1111")],
        tmp_path / "lib",
        tracking_uri=studies.uri,
        x="latency",
    )
    data = result.data["pareto"]
    assert drawn(data.figure, "runs") == {"cluster-2222": 4, "cpu-1111": 5}
    assert set(drawn(data.figure, "frontier")) == {"cluster-2222", "cpu-1111"}
    # Each study on its own machine's scale: the cluster's runs at a tenth of the CPU's.
    lat = data.points.set_index(["series", "run_name"])[M.latency_ms(1)]
    assert lat["cluster-2222", "hrl-rnn-0.1"] == pytest.approx(0.5)
    assert lat["cpu-1111", "hrl-rnn-0.1"] == pytest.approx(6.0)
    assert list(data.frontier["run_name"]) == CLUSTER_FRONTIER + CPU_FRONTIER
    legend = [t.get_text() for t in data.figure.legends[0].get_texts()]
    assert "cluster-2222: plain ResNet-38, 1 ms" in legend
    assert "cpu-1111: plain ResNet-38, 10 ms" in legend


def test_plot_pareto_refuses_what_it_cannot_draw(
    studies: Studies, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = plot_pareto()
    out = tmp_path / "never"
    base = ["--tracking-uri", studies.uri, "--out", str(out)]
    assert script.main([*base, "--sweep", "cpu-1111", "--sweep", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no sweep 'nope' in ") and err.count("\n") == 1
    assert "sweeps there: cluster-2222, cpu-1111" in err
    assert script.main([*base, "--experiment", "nope"]) == 2
    assert "'nope' not found" in capsys.readouterr().err
    for argv, why in (
        ([], "give at least one --experiment or --sweep"),
        (["--experiment", "cpu", "--experiment", "cpu"], "each study once"),
        (["--experiment", "cpu", "--x", "latency", "--baselines"], "--baselines and --flops-unit"),
        (["--experiment", "cpu", "--x", "latency", "--flops-unit", "G"], "apply to --x macs"),
        (["--experiment", "cpu", "--batch", "64"], "--batch applies to --x latency"),
    ):
        with pytest.raises(SystemExit) as exit_:
            script.main([*base, *argv])
        assert exit_.value.code == 2 and why in capsys.readouterr().err
    assert not out.exists()  # nothing written by any refusal
