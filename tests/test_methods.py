"""Methods are plugins: the registry, and a toy method registered from this file only (no
edit under ``skipnet_sweep/``) that runs through the plan, Ray Tune, MLflow and the report
beside SkipNet."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sweep_helpers import Mlflow, local_sweep, ray_tmpdir, tracking_uri, write_space

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import (
    Job,
    Method,
    PlanContext,
    get_method,
    list_methods,
    make_job,
    method_for_stage,
    register_method,
    stage_names,
    unregister_method,
)
from skipnet_sweep.methods.plain import baseline_job
from skipnet_sweep.stages import DataConfig, StageConfig, TrainConfig
from skipnet_sweep.stages.objectives import LossResult
from skipnet_sweep.sweep import SpaceError, load_space, make_plan

# --- the toy method: the plain ResNet fine-tuned with label smoothing ----------------------


@dataclass(frozen=True)
class SmoothSettings:
    """The toy method's section of a space (``smooth:``)."""

    smoothing: tuple[float, ...] = (0.1,)
    iterations: int = 3
    lr: float = 0.01
    batch_size: int = 32


class SmoothCE:
    """Cross-entropy with label smoothing (the toy objective)."""

    gate_mode = "threshold"

    def __init__(self, smoothing: float):
        self.smoothing = smoothing

    def __call__(self, out, target) -> LossResult:
        loss = F.cross_entropy(out.logits, target, label_smoothing=self.smoothing)
        return LossResult(loss, {M.TRAIN_LOSS: float(loss)})


class LabelSmoothing(Method):
    name = "smooth"
    label = "Label smoothing"
    marker = "P"
    stages = ("smooth",)
    weight = "smoothing"
    space_key = "smooth"
    settings = SmoothSettings

    def jobs(self, ctx: PlanContext) -> list[Job]:
        opts = self.options(ctx.space)
        jobs = []
        for arch in ctx.space.backbones:
            base = baseline_job(ctx, arch)
            jobs.append(base)
            for s in opts.smoothing:
                train = TrainConfig(
                    stage="smooth",
                    iterations=opts.iterations,
                    lr=opts.lr,
                    batch_size=opts.batch_size,
                    lr_milestones=(),
                    seed=ctx.space.seed,
                )
                stage = StageConfig(base.stage.model, ctx.data, train, options={"smoothing": s})
                jobs.append(
                    make_job(
                        self.name,
                        stage,
                        [("backbone", arch), ("smoothing", s)],
                        curve="smooth",
                        needs=base.id,
                        weight="smoothing",
                        sweep_id=ctx.sweep_id,
                    )
                )
        return jobs

    def objective(self, cfg: StageConfig, costs) -> SmoothCE:
        return SmoothCE(cfg.options["smoothing"])


@pytest.fixture
def toy():
    register_method(LabelSmoothing)
    yield get_method("smooth")
    unregister_method("smooth")


# --- the registry -----------------------------------------------------------------------


def test_builtin_methods_and_their_stages() -> None:
    assert list_methods()[:4] == ["plain", "skipnet", "act", "sact"]
    assert stage_names()[:5] == ("baseline", "sp", "hrl", "act", "sact")
    assert method_for_stage("hrl").name == "skipnet"
    assert method_for_stage("baseline").name == "plain"


def test_unknown_names_fail_loudly() -> None:
    with pytest.raises(ValueError, match="unknown method 'blockdrop'; registered: plain"):
        get_method("blockdrop")
    with pytest.raises(ValueError, match="unknown stage 'x'; allowed: baseline, sp, hrl"):
        method_for_stage("x")


def test_a_second_method_may_not_take_a_name_or_a_stage(toy) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_method(LabelSmoothing)

    class Thief(LabelSmoothing):
        name = "thief"

    with pytest.raises(ValueError, match="stage 'smooth' belongs to method 'smooth'"):
        register_method(Thief)
    assert "thief" not in list_methods()


def test_every_builtin_method_builds_its_objective_for_each_stage() -> None:
    from skipnet_sweep.flops import count_costs
    from skipnet_sweep.models import ModelConfig

    for stage, gate in [("baseline", None), ("sp", "rnn"), ("hrl", "rnn"), ("act", "act")]:
        method = method_for_stage(stage)
        cfg = StageConfig(
            ModelConfig("cifar_resnet8", gate, 4, 1),
            DataConfig("synthetic"),
            TrainConfig(stage=stage, iterations=1),
        )
        model = method.build_model(cfg)
        costs = count_costs(model, (1, 8, 8))
        objective = method.objective(cfg, costs)
        out = model(torch.randn(2, 1, 8, 8), mode=objective.gate_mode, path="masked")
        result = objective(out, torch.tensor([0, 1]))
        assert result.loss.ndim == 0 and torch.isfinite(result.loss)


# --- the toy method through the plan ------------------------------------------------------


def test_toy_method_plans_from_its_own_space_section(toy, tmp_path: Path) -> None:
    path = write_space(tmp_path, changes={"smooth": {"smoothing": [0.0, 0.2], "iterations": 2}})
    plan = make_plan(load_space(str(path)))
    assert [m.name for m in plan.methods] == ["plain", "skipnet", "smooth"]
    toys = [j for j in plan.trials if j.method == "smooth"]
    assert [j.weight_value for j in toys] == [0.0, 0.2]
    base = plan.find("baseline", "cifar_resnet8")
    assert all(j.needs == base.id for j in toys)
    assert plan.stage_of(toys[0]).init == str(plan.checkpoint(base))
    assert plan.space.methods["smooth"] == SmoothSettings((0.0, 0.2), 2)


class _NoRuns:
    """A tracker with no runs (``describe`` looks up the run a job starts from)."""

    def find(self, *args) -> None:
        return None


def test_each_run_is_tagged_with_its_method_label_and_marker(toy, tmp_path: Path) -> None:
    from skipnet_sweep.sweep.ray_jobs import TrackingCallback

    path = write_space(tmp_path, changes={"smooth": {"smoothing": [0.2], "iterations": 2}})
    plan = make_plan(load_space(str(path)))
    describe = TrackingCallback(_NoRuns(), "parent", plan).describe
    seen = {}
    for job in plan.jobs:
        _, tags = describe(job)
        seen[tags[M.TAG_METHOD_NAME]] = (tags[M.TAG_METHOD_LABEL], tags[M.TAG_METHOD_MARKER])
    assert seen == {
        "plain": ("ResNet", "s"),
        "skipnet": ("SkipNet", "o"),
        "smooth": ("Label smoothing", "P"),
    }


def test_toy_section_is_typed_like_every_field(toy, tmp_path: Path) -> None:
    path = write_space(tmp_path, changes={"smooth": {"smoothing": [0.1], "iterations": "many"}})
    with pytest.raises(SpaceError, match=r"smooth\.iterations: expected an integer"):
        load_space(str(path))
    path = write_space(tmp_path, "t2", changes={"smooth": {"smoothnes": [0.1]}})
    with pytest.raises(SpaceError, match=r"smooth\.smoothnes: unknown field"):
        load_space(str(path))


def test_without_the_plugin_its_section_is_an_unknown_field(tmp_path: Path) -> None:
    path = write_space(tmp_path, changes={"smooth": {"smoothing": [0.1]}})
    with pytest.raises(SpaceError, match=r"smooth: unknown field"):
        load_space(str(path))


# --- the toy method through Tune, MLflow and the report -----------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_toy_method_runs_through_tune_mlflow_and_the_report(toy, tmp_path: Path) -> None:
    space = write_space(
        tmp_path,
        "toy",
        {
            "alpha": [1.0],
            "smooth": {"smoothing": [0.0, 0.2], "iterations": 2},
            "resources": {"sp": {"workers": 1, "cpu": 1}, "trial": {"cpu": 1}},
        },
    )
    plan = make_plan(load_space(str(space)))
    with ray_tmpdir("skm") as ray_dir:
        code, out, err = local_sweep(["--space", str(space), "--num-cpus", "2"], ray_dir)
    assert code == 0, out[-3000:] + err[-3000:]
    mlflow = Mlflow(tracking_uri(tmp_path), "toy")
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
        assert r.data.tags[M.TAG_SP_RUN_ID] == base_run
        assert float(r.data.params["smoothing"]) in (0.0, 0.2)
        assert M.TOP1 in r.data.metrics and M.FLOPS_MEAN in r.data.metrics
        assert r.data.tags[M.TAG_PARETO] in ("true", "false")
    skipnet = [r for r in children if r.data.tags[M.TAG_METHOD_NAME] == "skipnet"]
    assert {r.data.tags[M.TAG_STAGE] for r in skipnet} == {"sp", "hrl"}

    from skipnet_sweep.report import main as report_main

    out_dir = tmp_path / "report"
    code = report_main(
        ["--experiment", "toy", "--tracking-uri", tracking_uri(tmp_path), "--out", str(out_dir)]
    )
    assert code == 0
    summary = (out_dir / "summary.csv").read_text()
    assert "smooth" in summary
    assert "Label smoothing" in summary  # the report names it by its declared label
    assert (out_dir / "pareto.png").is_file()


def test_sp_can_start_from_the_plain_baseline(tmp_path: Path) -> None:
    scratch = make_plan(load_space(str(write_space(tmp_path))))
    plan = make_plan(
        load_space(str(write_space(tmp_path, "fb", {"sp.from_baseline": True, "baseline": False})))
    )
    base, sp = plan.find("baseline", "cifar_resnet8"), plan.find("sp", "cifar_resnet8", "rnn")
    assert [j.id for j in plan.shared_jobs] == [base.id, sp.id]  # the baseline runs first
    assert sp.needs == base.id and plan.stage_of(sp).init == str(plan.checkpoint(base))
    # Starting from the baseline is part of what SP is: another cache key than from scratch.
    assert sp.key != scratch.find("sp", "cifar_resnet8", "rnn").key
    assert sp.stage.options == {"from": base.key}
