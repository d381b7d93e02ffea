"""Methods are plugins: the registry, and a toy method defined in the tests only (no edit
under ``skipnet_sweep/``, ``tests/toy_method.py``) planned from its own space section. It runs
through Ray Tune, MLflow and the report in ``tests/test_sweep.py``'s tiny sweep."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from sweep_helpers import write_space
from toy_method import LabelSmoothing, RoutedObjective, SmoothSettings, ToyRouted

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import (
    get_method,
    list_methods,
    method_for_phase,
    phase_names,
    register_method,
    unregister_method,
)
from skipnet_sweep.stages import DataConfig, StageConfig, TrainConfig
from skipnet_sweep.sweep import SpaceError, load_space, make_plan


@pytest.fixture
def toy():
    register_method(LabelSmoothing)
    yield get_method("smooth")
    unregister_method("smooth")


@pytest.fixture
def routed():
    """The toy that brings its own gate design, network kind and parameter-owning objective."""
    register_method(ToyRouted)
    yield get_method("toyroute")
    unregister_method("toyroute")


# --- the registry -----------------------------------------------------------------------


def test_builtin_methods_and_their_phases() -> None:
    assert list_methods()[:4] == ["plain", "skipnet", "act", "sact"]
    assert phase_names()[:5] == ("baseline", "sp", "hrl", "act", "sact")
    assert method_for_phase("hrl").name == "skipnet"
    assert method_for_phase("baseline").name == "plain"


def test_unknown_names_fail_loudly() -> None:
    with pytest.raises(ValueError, match="unknown method 'nosuch'; registered: plain"):
        get_method("nosuch")
    with pytest.raises(ValueError, match="unknown phase 'x'; allowed: baseline, sp, hrl"):
        method_for_phase("x")


def test_a_second_method_may_not_take_a_name_or_a_phase(toy) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_method(LabelSmoothing)

    class Thief(LabelSmoothing):
        name = "thief"

    with pytest.raises(ValueError, match="phase 'smooth' belongs to method 'smooth'"):
        register_method(Thief)
    assert "thief" not in list_methods()


def test_every_builtin_method_builds_its_objective_for_each_phase() -> None:
    from skipnet_sweep.flops import count_costs
    from skipnet_sweep.models import ModelConfig

    for phase, gate in [("baseline", None), ("sp", "rnn"), ("hrl", "rnn"), ("act", "act")]:
        method = method_for_phase(phase)
        cfg = StageConfig(
            ModelConfig("cifar_resnet8", gate, 4, 1),
            DataConfig("synthetic"),
            TrainConfig(phase=phase, iterations=1),
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
    assert [j.cost_weight_value for j in toys] == [0.0, 0.2]
    base = plan.find("baseline", "cifar_resnet8")
    assert all(j.needs == base.id for j in toys)
    assert plan.config_of(toys[0]).init == str(plan.checkpoint(base))
    assert plan.space.methods["smooth"] == SmoothSettings((0.0, 0.2), 2)


class _NoRuns:
    """A tracker with no runs (``describe`` looks up the run a job starts from)."""

    def find(self, *args) -> None:
        return None


def test_each_run_is_tagged_with_its_method_label_and_marker(toy, tmp_path: Path) -> None:
    from skipnet_sweep.sweep.tracking_callback import TrackingCallback

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


def test_sp_can_start_from_the_plain_baseline(tmp_path: Path) -> None:
    scratch = make_plan(load_space(str(write_space(tmp_path))))
    plan = make_plan(
        load_space(str(write_space(tmp_path, "fb", {"sp.from_baseline": True, "baseline": False})))
    )
    base, sp = plan.find("baseline", "cifar_resnet8"), plan.find("sp", "cifar_resnet8", "rnn")
    assert [j.id for j in plan.shared_jobs] == [base.id, sp.id]  # the baseline runs first
    assert sp.needs == base.id and plan.config_of(sp).init == str(plan.checkpoint(base))
    # Starting from the baseline is part of what SP is: another cache key than from scratch.
    assert sp.key != scratch.find("sp", "cifar_resnet8", "rnn").key
    assert sp.config.options == {"from": base.key}


# --- a plugin with its own gate, network and parameter-owning objective --------------------


def test_a_plugin_registers_its_gate_and_network_kind(routed) -> None:
    from skipnet_sweep.models import ModelConfig, list_gates, list_networks

    assert "toygate" in list_gates() and "toynet" in list_networks()
    net = routed.build_network(ModelConfig("cifar_resnet8", "toynet", 4, 1))
    out = net(torch.randn(3, 1, 8, 8), mode="hard")
    assert out.gate_values.shape == (3, 2) and out.gate_values.requires_grad
    # The straight-through values are the decisions in the forward pass.
    assert torch.equal(out.gate_values.detach().bool(), out.executed)


def test_a_plugin_plans_trains_resumes_and_evaluates_through_its_own_parts(
    routed, tmp_path: Path, capsys
) -> None:
    from skipnet_sweep.methods import load_trained
    from skipnet_sweep.runner import run_stage
    from skipnet_sweep.stages import load_checkpoint
    from skipnet_sweep.train import main as train_main

    path = write_space(tmp_path, changes={"toyroute": {"rate": [0.1, 0.9], "iterations": 2}})
    plan = make_plan(load_space(str(path)))
    toys = [j for j in plan.trials if j.method == "toyroute"]
    assert [j.cost_weight_value for j in toys] == [0.1, 0.9]
    assert all(j.config.model.gate == "toynet" for j in toys)
    assert all(j.needs == plan.find("baseline", "cifar_resnet8").id for j in toys)

    # The train CLI offers the method's own option and builds through the method.
    ckpt = tmp_path / "toy.pt"
    argv = ["toyroute", "--arch", "cifar_resnet8", "--dataset", "synthetic", "--iterations", "4"]
    argv += ["--batch-size", "16", "--rate", "0.3", "--out", str(ckpt), "--no-progress"]
    assert train_main(argv) == 0
    payload = load_checkpoint(ckpt)
    assert payload["stage_config"]["options"] == {"rate": 0.3}
    net, _ = load_trained(ckpt)
    assert type(net.gates[0]).__name__ == "ToyGate"
    capsys.readouterr()
    assert train_main(["eval", "--checkpoint", str(ckpt), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated[M.TOP1] == pytest.approx(payload["metrics"][M.TEST_TOP1])

    # The objective's own parameter is trained by its own optimiser, checkpointed and resumed;
    # it saw every step.
    cfg = StageConfig.from_dict(payload["stage_config"])
    saved = {}

    def keep(step, metrics, save):
        if step == 2:
            saved["path"] = save(tmp_path / "at2.pt")

    seen = []
    original = RoutedObjective.at_step
    RoutedObjective.at_step = lambda self, s, t, e: (seen.append(s), original(self, s, t, e))
    try:
        cfg = replace(cfg, train=replace(cfg.train, eval_every=2))
        full = run_stage(cfg, progress=False, on_report=keep, method=routed)
        state = load_checkpoint(saved["path"])
        assert float(state["objective"]["log_t"]) != 0.0
        assert state["optimizer"]["param_groups"][1]["lr"] == 0.1  # the objective's Adam
        resumed = run_stage(cfg, progress=False, resume=saved["path"], method=routed)
    finally:
        RoutedObjective.at_step = original
    assert seen == [0, 1, 2, 3, 2, 3]
    assert resumed.metrics[M.TOP1] == full.metrics[M.TOP1]
    assert resumed.metrics[M.TRAIN_LOSS] == pytest.approx(full.metrics[M.TRAIN_LOSS])


def test_plugin_flag_loads_a_file_and_refuses_a_missing_one(tmp_path: Path, capsys) -> None:
    from skipnet_sweep.methods.plugins import PluginError, load_plugin
    from skipnet_sweep.run import main as run_main

    with pytest.raises(PluginError, match=r"--plugin nowhere\.py: no such file"):
        load_plugin("nowhere.py")
    assert run_main(["--plugin", "no_such_module_x", "--dry-run"]) == 2
    assert "--plugin no_such_module_x: No module named" in capsys.readouterr().err
    plugin = Path(__file__).parent / "toy_plugin.py"
    # A test earlier in this process may have loaded the file (a module is imported once)
    # and unregistered its methods since: this test loads it afresh.
    sys.modules.pop(plugin.stem, None)
    path = write_space(tmp_path, changes={"toyroute": {"rate": [0.5]}})
    try:
        assert run_main(["--plugin", str(plugin), "--space", str(path), "--dry-run"]) == 0
        assert "toyroute" in capsys.readouterr().out
    finally:
        unregister_method("toyroute")
        unregister_method("smooth")
