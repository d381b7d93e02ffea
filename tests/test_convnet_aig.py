"""ConvNet-AIG as a registered method: its gate (official init, one on-off logit), its
space section (typed, validated, one job per target, from scratch or from the plain
ResNet), its objective (gradients through the straight-through Gumbel values; the
target-rate loss moves the execution rate), exact MACs against FlopCounterMode, the
``train aig``/``train eval`` commands and resuming through ``Method.load_network``."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch
from sweep_helpers import write_space
from torch.utils.flop_counter import FlopCounterMode

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import get_method, list_methods, method_for_phase
from skipnet_sweep.methods.convnet_aig import (
    CURVE,
    FINETUNE_LR,
    MILESTONES,
    AIGSettings,
    TargetRateObjective,
)
from skipnet_sweep.models import ModelConfig, list_gates
from skipnet_sweep.models.aig import OPEN_BIAS, OUT_STD, AIGGate
from skipnet_sweep.reporting.baselines import default_baselines_dir, load_baselines, matching
from skipnet_sweep.reporting.style import method_style
from skipnet_sweep.stages import DataConfig, StageConfig, TrainConfig, load_checkpoint
from skipnet_sweep.sweep import SpaceError, load_space, make_plan
from skipnet_sweep.train import main

pytestmark = pytest.mark.usefixtures("single_thread")

ARCH = "cifar_resnet8"
SHAPE = (1, 8, 8)


@pytest.fixture
def method():
    return get_method("convnet_aig")


def network(method, arch: str = ARCH, seed: int = 0):
    torch.manual_seed(seed)
    return method.build_network(ModelConfig(arch, "aig", 4, SHAPE[0]))


def images(batch: int = 16, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(batch, *SHAPE)


# --- registry and gate -------------------------------------------------------------------


def test_registered_with_its_phase_gate_and_curve(method) -> None:
    assert "convnet_aig" in list_methods() and "aig" in list_gates()
    assert method_for_phase("aig") is method
    assert method.phase_gate("aig") == "aig"
    # The figures' style table and the published CSV both name the curve ``convnet-aig``.
    assert method_style(CURVE).label == method.label == "ConvNet-AIG"
    assert method_style(CURVE).marker == method.marker


def test_fresh_gates_have_the_official_init_and_start_mostly_open(method) -> None:
    model = network(method, "cifar_resnet20")
    heads = [g.fc for g in model.gates]
    assert all(isinstance(g, AIGGate) for g in model.gates)
    # The executor's He re-draw (std 1.41) is undone: N(0, 0.001 * sqrt 2), bias 2 - 0.1.
    weights = torch.cat([h.weight.flatten() for h in heads])
    assert weights.std().item() == pytest.approx(OUT_STD, rel=0.3)
    assert all(torch.all(h.bias == OPEN_BIAS) for h in heads)
    model.train()
    out = model(images(64), mode="gumbel")
    # p(on) = sigmoid(1.9) = 0.87 for every gate and sample (the logit weights are tiny).
    assert out.probs.shape == (64, model.num_gates)
    assert torch.allclose(
        out.probs, torch.full_like(out.probs, 1 / (1 + math.exp(-1.9))), atol=0.01
    )
    # Gumbel-sampled: about 87% executed, not all.
    assert 0.75 < out.executed.float().mean().item() < 0.97


def test_sparse_path_equals_masked_path_with_thresholded_gates(method) -> None:
    model = network(method)
    x = images(32)
    with torch.no_grad():
        for g in model.gates:  # spread the logits so both decisions occur
            torch.nn.init.normal_(g.fc.weight, 0.0, 3.0)
            g.fc.bias.zero_()
        # Batch-norm statistics of this batch, so eval-mode gates see normalised features.
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None
        model.train()(x, mode="threshold")
        model.eval()
        masked = model(x, mode="threshold", path="masked")
        sparse = model(x, mode="threshold", path="sparse")
    assert 0 < masked.executed.float().mean() < 1
    assert torch.equal(masked.executed, sparse.executed)
    assert torch.allclose(masked.logits, sparse.logits, atol=1e-5)


# --- FLOPs -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["cifar_resnet8", "cifar_resnet20"])
def test_macs_with_all_gates_open_are_what_flop_counter_counts(method, arch) -> None:
    model = network(method, arch).eval()
    shape = (1, 28, 28)
    table = method.count_costs(model, shape)
    force = torch.ones(1, model.num_gates, dtype=torch.bool)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *shape), path="masked", force=force)
    assert counter.get_total_flops() == 2 * table.full_total  # 2 FLOPs per multiply-add
    # Each gate: fc1 C x 16 and the one-logit fc 16 x 1, nothing else counted.
    widths = [g.fc1.in_features for g in model.gates]
    assert table.gate_total == sum(16 * w + 16 for w in widths)
    assert sum(table.gate_conv) == 0


# --- objective ---------------------------------------------------------------------------


def test_gradients_reach_every_gate_through_the_straight_through_values(method) -> None:
    model = network(method).train()
    objective = TargetRateObjective(target=0.2, lossfact=2.0)
    assert objective.gate_mode == "gumbel"
    out = objective.forward(model, images())
    assert out.gate_values is not None and out.gate_values.requires_grad
    # Forward values are hard 0/1 decisions.
    assert set(out.gate_values.detach().unique().tolist()) <= {0.0, 1.0}
    result = objective(out, torch.randint(0, 4, (16,)))
    result.loss.backward()
    for name, p in model.gates.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert set(result.logs) == {M.TRAIN_LOSS, M.LOSS, "rate_loss", "train_gate_rate"}
    rates = out.gate_values.detach().mean(0)
    assert result.logs["rate_loss"].item() == pytest.approx(
        2.0 * ((0.2 - rates) ** 2).mean().item()
    )


def _trained_rate(method, target: float, steps: int = 40) -> float:
    model = network(method, seed=3).train()
    objective = TargetRateObjective(target=target, lossfact=5.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(4)
    x, y = torch.randn(32, *SHAPE), torch.randint(0, 4, (32,))
    for _ in range(steps):
        opt.zero_grad()
        objective(objective.forward(model, x), y).loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return model(x, mode="threshold", path="sparse").executed.float().mean().item()


def test_target_rate_loss_moves_the_execution_rate_toward_the_target(method) -> None:
    low, high = _trained_rate(method, 0.0), _trained_rate(method, 1.0)
    assert low < 0.5 < high
    assert high - low > 0.5


# --- the space section and the plan --------------------------------------------------------


def _plan(tmp_path: Path, section: dict, name: str = "tiny"):
    return make_plan(load_space(str(write_space(tmp_path, name, {"convnet_aig": section}))))


def test_section_plans_one_job_per_target_from_scratch(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"target": [0.4, 0.8], "iterations": 3})
    assert plan.space.methods["convnet_aig"] == AIGSettings(target=(0.4, 0.8), iterations=3)
    jobs = [j for j in plan.trials if j.method == "convnet_aig"]
    assert [j.cost_weight_value for j in jobs] == [0.4, 0.8]
    assert [j.coords for j in jobs] == [
        (("backbone", ARCH), ("target", 0.4)),
        (("backbone", ARCH), ("target", 0.8)),
    ]
    for job in jobs:
        assert job.curve == CURVE and job.needs is None
        assert job.config.model.gate == "aig" and job.config.model.in_channels == 1
        t = job.config.train
        # The official CIFAR recipe (train.py L35-46, L375-386).
        assert (t.phase, t.lr, t.weight_decay, t.batch_size) == ("aig", 0.1, 5e-4, 256)
        assert t.lr_milestones == MILESTONES
        assert job.config.options == {"target": job.cost_weight_value, "lossfact": 2.0}
    assert get_method("convnet_aig").params(jobs[0]) == {
        "target": 0.4,
        "lossfact": 2.0,
        "init": "scratch",
    }


def test_init_baseline_starts_each_job_from_the_plain_resnet(tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        {"target": [0.5, 0.7], "init": "baseline", "iterations": 3, "batch_size": 32},
    )
    base = plan.find("baseline", ARCH)
    jobs = [j for j in plan.trials if j.method == "convnet_aig"]
    assert len(jobs) == 2 and all(j.needs == base.id for j in jobs)
    assert plan.config_of(jobs[0]).init == str(plan.checkpoint(base))
    t = jobs[0].config.train
    assert (t.lr, t.lr_milestones, t.batch_size) == (FINETUNE_LR, (), 32)
    assert get_method("convnet_aig").params(jobs[0])["init"] == "baseline"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"target": [0.5, 1.5], "iterations": 3}, r"convnet_aig\.target\[1\]: 1\.5 is not a rate"),
        ({"target": [0.5, 0.5], "iterations": 3}, r"convnet_aig\.target: a rate is listed twice"),
        ({"lossfact": -1, "iterations": 3}, r"convnet_aig\.lossfact: -1\.0 must be"),
        ({"init": "imagenet", "iterations": 3}, r"convnet_aig\.init: 'imagenet' is not a start"),
        ({"target": [0.5]}, r"convnet_aig\.iterations"),  # no length
        ({"iterations": 3, "lr": -1.0}, r"convnet_aig\.lr"),
    ],
)
def test_bad_values_name_their_field(tmp_path: Path, section, message) -> None:
    with pytest.raises(SpaceError, match=message):
        _plan(tmp_path, section)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"target": ["low"]}, r"convnet_aig\.target\[0\]: expected a number"),
        ({"iterations": "many"}, r"convnet_aig\.iterations: expected an integer"),
        ({"targets": [0.5]}, r"convnet_aig\.targets: unknown field"),
    ],
)
def test_section_is_typed_like_every_field(tmp_path: Path, section, message) -> None:
    with pytest.raises(SpaceError, match=message):
        load_space(str(write_space(tmp_path, changes={"convnet_aig": section})))


def test_published_point_is_drawn_for_the_curve() -> None:
    rows = matching(load_baselines(default_baselines_dir()), "cifar10", ["cifar_resnet110"])
    aig = rows[rows["method"] == CURVE]
    assert len(aig) == 1 and aig.iloc[0]["top1"] == pytest.approx(94.24)


# --- the train CLI, evaluation and resume --------------------------------------------------

FAST = ["--dataset", "synthetic", "--train-subset", "64", "--test-subset", "32"]
FAST += ["--batch-size", "16", "--iterations", "2", "--no-progress"]


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_help_lists_the_phase_options() -> None:
    with pytest.raises(SystemExit) as excinfo, contextlib.redirect_stdout(io.StringIO()) as out:
        main(["aig", "--help"])
    assert excinfo.value.code == 0
    text = out.getvalue()
    assert "--target" in text and "--lossfact" in text and "--gate " not in text
    assert "(default: 0.0005)" in text and "(default: 256)" in text  # the official recipe


def test_train_eval_and_resume(method, tmp_path: Path) -> None:
    path = tmp_path / "aig.pt"
    code, out, err = cli(
        "aig", *FAST, "--arch", ARCH, "--target", "0.3", "--out", str(path), "--json"
    )
    assert code == 0, err
    trained = json.loads(out)
    payload = load_checkpoint(path)
    assert payload["model_config"]["gate"] == "aig"
    cfg = StageConfig.from_dict(payload["stage_config"])
    assert cfg.train.phase == "aig" and cfg.options == {"target": 0.3, "lossfact": 2.0}

    code, out, err = cli("eval", "--checkpoint", str(path), "--test-subset", "32", "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics[M.TOP1] == trained[M.TOP1]  # thresholded gates: deterministic
    assert {M.ROUTING_SHARE, M.ROUTED_GATES, M.DISTINCT_ROUTES, M.GATE_FLOPS} <= metrics.keys()
    assert metrics[M.GATE_FLOPS] == 16 * 16 + 16 + 32 * 16 + 16  # the two gates of ResNet-8

    # Resume: the method rebuilds the network and loads every weight, gates included.
    model, _ = method.load_network(path)
    assert isinstance(model.gates[0], AIGGate)
    state = payload["state_dict"]
    assert model.state_dict().keys() == state.keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_every_phase_of_the_method_builds_its_objective(method) -> None:
    cfg = StageConfig(
        ModelConfig(ARCH, "aig", 4, 1),
        DataConfig("synthetic"),
        TrainConfig(phase="aig", iterations=1),
        options={"target": 0.5, "lossfact": 1.0},
    )
    model = method.build_model(cfg)
    objective = method.objective(cfg, method.count_costs(model, SHAPE))
    assert (objective.target, objective.lossfact) == (0.5, 1.0)
    out = objective.forward(model.train(), images(4))
    assert torch.isfinite(objective(out, torch.tensor([0, 1, 2, 3])).loss)
