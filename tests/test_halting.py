"""ACT and SACT halting networks: the halting arithmetic on hand-made scores, the networks'
outputs under forced halting patterns, exact per-sample MACs against FlopCounterMode, the
sparse path against the masked one, gradients, loading plain weights, the ponder loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from skipnet_sweep import metrics as M
from skipnet_sweep.models import SkipOutput, build_halting, build_model
from skipnet_sweep.models.halting import (
    HALTING_KINDS,
    HaltingResNet,
    count_halting_costs,
    halting_weights,
)
from skipnet_sweep.models.resnet import shortcut
from skipnet_sweep.stages.ponder import PONDER, PonderObjective

EPS = 0.01
ARCH = "cifar_resnet20"  # three stages of three units: two halting branches per stage
SHAPE = (3, 16, 16)


def make(kind: str, arch: str = ARCH) -> HaltingResNet:
    torch.manual_seed(0)
    return build_halting(arch, kind, num_classes=10, eps=EPS)


def images(batch: int, shape: tuple[int, int, int] = SHAPE) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, *shape)


def calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Batch-norm running statistics from one batch, then eval mode: eval-mode activations
    stay O(1), so a 1e-5 tolerance means something."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def branches(model: HaltingResNet) -> list[nn.Module]:
    return [b for stage in model.halting for b in stage]


def set_halting_bias(model: HaltingResNet, value: float) -> None:
    """``value`` far below 0: no unit halts early; far above: every stage halts after its
    first unit."""
    with torch.no_grad():
        for b in branches(model):
            b.linear.bias.fill_(value)


def split_halting(model: HaltingResNet, x: torch.Tensor, per: str = "", margin: float = 10.0):
    """Rescale every halting branch so that on ``x`` its logit is at least ``margin`` away
    from 0 and half of the samples (``per="sample"``; ACT's default) or positions
    (``"position"``; SACT's default) halt there: a mixed pattern with no decision near the
    threshold. Branches are set in execution order, each on the features it sees once the
    earlier ones are set."""
    per = per or ("sample" if model.kind == "act" else "position")
    for b in branches(model):
        layer = b.linear if per == "sample" else b.conv
        seen = []
        handle = layer.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out))
        with torch.no_grad():
            # SACT: one of its two terms alone decides.
            if b.conv is not None:
                (b.conv if per == "sample" else b.linear).weight.zero_()
            b.linear.bias.zero_()
            model(x, path="masked")
            handle.remove()
            z = seen[0].flatten().double().sort().values
            lo, hi = z[(len(z) - 1) // 2], z[len(z) // 2 + (len(z) % 2 == 1)]
            assert hi > lo, "ties at the median: pick another input"
            scale = margin / float((hi - lo) / 2)
            layer.weight.mul_(scale)
            b.linear.bias.fill_(-scale * float((hi + lo) / 2))


def flop_count(model: nn.Module, x: torch.Tensor, path: str) -> tuple[int, int, SkipOutput]:
    """(all FLOPs, convolution FLOPs) FlopCounterMode measures for one forward pass, and
    that pass's output."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(x, path=path)
    conv = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(k))
    return counter.get_total_flops(), conv, out


def expand(m: torch.Tensor) -> torch.Tensor:
    """Per-sample (B,) or per-position (B, H, W) values against (B, C, H, W) features."""
    return m.view(-1, 1, 1, 1) if m.dim() == 1 else m.unsqueeze(1)


def first_units(model: HaltingResNet) -> list[int]:
    """Column of each stage's first unit in ``executed``."""
    cols, start = [], 0
    for stage in model.stages:
        cols.append(start)
        start += len(stage)
    return cols


# --------------------------------------------------------------------------- arithmetic


def test_halting_weights_act_per_sample():
    # (units, samples). The last row is ignored: the last unit's score is 1.
    h = torch.tensor(
        [
            [0.3, 0.995, 0.1, 0.5],
            [0.5, 0.7, 0.1, 0.495],
            [0.4, 0.2, 0.1, 0.3],
            [0.0, 0.0, 0.0, 0.0],
        ],
        dtype=torch.float64,
    )
    res = halting_weights(h, EPS)
    # s0: cumulative 0.3, 0.8, 1.2 -> N = 3, R = 1 - 0.8. s1: 0.995 >= 0.99 -> N = 1, R = 1.
    # s2: never reaches 0.99 before the last unit -> N = 4, R = 0.7. s3: 0.995 at unit 2.
    assert res.n.tolist() == [3, 1, 4, 2]
    torch.testing.assert_close(res.remainder, torch.tensor([0.2, 1.0, 0.7, 0.5], dtype=h.dtype))
    torch.testing.assert_close(res.ponder, torch.tensor([3.2, 2.0, 4.7, 2.5], dtype=h.dtype))
    expected = torch.tensor(
        [
            [0.3, 1.0, 0.1, 0.5],
            [0.5, 0.0, 0.1, 0.5],
            [0.2, 0.0, 0.1, 0.0],
            [0.0, 0.0, 0.7, 0.0],
        ],
        dtype=h.dtype,
    )
    torch.testing.assert_close(res.weights, expected)
    torch.testing.assert_close(res.weights.sum(0), torch.ones(4, dtype=h.dtype))


def test_ponder_gradient_is_minus_one_before_the_halting_unit():
    # d(N + R)/dh_l = -1 for l < N (through R) and 0 from N on (N is piecewise constant).
    h = torch.tensor([[0.3], [0.5], [0.4], [0.9]], dtype=torch.float64, requires_grad=True)
    halting_weights(h, EPS).ponder.sum().backward()
    assert h.grad.flatten().tolist() == [-1.0, -1.0, 0.0, 0.0]


def test_halting_weights_sact_per_position():
    # (units, batch, H, W): each position is its own ACT loop.
    h = torch.tensor(
        [
            [[[0.999, 0.2], [0.6, 0.05]]],
            [[[0.5, 0.3], [0.395, 0.05]]],
            [[[0.0, 0.0], [0.0, 0.0]]],
        ],
        dtype=torch.float64,
    )
    res = halting_weights(h, EPS)
    assert res.n.tolist() == [[[1, 3], [2, 3]]]
    torch.testing.assert_close(
        res.remainder, torch.tensor([[[1.0, 0.5], [0.4, 0.9]]], dtype=h.dtype)
    )
    ponder_map = torch.tensor([[[2.0, 3.5], [2.4, 3.9]]], dtype=h.dtype)
    torch.testing.assert_close(res.ponder, ponder_map)
    # The network's per-stage SACT ponder cost is the map's mean over positions.
    assert res.ponder.flatten(1).mean(1).item() == pytest.approx((2.0 + 3.5 + 2.4 + 3.9) / 4)
    torch.testing.assert_close(res.weights.sum(0), torch.ones_like(res.ponder))
    assert res.weights[:, 0, 0, 0].tolist() == [1.0, 0.0, 0.0]


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize("kind", HALTING_KINDS)
def test_nothing_halting_early_is_the_plain_resnet(kind):
    x = images(4)
    net = make(kind)
    set_halting_bias(net, -1e4)  # h = 0 exactly: every loop runs to its last unit, R = 1
    plain = build_model(ARCH, num_classes=10)
    plain.load_state_dict(net.state_dict(), strict=False)
    calibrate(net, x)
    calibrate(plain, x)
    with torch.no_grad():
        out = net(x)
        ref = plain(x)
    torch.testing.assert_close(out.logits, ref.logits)
    assert out.executed.shape == (4, net.num_units) and out.executed.dtype == torch.float32
    assert (out.executed == 1).all()
    assert out.log_probs is None
    # N + R = (units in the stage) + 1 per stage.
    expected = sum(len(s) + 1 for s in net.stages)
    torch.testing.assert_close(out.ponder, torch.full((4,), float(expected)))


@pytest.mark.parametrize("kind", HALTING_KINDS)
def test_halting_after_the_first_unit_uses_only_first_units(kind):
    x = images(3)
    net = calibrate(make(kind), x)
    set_halting_bias(net, 1e4)  # h = 1: every stage stops after its first unit, N = R = 1
    with torch.no_grad():
        out = net(x, path="sparse")
        feat = net.stem(x)
        for stage in net.stages:
            unit = stage[0]
            feat = F.relu(unit.residual(feat) + shortcut(unit, feat))
        ref = net.fc(feat.mean((2, 3)))
    torch.testing.assert_close(out.logits, ref)
    expected = torch.zeros(net.num_units)
    expected[first_units(net)] = 1
    assert torch.equal(out.executed, expected.expand(3, -1))
    torch.testing.assert_close(out.ponder, torch.full((3,), 2.0 * len(net.stages)))


@pytest.mark.parametrize("kind", HALTING_KINDS)
def test_stage_output_is_the_halting_weighted_sum(kind):
    """An independent run of stage 0: halted samples/positions keep their features and the
    stage output is ``sum_l w_l x_l`` with the weights of ``halting_weights``."""
    x = images(4)
    net = calibrate(make(kind), x)
    split_halting(net, x)
    seen = []
    net.stages[1][0].conv1.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0]))
    with torch.no_grad():
        out = net(x)
        units, heads = net.stages[0], net.halting[0]
        stem = net.stem(x)
        feats = [F.relu(units[0].residual(stem) + shortcut(units[0], stem))]
        scores = [heads[0](feats[0])]
        for j in range(1, len(units)):
            active = torch.stack(scores).sum(0) < 1 - EPS
            mask = expand(active)
            new = F.relu(units[j].residual(feats[-1]) + feats[-1])
            feats.append(torch.where(mask, new, feats[-1]))
            scores.append(heads[j](feats[-1]) if j < len(heads) else torch.ones_like(scores[0]))
        res = halting_weights(torch.stack(scores), EPS)
        stage_out = sum(expand(w) * f for w, f in zip(res.weights, feats, strict=True))
    torch.testing.assert_close(seen[0], stage_out)
    n_map = res.n.float()
    for j in range(len(units)):
        ran = (n_map > j).float()
        assert torch.allclose(out.executed[:, j], ran if kind == "act" else ran.flatten(1).mean(1))
    if kind == "sact":
        # Halting is really per position: some sample has halted at some positions only.
        frac = out.executed[:, 1]
        assert ((frac > 0) & (frac < 1)).any()


@pytest.mark.parametrize(
    ("kind", "per"), [("act", "sample"), ("sact", "sample"), ("sact", "position")]
)
def test_sparse_path_equals_masked_path(kind, per):
    x = images(8)
    net = calibrate(make(kind), x)
    split_halting(net, x, per)
    with torch.no_grad():
        masked = net(x, path="masked")
        sparse = net(x, path="sparse")
    ex = masked.executed
    if per == "sample":
        # Mixed across the batch: some units ran for some samples and not at all for others,
        # so the sparse path gathers a subset.
        assert ((ex > 0).any(0) & (ex == 0).any(0)).any()
    else:
        assert ((ex > 0) & (ex < 1)).any()  # some samples ran a unit at some positions only
    torch.testing.assert_close(sparse.logits, masked.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sparse.ponder, masked.ponder, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sparse.probs, masked.probs, atol=1e-5, rtol=1e-5)
    assert torch.equal(sparse.executed, masked.executed)


@pytest.mark.parametrize("kind", HALTING_KINDS)
def test_gradients_reach_halting_branches_and_backbone(kind):
    x, y = images(4), torch.arange(4)
    net = make(kind).train()
    out = net(x, mode="hard", path="masked")
    PonderObjective(0.01)(out, y).loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert net.stem[0].weight.grad.abs().sum() > 0
    assert net.stages[2][-1].conv2.weight.grad.abs().sum() > 0
    for b in branches(net):
        assert b.linear.weight.grad.abs().sum() > 0
        if kind == "sact":
            assert b.conv.weight.grad.abs().sum() > 0
    # The ponder cost alone pushes every halting score up (dR/dh = -1 before N).
    net.zero_grad()
    net(x).ponder.sum().backward()
    assert all(b.linear.bias.grad.item() < 0 for b in branches(net))


@pytest.mark.parametrize("kind", HALTING_KINDS)
def test_plain_state_dict_loads_with_only_halting_keys_missing(kind):
    torch.manual_seed(3)
    plain = build_model("resnet18", num_classes=7)
    net = build_halting("resnet18", kind, num_classes=7)
    result = net.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    halting_keys = {k for k in net.state_dict() if k.startswith("halting.")}
    assert halting_keys and set(result.missing_keys) == halting_keys
    assert torch.equal(net.stages[3][1].conv2.weight, plain.stages[3][1].conv2.weight)
    assert torch.equal(net.fc.weight, plain.fc.weight)


def test_interface_errors():
    with pytest.raises(ValueError, match="act, sact"):
        build_halting(ARCH, "pact")
    net = make("act")
    x = images(2)
    with pytest.raises(ValueError, match="force"):
        net(x, force=torch.ones(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="execution path"):
        net(x, path="dense")
    with pytest.raises(ValueError, match="gate mode"):
        net(x, mode="greedy")
    with pytest.raises(ValueError, match="plain ResNet"):
        HaltingResNet(build_model(ARCH, gate="ff1"), "act")


# --------------------------------------------------------------------------- costs


@pytest.mark.parametrize("kind", HALTING_KINDS)
@pytest.mark.parametrize(
    ("arch", "shape"),
    [("cifar_resnet20", (3, 16, 16)), ("resnet18", (3, 32, 32)), ("resnet50", (3, 32, 32))],
)
def test_full_count_equals_flop_counter(arch, shape, kind):
    x = images(2, shape)
    torch.manual_seed(0)
    backbone = build_model(arch).eval()
    net = HaltingResNet(backbone, kind, eps=EPS).eval()  # shares the backbone's modules
    set_halting_bias(net, -1e4)
    costs = count_halting_costs(net, shape)
    for path in ("masked", "sparse"):
        total, conv, out = flop_count(net, x, path)
        ex = out.executed
        assert (ex == 1).all()
        assert total == 2 * costs.per_sample(ex).sum().item() == 2 * 2 * costs.full_total
        assert conv == 2 * costs.per_sample(ex, conv_only=True).sum().item()
        assert conv == 2 * 2 * costs.full_conv
    assert costs.full_total == costs.plain_total + costs.gate_total
    plain_total, plain_conv, _ = flop_count(backbone, x, "masked")
    assert (plain_total, plain_conv) == (2 * 2 * costs.plain_total, 2 * 2 * costs.plain_conv)


def test_halting_branch_costs_by_hand():
    # cifar_resnet20 at 16x16: stages of 16/32/64 channels at 16x16, 8x8, 4x4, two branches
    # each. ACT: a C -> 1 linear layer. SACT adds a 3x3 C -> 1 convolution at every position.
    act = count_halting_costs(make("act"), SHAPE)
    sact = count_halting_costs(make("sact"), SHAPE)
    assert act.halt_linear == sact.halt_linear == [16, 16, 0, 32, 32, 0, 64, 64, 0]
    assert act.halt_conv == [0] * 9
    assert sact.halt_conv == [
        *(16 * 9 * 16 * 16, 16 * 9 * 16 * 16, 0),
        *(32 * 9 * 8 * 8, 32 * 9 * 8 * 8, 0),
        *(64 * 9 * 4 * 4, 64 * 9 * 4 * 4, 0),
    ]
    assert act.unit == sact.unit and act.plain_total == sact.plain_total
    info = sact.to_dict()
    assert info["gate_macs"] == sact.gate_total == sum(sact.halt_conv) + 2 * (16 + 32 + 64)
    assert info["num_gates"] == 6 and info["num_blocks"] == 9
    assert sact.skip_savings()[1] == sact.unit[1] + sact.halt_conv[1] + 16


def test_sact_per_sample_counts_active_positions():
    costs = count_halting_costs(make("sact"), SHAPE)
    ex = torch.tensor([[1, 0.5, 0.25, 1, 0, 0, 1, 1, 0.5]])
    u, c, lin = costs.unit, costs.halt_conv, costs.halt_linear
    conv = costs.stem + sum(f * (u[i] + c[i]) for i, f in enumerate(ex[0].tolist()))
    # The linear term of a halting branch runs once for any unit that ran somewhere.
    linear = costs.head + sum(lin[i] for i, f in enumerate(ex[0].tolist()) if f > 0)
    assert costs.per_sample(ex, conv_only=True).item() == pytest.approx(conv, rel=1e-12)
    assert costs.per_sample(ex).item() == pytest.approx(conv + linear, rel=1e-12)
    with pytest.raises(ValueError, match="shape"):
        costs.per_sample(ex[:, :4])


@pytest.mark.parametrize("kind", HALTING_KINDS)
def test_count_after_first_unit_halting_equals_flop_counter(kind):
    x = images(1)
    net = calibrate(make(kind), images(4))
    set_halting_bias(net, 1e4)
    costs = count_halting_costs(net, SHAPE)
    # The table does not depend on what the halting branches decide.
    assert costs == count_halting_costs(make(kind), SHAPE)
    total, conv, out = flop_count(net, x, "sparse")
    ex = out.executed
    first = first_units(net)
    assert ex[0, first].tolist() == [1.0] * len(first) and ex.sum() == len(first)
    assert total == 2 * costs.per_sample(ex).item()
    assert conv == 2 * costs.per_sample(ex, conv_only=True).item()
    manual = costs.stem + costs.head
    manual += sum(costs.unit[i] + costs.halt_conv[i] + costs.halt_linear[i] for i in first)
    assert costs.per_sample(ex).item() == manual < costs.full_total


def test_act_count_on_a_mixed_batch_equals_flop_counter():
    x = images(8)
    net = calibrate(make("act"), x)
    split_halting(net, x)
    costs = count_halting_costs(net, SHAPE)
    total, conv, out = flop_count(net, x, "sparse")
    ex = out.executed
    assert len(set(costs.per_sample(ex).tolist())) > 1  # samples really cost differently
    assert total == 2 * costs.per_sample(ex).sum().item()
    assert conv == 2 * costs.per_sample(ex, conv_only=True).sum().item()


# --------------------------------------------------------------------------- objective


def test_ponder_objective_value():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    target = torch.tensor([0, 2])
    ponder = torch.tensor([3.0, 5.0])
    out = SkipOutput(logits, torch.ones(2, 4), torch.zeros(2, 4), None, ponder)
    res = PonderObjective(tau=0.1)(out, target)
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1)))
    ce1 = -math.log(1 / (1 + math.e + 1))
    ce = (ce0 + ce1) / 2
    assert res.loss.item() == pytest.approx(ce + 0.1 * 4.0, rel=1e-6)
    assert res.logs[M.TRAIN_LOSS] == pytest.approx(ce, rel=1e-6)
    assert res.logs[PONDER] == pytest.approx(4.0)
    assert PonderObjective.gate_mode == "threshold"
    with pytest.raises(ValueError, match="halting network"):
        PonderObjective(0.1)(out._replace(ponder=None), target)
    with pytest.raises(ValueError, match="tau"):
        PonderObjective(-1.0)
