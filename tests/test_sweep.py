"""A whole sweep on a local Ray instance, checked through MLflow as the report reads it
(``docs/mlflow_layout.md``): one tiny sweep shared by the module (SkipNet, the plain baseline
and a toy plugin method registered from the tests), then the same command again (nothing
re-run). The slow part is Ray (about a minute for the tiny sweep on 2 busy cores). Resume
after a killed driver: tests/test_sweep_resume.py; diverging trials and Optuna:
tests/test_sweep_search.py (separate files: pytest-xdist runs each file on one worker)."""

from __future__ import annotations

import csv
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from sweep_helpers import (
    TINY_TEST_SET,
    Sweep,
    by_stage,
    cli,
    local_sweep,
    run_sweep,
    tracking_uri,
    tune_result_rows,
    write_space,
)
from toy_method import LabelSmoothing, ToyRouted

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import register_method, unregister_method
from skipnet_sweep.pareto import normalised_hypervolume, pareto_front

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


@pytest.fixture(scope="module", autouse=True)
def toy():
    """The toy plugin methods (tests/toy_method.py), registered for this module: the tiny
    sweep runs them beside SkipNet (their ``smooth`` and ``toyroute`` sections); the other
    sweeps have none."""
    register_method(LabelSmoothing)
    register_method(ToyRouted)
    yield
    unregister_method(LabelSmoothing.name)
    unregister_method(ToyRouted.name)


# The toy method's section of the tiny sweep: two label-smoothing fine-tunes of the baseline.
SMOOTH = {"smoothing": [0.0, 0.2], "iterations": 2}
# ... and one run of the toy with its own gate, network and parameter-owning objective.
ROUTED = {"rate": [0.5], "iterations": 2}


# The tiny sweep's temporary folder (``TMPDIR`` for its Ray processes): what it holds after
# the sweep was left there for good.
TINY_TMP: list[Path] = []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, ray_dir) -> Sweep:
    """The tiny sweep (baseline + SP, 4 HRL trials, 2 + 1 trials of the toy methods), run
    once for the module."""
    tmp = tmp_path_factory.mktemp("tiny_tmp")
    TINY_TMP.append(tmp)
    space = write_space(
        tmp_path_factory.mktemp("tiny"), changes={"smooth": SMOOTH, "toyroute": ROUTED}
    )
    driver_tmp, tempfile.tempdir = tempfile.tempdir, str(tmp)  # the driver: this process
    try:
        sweep = run_sweep(space, ray_dir, TMPDIR=str(tmp))
    finally:
        tempfile.tempdir = driver_tmp
    assert sweep.code == 0, sweep.out[-3000:] + sweep.err[-3000:]
    return sweep


# --- the tiny sweep ---------------------------------------------------------------------


def test_exit_code_and_summary(tiny: Sweep) -> None:
    assert tiny.code == 0
    assert f"sweep {tiny.plan.sweep_id}: 9 runs finished" in tiny.out
    assert "failed" not in tiny.out.split(f"sweep {tiny.plan.sweep_id}:")[1]


def test_one_parent_run(tiny: Sweep) -> None:
    parent = tiny.mlflow.parent()
    tags, params = parent.data.tags, parent.data.params
    assert tags[M.TAG_SWEEP_ID] == tiny.plan.sweep_id
    assert tags[M.TAG_STAGE] == M.SWEEP_STAGE
    assert tags[M.TAG_SPACE] == "tiny"
    assert tags["mlflow.runName"] == "tiny"
    assert "mlflow.parentRunId" not in tags
    assert params[M.PARAM_DATASET] == "synthetic"
    assert params["space_file"] == str(tiny.space)
    assert parent.info.status == "FINISHED"


def test_children_one_per_job_and_trial(tiny: Sweep) -> None:
    parent = tiny.mlflow.parent()
    children = tiny.mlflow.children(parent.info.run_id)
    # Nothing outside the parent/child tree (no flat runs from a Tune logger).
    assert len(tiny.mlflow.runs()) == 1 + len(children)
    stages = by_stage(children)
    assert {k: len(v) for k, v in stages.items()} == {
        "baseline": 1,
        "sp": 1,
        "hrl": 4,
        "smooth": 2,
        "toyroute": 1,
    }
    expected = {j.id for j in tiny.plan.shared_jobs} | {j.id for j in tiny.plan.trials}
    ids = [r.data.tags[M.TAG_TRIAL_ID] for r in children]
    assert sorted(ids) == sorted(expected)
    for r in children:
        tags = r.data.tags
        assert r.info.status == "FINISHED", tags
        assert tags["mlflow.runName"] == tags[M.TAG_TRIAL_ID]
        method = {"baseline": "plain", "smooth": "smooth", "toyroute": "toyroute"}.get(
            tags[M.TAG_STAGE], "skipnet-rnn"
        )
        assert tags[M.TAG_METHOD] == method


def test_hrl_runs_point_to_their_sp_run_and_carry_their_params(tiny: Sweep) -> None:
    stages = by_stage(tiny.mlflow.children(tiny.mlflow.parent().info.run_id))
    (sp,) = stages["sp"]
    job = tiny.plan.find("sp", "cifar_resnet8", "rnn")
    assert sp.data.params[M.PARAM_SP_KEY] == job.key
    alphas = set()
    for r in stages["hrl"]:
        p = r.data.params
        assert r.data.tags[M.TAG_SP_RUN_ID] == r.data.tags[M.TAG_INIT_RUN_ID] == sp.info.run_id
        assert p["init"].startswith("file:///") and p["init"].endswith(f"/{job.key}/model.pt")
        assert r.data.tags["node_ip"], "the node a trial ran on is recorded"
        assert p[M.PARAM_ARCH] == "cifar_resnet8"
        assert p[M.PARAM_GATE] == "rnn"
        assert p[M.PARAM_DATASET] == "synthetic"
        assert p[M.PARAM_VARIANT] == "hrl+sp"
        assert p[M.PARAM_SP_KEY] == job.key
        alphas.add(float(p[M.PARAM_ALPHA]))
    assert alphas == {0.0, 1.0, 2.0, 4.0}
    (base,) = stages["baseline"]
    assert M.PARAM_GATE not in base.data.params  # a network without gates has no gate
    for r in stages["smooth"]:  # fine-tunes of the baseline: what they start from, not SP
        assert r.data.tags[M.TAG_INIT_RUN_ID] == base.info.run_id
        assert M.TAG_SP_RUN_ID not in r.data.tags


def test_final_metrics(tiny: Sweep) -> None:
    for r in tiny.mlflow.children(tiny.mlflow.parent().info.run_id):
        m, stage = r.data.metrics, r.data.tags[M.TAG_STAGE]
        for key in (M.TOP1, M.TOP5, M.FLOPS_MEAN, M.FLOPS_STD, M.FLOPS_FULL, M.COMPUTATION_PCT):
            assert math.isfinite(m[key]), (stage, key)
        assert 0 <= m[M.TOP1] <= m[M.TOP5] <= 100
        assert 0 < m[M.FLOPS_MEAN] <= m[M.FLOPS_FULL]
        assert m[M.COMPUTATION_PCT] == pytest.approx(100 * m[M.FLOPS_MEAN] / m[M.FLOPS_PLAIN])
        if stage in ("baseline", "smooth"):  # plain networks
            assert m[M.FLOPS_MEAN] == m[M.FLOPS_PLAIN]
        else:
            assert 0 <= m[M.gate_skip_ratio(0)] <= 1
        if stage == "hrl":
            assert math.isfinite(m[M.REWARD])


def children_rows(tiny: Sweep) -> list:
    return [
        r
        for r in tiny.mlflow.children(tiny.mlflow.parent().info.run_id)
        if r.info.status == "FINISHED"
    ]


def test_every_run_draws_training_curves(tiny: Sweep) -> None:
    """The training logs between evaluations reach MLflow: every curve of every run has
    more than one point, each step once (the tiny stages evaluate once or twice)."""
    client = tiny.mlflow.client
    for r in children_rows(tiny):
        curves = [M.TRAIN_LOSS, M.LR, M.IMAGES_PER_S]
        if r.data.tags[M.TAG_STAGE] in ("sp", "hrl"):  # gated networks
            curves += [M.TRAIN_SKIP_RATIO, M.TRAIN_MACS_MEAN]
        for key in curves:
            steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            assert len(steps) > 1 and steps == sorted(set(steps)), (r.info.run_name, key)


def test_no_checkpoint_copy_is_left_in_the_temporary_folder(tiny: Sweep) -> None:
    """The trials read their checkpoints in place (local storage): Ray's
    ``Checkpoint.to_directory()`` left a copy of each finished trial's (its weights and
    evaluation files) in the temporary folder for good."""
    assert tiny.code == 0
    (tmp,) = TINY_TMP
    left = [(p.name, sorted(f.name for f in p.iterdir())) for p in tmp.glob("checkpoint_tmp_*")]
    assert left == []


def test_pareto_tags_mark_exactly_the_frontier(tiny: Sweep) -> None:
    runs = children_rows(tiny)
    front = set(
        pareto_front([(r.data.metrics[M.FLOPS_MEAN], r.data.metrics[M.TOP1]) for r in runs])
    )
    assert front
    for i, r in enumerate(runs):
        assert r.data.tags[M.TAG_PARETO] == ("true" if i in front else "false")


def test_hypervolume_and_pareto_csv_on_the_parent(tiny: Sweep, tmp_path: Path) -> None:
    parent = tiny.mlflow.parent()
    runs = children_rows(tiny)
    points = [(r.data.metrics[M.FLOPS_MEAN], r.data.metrics[M.TOP1]) for r in runs]
    ref = max(r.data.metrics[M.FLOPS_PLAIN] for r in runs)
    hv = parent.data.metrics[M.HYPERVOLUME]
    assert hv == pytest.approx(normalised_hypervolume(points, ref))
    assert 0 < hv <= 1  # a share of the plain ResNet's box
    # The frontier table is the parent's description; the frontier in latency is tagged too.
    assert "Pareto frontier of tiny" in parent.data.tags["mlflow.note.content"]
    assert all(r.data.tags[M.TAG_PARETO_LATENCY] in ("true", "false") for r in runs)
    assert any(r.data.tags[M.TAG_PARETO_LATENCY] == "true" for r in runs)
    client = tiny.mlflow.client
    names = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {M.PARETO_CSV, "space.yaml"} <= names
    with open(client.download_artifacts(parent.info.run_id, M.PARETO_CSV, str(tmp_path))) as f:
        rows = list(csv.DictReader(f))
    on_front = {r.data.tags["mlflow.runName"] for r in runs if r.data.tags[M.TAG_PARETO] == "true"}
    assert {row["run_name"] for row in rows} == on_front
    macs = [float(row[M.FLOPS_MEAN]) for row in rows]
    assert macs == sorted(macs)


def test_frontier_figures_in_the_parent_run(tiny: Sweep) -> None:
    """When run ends, the parent run holds the frontier in MACs and in latency as PNGs, and
    the summary says where, beside the parent run's URL."""
    parent = tiny.mlflow.parent().info.run_id
    client = tiny.mlflow.client
    sizes = {a.path: a.file_size for a in client.list_artifacts(parent, "report")}
    for name in ("report/pareto.png", "report/pareto_latency.png"):
        assert sizes.get(name, 0) > 1000, sizes
    # The frontier's CSV beside the figure names every run the sweep put on its frontier.
    with open(client.download_artifacts(parent, "report/pareto.csv", str(tiny.space.parent))) as f:
        drawn = {row["run_id"] for row in csv.DictReader(f)}
    front = {r.info.run_id for r in children_rows(tiny) if r.data.tags[M.TAG_PARETO] == "true"}
    assert drawn == front
    summary = tiny.out.split("open: ")[1]
    assert "frontier figures: report/pareto.png, report/pareto_latency.png in the parent run" in (
        summary
    )
    assert f"/runs/{parent}/artifactPath/report/pareto.png" in summary


def test_eval_artifacts_on_children(tiny: Sweep, tmp_path: Path) -> None:
    client = tiny.mlflow.client
    for r in tiny.mlflow.children(tiny.mlflow.parent().info.run_id):
        run_id = r.info.run_id
        names = {f.path for f in client.list_artifacts(run_id, M.ARTIFACT_DIR)}
        expected = {f"{M.ARTIFACT_DIR}/{n}" for n in (M.PER_SAMPLE_CSV, M.PER_CLASS_CSV)}
        assert expected <= names, (r.data.tags[M.TAG_STAGE], names)
        if r.data.tags[M.TAG_STAGE] != "hrl":
            continue
        local = client.download_artifacts(
            run_id, f"{M.ARTIFACT_DIR}/{M.PER_SAMPLE_CSV}", str(tmp_path / run_id)
        )
        with open(local) as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["index", "label", "pred", "skipped", "macs"]
        assert [int(row["index"]) for row in rows] == list(range(TINY_TEST_SET))
        # The per-sample MACs are what flops_mean averages.
        mean = sum(float(row["macs"]) for row in rows) / len(rows)
        assert mean == pytest.approx(r.data.metrics[M.FLOPS_MEAN], rel=1e-6)
        top1 = 100 * sum(row["label"] == row["pred"] for row in rows) / len(rows)
        assert top1 == pytest.approx(r.data.metrics[M.TOP1])


# --- the toy plugin method through Tune, MLflow and the report ----------------------------


def test_toy_method_runs_through_tune_mlflow_and_the_report(tiny: Sweep, tmp_path: Path) -> None:
    """A method registered from the tests only (tests/toy_method.py) runs in the sweep beside
    SkipNet, is logged like it and is drawn and named by the report."""
    plan = tiny.plan
    mlflow = tiny.mlflow
    children = mlflow.children(mlflow.parent().info.run_id)
    by_id = {r.data.tags[M.TAG_TRIAL_ID]: r for r in children}
    assert sorted(by_id) == sorted(j.id for j in plan.jobs)
    toys = [r for r in children if r.data.tags[M.TAG_METHOD_NAME] == "smooth"]
    assert len(toys) == 2
    base_run = by_id[plan.find("baseline", "cifar_resnet8").id].info.run_id
    for r in toys:
        assert r.info.status == "FINISHED"
        assert r.data.tags[M.TAG_METHOD] == "smooth"
        assert r.data.tags[M.TAG_METHOD_LABEL] == "Label smoothing"
        assert r.data.tags[M.TAG_METHOD_MARKER] == "P"
        assert r.data.tags[M.TAG_STAGE] == "smooth"
        assert r.data.tags[M.TAG_INIT_RUN_ID] == base_run  # not SP: the plain baseline
        assert float(r.data.params["smoothing"]) in (0.0, 0.2)
        assert r.data.tags[M.TAG_COST_WEIGHT] == "smoothing"  # the table's cost-weight column
        assert M.TOP1 in r.data.metrics and M.FLOPS_MEAN in r.data.metrics
        assert r.data.tags[M.TAG_PARETO] in ("true", "false")
    skipnet = [r for r in children if r.data.tags[M.TAG_METHOD_NAME] == "skipnet"]
    assert {r.data.tags[M.TAG_STAGE] for r in skipnet} == {"sp", "hrl"}

    from skipnet_sweep.report import main as report_main

    out_dir = tmp_path / "report"
    code = report_main(
        ["--experiment", "tiny", "--tracking-uri", tracking_uri(tiny.space.parent)]
        + ["--out", str(out_dir)]
    )
    assert code == 0
    summary = (out_dir / "summary.csv").read_text()
    assert "smooth" in summary
    assert "Label smoothing" in summary  # the report names it by its declared label
    assert (out_dir / "pareto.png").is_file()


def test_a_plugin_with_its_own_gate_network_and_objective_runs_end_to_end(
    tiny: Sweep, capsys
) -> None:
    """The routed toy (its own gate design, network kind and an objective with parameters and
    its own optimiser) through Tune and MLflow, model registration, ``train eval`` on its
    checkpoint and the report; its kill and resume: tests/test_sweep_resume.py."""
    import types

    import mlflow as mlflow_lib
    import torch

    from skipnet_sweep.sweep.driver import log_frontier_models, registered_model_name, tracker_for
    from skipnet_sweep.train import main as train_main

    children = tiny.mlflow.children(tiny.mlflow.parent().info.run_id)
    (run,) = [r for r in children if r.data.tags[M.TAG_METHOD_NAME] == "toyroute"]
    assert run.info.status == "FINISHED"
    assert run.data.tags[M.TAG_METHOD_LABEL] == "Toy routing"
    assert float(run.data.params["rate"]) == 0.5
    assert 0 <= run.data.metrics[M.gate_skip_ratio(0)] <= 1  # its own gates decided
    assert M.ROUTING_SHARE in run.data.metrics
    # Registered as a frontier model is (rebuilt through the method's own network).
    tracker = tracker_for(tiny.plan)
    row = {"run_id": run.info.run_id, "run_name": run.info.run_name}
    log_frontier_models(tracker, tiny.plan, types.SimpleNamespace(frontier=[row]))
    version = tracker.client.get_run(run.info.run_id).data.tags[M.TAG_MODEL_VERSION]
    mlflow_lib.set_tracking_uri(tracker.tracking_uri)
    model = mlflow_lib.pyfunc.load_model(f"models:/{registered_model_name(tiny.plan)}/{version}")
    logits = model.predict(torch.randn(2, 1, 12, 12).numpy())
    assert logits.shape == (2, 4)
    # train eval on its checkpoint, through the method that trained it.
    with tiny.plan.store.local_copy(run.data.tags[M.TAG_CHECKPOINT]) as local:
        capsys.readouterr()
        assert train_main(["eval", "--checkpoint", str(local)]) == 0
    assert "eval " in capsys.readouterr().out


# --- the same command again ------------------------------------------------------------


@dataclass
class Rerun:
    code: int
    out: str
    before: dict
    after: dict
    rows_before: dict
    rows_after: dict
    cache_mtimes: tuple[dict, dict]


@pytest.fixture(scope="module")
def rerun(tiny: Sweep, ray_dir) -> Rerun:
    caches = [tiny.plan.checkpoint(job, tiny.storage) for job in tiny.plan.shared_jobs]
    mtimes = {str(p): p.stat().st_mtime_ns for p in caches}
    before, rows = tiny.mlflow.snapshot(), tune_result_rows(tiny.storage)
    code, out, err = local_sweep(tiny.argv(), ray_dir)
    assert code == 0, out[-3000:] + err[-3000:]
    return Rerun(
        code,
        out,
        before,
        tiny.mlflow.snapshot(),
        rows,
        tune_result_rows(tiny.storage),
        (mtimes, {str(p): p.stat().st_mtime_ns for p in caches}),
    )


def test_rerun_makes_no_new_runs(tiny: Sweep, rerun: Rerun) -> None:
    assert rerun.code == 0
    assert set(rerun.after) == set(rerun.before)
    assert len(tiny.mlflow.parents()) == 1
    assert all(info.status == "FINISHED" for info in rerun.after.values())


def test_rerun_reuses_the_sp_cache(tiny: Sweep, rerun: Rerun) -> None:
    before, after = rerun.cache_mtimes
    assert before == after
    # No SP metric was logged again.
    for run_id, info in rerun.before.items():
        if info.stage in ("sp", "baseline"):
            assert rerun.after[run_id].top1_points == info.top1_points


def test_rerun_restores_tune_and_reruns_no_trial(tiny: Sweep, rerun: Rerun) -> None:
    assert "resuming sweep-" in rerun.out
    # Every job is a trial of the one Tuner: the shared jobs and the 4 HRL trials.
    assert sorted(rerun.rows_before) == sorted(j.id for j in tiny.plan.jobs)
    assert rerun.rows_after == rerun.rows_before
    for run_id, info in rerun.before.items():
        if info.stage != M.SWEEP_STAGE:  # the parent finishes again; no job runs again
            assert rerun.after[run_id] == info  # untouched: same end time, same metrics


def test_rerun_replaces_the_frontier_figures(tiny: Sweep, rerun: Rerun) -> None:
    parent = tiny.mlflow.parent().info.run_id
    names = [a.path for a in tiny.mlflow.client.list_artifacts(parent, "report")]
    assert sorted(names) == sorted(set(names))
    assert {"report/pareto.png", "report/pareto_latency.png"} <= set(names)
    assert len([n for n in names if n.endswith(".png")]) == 2
    assert "frontier figures: report/pareto.png" in rerun.out


def test_dry_run_after_the_sweep_marks_shared_jobs_cached(tiny: Sweep, rerun: Rerun) -> None:
    code, out, _ = cli(["--space", str(tiny.space), "--dry-run"])
    assert code == 0
    assert out.count("[cached]") == len(tiny.plan.shared_jobs) == 2


# --- resume after the driver is killed ------------------------------------------------------
