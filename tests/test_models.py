"""Registered gated ResNets: shapes, gradients, gate modes, the masked and sparse executors,
the registry and loading torchvision backbones. Tiny inputs throughout."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from skipnet_sweep.models import (
    EXEC_PATHS,
    GATE_DESIGNS,
    GATE_MODES,
    ModelConfig,
    SkipResNet,
    build_from_config,
    build_halting,
    build_model,
    decide,
    folded,
    list_models,
    load_backbone,
)
from skipnet_sweep.models.gates import RNNGate
from skipnet_sweep.models.resnet import BasicBlock, GatedResidual

pytestmark = pytest.mark.usefixtures("single_thread")

GATES = [None, *GATE_DESIGNS]
ARCHS = list_models()

# The feed-forward gates keep the full width of the features they read (paper Fig. 3), so on
# the bottleneck networks they are 3x3 convolutions over 1024 and 2048 channels: 143M to
# 872M gate parameters, seconds to initialise before any forward pass. Those networks run
# with the recurrent gate only (the paper's choice for them); every gate design, and the
# plain network, runs on every CIFAR network and on resnet18/34.
BOTTLENECK = {"resnet50", "resnet101", "resnet152"}
COMBOS = [
    pytest.param(arch, gate, id=f"{arch}-{gate}")
    for arch in ARCHS
    for gate in GATES
    if arch not in BOTTLENECK or gate == "rnn"
]
# The two executors compared below are the same code at every depth and width: every gate
# design on the networks of each family up to ResNet-38 and on ResNet-18, the deeper CIFAR
# networks (float64 over 100+ layers) and ResNet-34/50 with the recurrent gate. ResNet-101
# and -152 (seconds each) build, run and get gradients above; their costs: test_flops.py.
SHALLOW_FF = {"cifar_resnet8", "cifar_resnet14", "cifar_resnet20", "cifar_resnet38", "resnet18"}
EXECUTOR_COMBOS = [
    p
    for p in COMBOS
    if p.values[0] not in {"resnet101", "resnet152"}
    and (p.values[1] in (None, "rnn") or p.values[0] in SHALLOW_FF)
]
GATED_COMBOS = [p for p in EXECUTOR_COMBOS if p.values[1] is not None]

# Residual blocks per network: 3n for the 6n+2 CIFAR family, torchvision's stage depths.
NUM_BLOCKS = {
    "cifar_resnet8": 3,
    "cifar_resnet14": 6,
    "cifar_resnet20": 9,
    "cifar_resnet38": 18,
    "cifar_resnet74": 36,
    "cifar_resnet110": 54,
    "cifar_resnet152": 75,
    "resnet18": 8,
    "resnet34": 16,
    "resnet50": 16,
    "resnet101": 33,
    "resnet152": 50,
}


def tiny_input(arch: str, batch: int, channels: int = 3) -> torch.Tensor:
    """Random images small enough for a fast test but deep enough for every stage."""
    size = 16 if arch.startswith("cifar") else 32
    return torch.randn(batch, channels, size, size)


def all_open(model: SkipResNet, batch: int) -> torch.Tensor:
    return torch.ones(batch, model.num_gates, dtype=torch.bool)


def calibrate(model: SkipResNet, x: torch.Tensor) -> SkipResNet:
    """Set batch-norm running statistics from one batch and switch to eval mode.

    Freshly initialised running statistics (mean 0, variance 1) make eval-mode activations
    grow with depth until the logits are huge and every gate saturates; real statistics keep
    eval-mode outputs O(1), so a 1e-5 tolerance means something.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one batch gives exactly its statistics
    model.train()
    with torch.no_grad():
        model(x, force=all_open(model, x.shape[0]))
    return model.eval()


def gate_heads(model: SkipResNet) -> list[nn.Linear]:
    """The final linear layer of every gate (one, shared, for the recurrent gate)."""
    if isinstance(model.gates, RNNGate):
        return [model.gates.fc]
    return [g.fc for g in model.gates]


def centre_gates(model: SkipResNet, x: torch.Tensor) -> None:
    """Move the gates' output biases so that the model's own thresholded decisions on ``x``
    are a mix of execute and skip (at initialisation they all agree)."""
    heads = gate_heads(model)
    with torch.no_grad():
        if not isinstance(model.gates, RNNGate):
            # Centre each gate on the middle of its logits over the batch.
            logits = torch.logit(model(x, force=all_open(model, x.shape[0])).probs.double())
            for i, head in enumerate(heads):
                head.bias -= torch.quantile(logits[:, i], 0.5)
            return
        # The recurrent gate feeds its decisions back through its state, so once one gate
        # skips the later ones tend to follow: bisect the shared bias until they are mixed.
        head = heads[0]
        head.weight.mul_(20)  # spread its logits, which barely vary at initialisation
        lo, hi = -100.0, 100.0  # all skip, all execute
        for _ in range(30):
            head.bias.fill_((lo + hi) / 2)
            executed = model(x).executed
            if executed.all():
                hi = (lo + hi) / 2
            elif not executed.any():
                lo = (lo + hi) / 2
            else:
                return
        raise AssertionError("could not find a gate bias giving mixed decisions")


def gate_params(model: SkipResNet) -> list[nn.Parameter]:
    return list(model.gates.parameters())


# --- forward and backward on every registered network ----------------------------------------


@pytest.mark.parametrize(("arch", "gate"), COMBOS)
def test_forward_shapes_and_every_parameter_gets_a_gradient(make_model, arch, gate):
    channels = 1 if arch.startswith("cifar") else 3
    model = make_model(arch, gate, num_classes=7, in_channels=channels).train()
    gates = len(model.blocks) - 1 if gate else 0  # every block but the first is gated
    assert model.num_gates == gates

    out = model(tiny_input(arch, 2, channels), mode="hard")

    assert out.logits.shape == (2, 7)
    assert out.executed.shape == (2, gates) and out.executed.dtype == torch.bool
    assert out.probs.shape == (2, gates)
    assert ((out.probs >= 0) & (out.probs <= 1)).all()
    assert out.log_probs is None
    out.logits.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert [n for n, g in grads.items() if g is None] == []
    assert [n for n, g in grads.items() if not torch.isfinite(g).all()] == []
    if gate is not None:
        # Straight-through: the decisions are hard, yet the gates learn from the task loss.
        assert any(p.grad.abs().sum() > 0 for p in gate_params(model))


# --- masked and sparse executors ----------------------------------------------------------------


@pytest.mark.parametrize(("arch", "gate"), EXECUTOR_COMBOS)
def test_sparse_path_equals_masked_path_with_forced_decisions(make_model, arch, gate):
    # float64: over 100+ layers float32 summation order alone (batch of 4 against the
    # subsets the sparse path gathers) moves the logits by ~1e-5 relative.
    torch.manual_seed(1)
    x = tiny_input(arch, 4).double()
    model = calibrate(make_model(arch, gate).double(), x)
    force = torch.rand(4, model.num_gates) < 0.5
    if gate is not None:
        mixed_columns = force.any(0) & ~force.all(0)
        assert mixed_columns.any()  # some block runs on part of the batch only

    with torch.no_grad():
        masked = model(x, path="masked", force=force)
        sparse = model(x, path="sparse", force=force)

    assert torch.equal(masked.executed, force)
    assert torch.equal(sparse.executed, force)
    torch.testing.assert_close(sparse.logits, masked.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sparse.probs, masked.probs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("arch", "gate"), GATED_COMBOS)
def test_sparse_path_equals_masked_path_with_own_decisions(make_model, arch, gate):
    torch.manual_seed(2)
    x = tiny_input(arch, 4).double()
    model = calibrate(make_model(arch, gate).double(), x)
    centre_gates(model, x)

    with torch.no_grad():
        masked = model(x, path="masked")
        sparse = model(x, path="sparse")

    assert masked.executed.any() and not masked.executed.all()  # decisions are mixed
    assert torch.equal(sparse.executed, masked.executed)
    torch.testing.assert_close(sparse.logits, masked.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("arch", "gate"), [("cifar_resnet20", "ff1"), ("resnet18", "rnn")])
def test_sparse_path_equals_masked_path_in_float32(make_model, arch, gate):
    torch.manual_seed(1)
    x = tiny_input(arch, 4)
    model = calibrate(make_model(arch, gate), x)
    force = torch.rand(4, model.num_gates) < 0.5

    with torch.no_grad():
        masked = model(x, path="masked", force=force)
        sparse = model(x, path="sparse", force=force)

    torch.testing.assert_close(sparse.logits, masked.logits, rtol=1e-5, atol=1e-5)


def test_sparse_path_skips_the_convolutions_of_skipped_blocks(make_model):
    model = make_model("cifar_resnet20", "ff2").eval()
    calls = {i: [] for i in range(1, len(model.blocks))}
    for i, block in enumerate(model.blocks[1:], start=1):
        block.conv1.register_forward_hook(
            lambda _m, inp, _out, i=i: calls[i].append(inp[0].shape[0])
        )
    force = torch.tensor([[True, False, True, True, False, False, True, False]])

    with torch.no_grad():
        model(tiny_input("cifar_resnet20", 1), path="sparse", force=force)

    assert {i: len(c) for i, c in calls.items()} == {
        i + 1: int(run) for i, run in enumerate(force[0])
    }


def test_sparse_path_runs_a_block_only_on_the_samples_that_execute_it(make_model):
    model = make_model("cifar_resnet20", "rnn").eval()
    seen = {i: [] for i in range(1, len(model.blocks))}
    for i, block in enumerate(model.blocks[1:], start=1):
        block.conv1.register_forward_hook(
            lambda _m, inp, _out, i=i: seen[i].append(inp[0].shape[0])
        )
    torch.manual_seed(3)
    force = torch.rand(5, model.num_gates) < 0.5

    with torch.no_grad():
        model(tiny_input("cifar_resnet20", 5), path="sparse", force=force)

    expected = {i + 1: [int(n)] if n else [] for i, n in enumerate(force.sum(0))}
    assert seen == expected


def test_masked_path_runs_every_block_on_the_whole_batch(make_model):
    model = make_model("cifar_resnet8", "ff1").eval()
    seen = []
    for block in model.blocks[1:]:
        block.conv1.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].shape[0]))
    force = torch.zeros(3, model.num_gates, dtype=torch.bool)

    with torch.no_grad():
        model(tiny_input("cifar_resnet8", 3), path="masked", force=force)

    assert seen == [3] * model.num_gates


# --- gate modes ---------------------------------------------------------------------------------

# Logits whose sigmoid lands on many different float32 values on both sides of 0.5.
LOGITS = torch.linspace(-6.0, 6.0, 2001)


def test_hard_mode_gate_value_is_exactly_zero_or_one():
    gate = decide(LOGITS, "hard").gate

    assert ((gate == 0) | (gate == 1)).all()


def test_hard_mode_decides_by_threshold_and_passes_the_gradient_straight_through():
    logit = LOGITS.clone().requires_grad_()

    d = decide(logit, "hard")
    d.gate.sum().backward()

    p = torch.sigmoid(LOGITS)
    assert torch.equal(d.executed, p >= 0.5)
    torch.testing.assert_close(d.gate, d.executed.float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(logit.grad, p * (1 - p))  # d sigmoid / d logit
    assert d.log_prob is None


@pytest.mark.parametrize("gate", GATE_DESIGNS)
def test_hard_mode_output_is_that_of_its_own_decisions_and_reaches_every_gate(make_model, gate):
    torch.manual_seed(4)
    x = tiny_input("cifar_resnet14", 3)
    model = calibrate(make_model("cifar_resnet14", gate), x)
    centre_gates(model, x)

    out = model(x, mode="hard")
    (out.logits * torch.randn_like(out.logits)).sum().backward()

    with torch.no_grad():
        forced = model(x, force=out.executed)
    torch.testing.assert_close(out.logits, forced.logits, rtol=1e-5, atol=1e-5)
    # Every gate's output layer gets a non-zero gradient from the task loss.
    assert all(head.weight.grad.abs().sum() > 0 for head in gate_heads(model))


@pytest.mark.parametrize("gate", GATE_DESIGNS)
def test_threshold_mode_executes_where_probability_reaches_one_half(make_model, gate):
    torch.manual_seed(5)
    x = tiny_input("cifar_resnet14", 4)
    model = calibrate(make_model("cifar_resnet14", gate), x)
    centre_gates(model, x)

    out = model(x, mode="threshold")
    out.logits.sum().backward()

    assert out.executed.any() and not out.executed.all()
    assert torch.equal(out.executed, out.probs >= 0.5)
    # Thresholding has no gradient: the task loss does not reach the gates.
    assert all(p.grad is None or not p.grad.any() for p in gate_params(model))
    # Eval mode defaults to threshold.
    assert torch.equal(model(x).logits, out.logits)


@pytest.mark.parametrize("gate", GATE_DESIGNS)
def test_sample_mode_returns_log_probabilities_of_the_sampled_actions(make_model, gate):
    torch.manual_seed(6)
    model = make_model("cifar_resnet14", gate).train()

    out = model(tiny_input("cifar_resnet14", 4), mode="sample")

    assert out.executed.any() and not out.executed.all()  # both kinds of action drawn
    p = out.probs.detach()
    expected = torch.where(out.executed, p.log(), (1 - p).log())
    assert out.log_probs is not None and out.log_probs.shape == out.executed.shape
    torch.testing.assert_close(out.log_probs.detach(), expected, rtol=1e-5, atol=1e-5)
    out.log_probs.sum().backward()
    assert all(head.weight.grad.abs().sum() > 0 for head in gate_heads(model))


def test_sample_mode_draws_bernoulli_decisions():
    torch.manual_seed(7)
    logit = torch.full((20000,), -1.3862944)  # p = 0.2

    d = decide(logit, "sample")

    assert abs(d.executed.float().mean().item() - 0.2) < 0.02
    assert torch.equal(d.gate, d.executed.float())


def test_soft_mode_mixes_block_and_shortcut_by_the_probability():
    torch.manual_seed(8)
    # Two blocks, so one gate: the manual Eq. 1 below is the whole network.
    model = SkipResNet("basic", [2], [8], "cifar", num_classes=3, gate="ff2")
    x = torch.randn(4, 3, 8, 8)
    model = calibrate(model, x)
    first, second = model.blocks

    with torch.no_grad():
        out = model(x, mode="soft")
        h = model.stem(x)
        h = F.relu(first.residual(h) + h)
        p = torch.sigmoid(model.gates[0](h)).view(-1, 1, 1, 1)
        h = p * F.relu(second.residual(h) + h) + (1 - p) * h
        expected = model.fc(h.mean((2, 3)))
        hard = model(x, mode="threshold")

    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.probs, p.view(-1, 1))
    assert torch.equal(out.executed, out.probs >= 0.5)
    assert not torch.allclose(out.logits, hard.logits)


def test_sparse_path_refuses_soft_mode(make_model):
    model = make_model("cifar_resnet8", "rnn")

    with pytest.raises(ValueError, match="soft"):
        model(tiny_input("cifar_resnet8", 2), mode="soft", path="sparse")


def test_unknown_mode_names_the_allowed_modes(make_model):
    model = make_model("cifar_resnet8", "ff2")

    with pytest.raises(ValueError, match="unknown gate mode") as err:
        model(tiny_input("cifar_resnet8", 2), mode="greedy")

    assert all(m in str(err.value) for m in GATE_MODES)


def test_unknown_path_names_the_allowed_paths(make_model):
    model = make_model("cifar_resnet8", "ff2")

    with pytest.raises(ValueError, match="unknown execution path") as err:
        model(tiny_input("cifar_resnet8", 2), path="dense")

    assert all(p in str(err.value) for p in EXEC_PATHS)


@pytest.mark.parametrize("shape", [(2, 3), (3, 2), (2,), (2, 2, 1)], ids=str)
def test_force_of_the_wrong_shape_is_refused(make_model, shape):
    model = make_model("cifar_resnet8", "ff1")  # 2 gates

    with pytest.raises(ValueError, match="force must have shape"):
        model(tiny_input("cifar_resnet8", 2), force=torch.ones(shape, dtype=torch.bool))


# --- no state between calls ---------------------------------------------------------------------


@pytest.mark.parametrize("gate", GATES)
def test_forward_passes_do_not_share_state(make_model, gate):
    torch.manual_seed(9)
    x5 = tiny_input("cifar_resnet14", 5)
    model = calibrate(make_model("cifar_resnet14", gate), x5)

    with torch.no_grad():
        first = model(x5[:3])
        again = model(x5[:3])
        five = model(x5)
        after = model(x5[:3])

    assert torch.equal(first.logits, again.logits)
    assert torch.equal(first.logits, after.logits)
    assert five.logits.shape == (5, 10)
    # Samples are independent in eval mode: batching does not change a sample's result.
    torch.testing.assert_close(five.logits[:3], first.logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(five.executed[:3], first.executed)


# --- registry -----------------------------------------------------------------------------------


def test_every_paper_architecture_is_registered():
    assert set(NUM_BLOCKS) <= set(ARCHS)


def test_unknown_architecture_names_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown architecture 'resnet9'") as err:
        build_model("resnet9")

    assert all(arch in str(err.value) for arch in ARCHS)


@pytest.mark.parametrize("gate", ["ff3", "RNN", ""])
def test_unknown_gate_names_the_allowed_ones(gate):
    with pytest.raises(ValueError, match="unknown gate") as err:
        build_model("cifar_resnet8", gate=gate)

    assert all(design in str(err.value) for design in GATE_DESIGNS)


def test_gate_none_is_not_both_allowed_and_refused():
    try:
        model = build_model("cifar_resnet8", gate="none")
    except ValueError as err:
        assert "none" not in str(err).split("allowed:")[1]
    else:
        assert model.gates is None


@pytest.mark.parametrize("kw", [{"num_classes": 0}, {"in_channels": 0}], ids=str)
def test_non_positive_sizes_are_refused(kw):
    with pytest.raises(ValueError, match="positive"):
        build_model("cifar_resnet8", **kw)


@pytest.mark.parametrize("arch", ARCHS)
def test_depth_in_the_name_counts_convolutions_and_classifier(arch):
    # The depth of a ResNet counts its weighted layers on the main path: every convolution
    # except the 1x1 shortcut projections, plus the classifier (6n + 2 = 1 + 2 * 3n + 1).
    with torch.device("meta"):
        model = build_model(arch)
    depth = int(re.search(r"(\d+)$", arch).group(1))
    convs = [
        n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in n
    ]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]

    assert len(convs) == depth - 1
    assert len(linears) == 1


@pytest.mark.parametrize(("arch", "blocks"), NUM_BLOCKS.items())
def test_number_of_residual_blocks(arch, blocks):
    with torch.device("meta"):
        model = build_model(arch, gate="rnn")

    assert len(model.blocks) == blocks
    assert model.num_gates == blocks - 1


def test_model_config_rebuilds_the_same_network():
    cfg = ModelConfig("cifar_resnet14", gate="rnn", num_classes=5, in_channels=1)

    model = build_from_config(ModelConfig(**cfg.to_dict()))

    assert model.num_gates == 5 and model.fc.out_features == 5
    assert model.stem[0].in_channels == 1 and isinstance(model.gates, RNNGate)


# --- torchvision backbones ----------------------------------------------------------------------


def randomise_batch_norm(model: nn.Module) -> None:
    """Give every batch norm distinct statistics and affine parameters, so that a statistic
    loaded into the wrong layer (or not at all) changes the output."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(1.0, 3.0)
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("arch", ["resnet34", "resnet50"])
def test_torchvision_weights_give_torchvision_logits_with_all_gates_open(make_model, arch):
    torch.manual_seed(10)
    reference = getattr(torchvision.models, arch)(num_classes=10).eval()
    randomise_batch_norm(reference)
    model = make_model(arch, "rnn", num_classes=10)
    gates_before = {k: v.clone() for k, v in model.gates.state_dict().items()}
    x = torch.randn(2, 3, 64, 64)

    load_backbone(model, reference.state_dict())
    model.eval()
    with torch.no_grad():
        expected = reference(x)
        out = model(x, force=all_open(model, 2))

    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    gates_after = model.gates.state_dict()
    assert all(torch.equal(gates_before[k], gates_after[k]) for k in gates_before)


def test_a_classifier_of_another_size_is_skipped(make_model):
    reference = torchvision.models.resnet18(num_classes=1000)
    model = make_model("resnet18", "ff2", num_classes=10)
    fc_before = model.fc.weight.clone()

    load_backbone(model, reference.state_dict())

    assert torch.equal(model.fc.weight, fc_before)
    assert torch.equal(model.stem[0].weight, reference.conv1.weight)
    assert torch.equal(model.stages[3][1].bn2.running_var, reference.layer4[1].bn2.running_var)


def test_a_missing_backbone_key_is_named(make_model):
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    del state["layer3.1.conv2.weight"]

    with pytest.raises(ValueError, match=re.escape("stages.2.1.conv2.weight")):
        load_backbone(make_model("resnet18", "rnn"), state)


def test_a_backbone_weight_of_the_wrong_shape_is_named(make_model):
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)

    with pytest.raises(ValueError, match=re.escape("wrong shape ['stages.0.0.conv1.weight']")):
        load_backbone(make_model("resnet18", "rnn"), state)


# --- the masked path's mixing -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hard", "soft", "sampled"])
def test_gated_residual_has_the_values_and_gradients_of_relu_add_and_lerp(kind):
    torch.manual_seed(5)
    res = torch.randn(6, 3, 4, 4, dtype=torch.double, requires_grad=True)
    sc = torch.randn(6, 3, 4, 4, dtype=torch.double, requires_grad=True)
    p = torch.rand(6, dtype=torch.double, requires_grad=True)
    gate = {
        "hard": lambda: (p >= 0.5).double() - p.detach() + p,  # straight-through (SP)
        "soft": lambda: p,
        "sampled": lambda: (p >= 0.5).double().detach(),  # a sampled action (HRL): no grad
    }[kind]()
    grad = torch.randn(6, 3, 4, 4, dtype=torch.double)
    inputs = [res, sc, p] if gate.requires_grad else [res, sc]

    out = GatedResidual.apply(res, sc, gate)
    ref = torch.lerp(sc, F.relu(res + sc), gate.view(-1, 1, 1, 1))

    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(
        torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert res.grad is None and (kind == "sampled") == (not gate.requires_grad)


def _with_trained_statistics(net: nn.Module) -> nn.Module:
    """BatchNorms whose statistics and affine terms are far from the identity (a fresh
    network's fold is nearly a no-op and would hide a wrong fold)."""
    gen = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return net


@pytest.mark.parametrize(
    ("arch", "gate"),
    [
        *[("cifar_resnet8", g) for g in (None, "ff1", "ff2", "rnn", "act", "sact")],
        ("resnet50", "rnn"),  # bottleneck blocks and the ImageNet stem
    ],
)
def test_folded_network_computes_the_same_without_batchnorm(arch, gate):
    torch.manual_seed(0)
    kw = {"in_channels": 1, "num_classes": 4}
    halting = gate in ("act", "sact")
    net = build_halting(arch, gate, **kw) if halting else build_model(arch, gate=gate, **kw)
    _with_trained_statistics(net)
    net.train()
    deployed = folded(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    assert not deployed.training and net.training  # a copy: the network is left as it was
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 0
    x = torch.randn(8, 1, 32, 32)
    net.eval()
    with torch.no_grad():
        want = net(x, mode="threshold", path="sparse")
        got = deployed(x, mode="threshold", path="sparse")
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.executed, want.executed)


def test_fold_leaves_a_batchnorm_it_was_not_told_about():
    """Outside ``nn.Sequential`` and ``BN_FOLDS`` a BatchNorm may normalise anything (here
    the input, not the convolution registered before it): it stays."""

    class Plugin(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.conv(self.bn(x))

    net = _with_trained_statistics(Plugin())
    deployed = folded(net)
    assert isinstance(deployed.bn, nn.BatchNorm2d)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(deployed(x), net.eval()(x))

    class Reordered(BasicBlock):  # a plugin's block: BatchNorm before each convolution
        def residual(self, x):
            return self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))

    class Preact(nn.Sequential):  # a Sequential that applies its modules in another order
        def forward(self, x):
            return self[0](self[1](x))

    block = _with_trained_statistics(Reordered(4, 4))
    pre = _with_trained_statistics(Preact(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(folded(block).residual(x), block.eval().residual(x))
    torch.testing.assert_close(folded(pre)(x), pre.eval()(x))
