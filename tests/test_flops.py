"""Exact multiply-add accounting: the cost table against PyTorch's FlopCounterMode (2 FLOPs
per MAC), against hand counts, and per sample against what the sparse path really runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from skipnet_sweep.flops import count_costs, main
from skipnet_sweep.models import SkipResNet, build_model
from skipnet_sweep.models.gates import GATE_DESIGNS, RNNGate

pytestmark = pytest.mark.usefixtures("single_thread")

GATES = [None, *GATE_DESIGNS]

# The paper's input sizes. ImageNet networks are built on the meta device: FlopCounterMode
# counts from shapes alone, so the count is the same without initialising ~300M weights of
# feed-forward gates or computing a 224x224 forward pass.
PAPER_SIZES = [
    pytest.param("cifar_resnet38", (3, 32, 32), "cpu", id="cifar_resnet38"),
    pytest.param("cifar_resnet110", (3, 32, 32), "cpu", id="cifar_resnet110"),
    pytest.param("resnet50", (3, 224, 224), "meta", id="resnet50"),
    pytest.param("resnet101", (3, 224, 224), "meta", id="resnet101"),
]


def flops(fn: Callable[[], object]) -> int:
    """FLOPs of ``fn()`` as FlopCounterMode counts them (2 per multiply-add)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def build_on(device: str, arch: str, gate: str | None, **kw) -> SkipResNet:
    with torch.device(device):
        torch.manual_seed(0)
        return build_model(arch, gate=gate, **kw).eval()


def all_open(model: SkipResNet, batch: int = 1) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.ones(batch, model.num_gates, dtype=torch.bool, device=device)


def gate_inputs(model: SkipResNet, x: torch.Tensor) -> list[torch.Size]:
    """The input shape each gate sees, in gate order, on a forward with every block run."""
    shapes = []
    gates = [model.gates] if isinstance(model.gates, RNNGate) else list(model.gates)
    handles = [g.register_forward_pre_hook(lambda _m, a: shapes.append(a[0].shape)) for g in gates]
    try:
        with torch.no_grad():
            model(x, force=all_open(model, x.shape[0]))
    finally:
        for h in handles:
            h.remove()
    return shapes


# --- the full network and each gate against FlopCounterMode -----------------------------------


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize(("arch", "shape", "device"), PAPER_SIZES)
def test_full_total_is_what_flop_counter_counts(arch, shape, device, gate):
    model = build_on(device, arch, gate)
    table = count_costs(model, shape)
    x = torch.zeros(1, *shape, device=device)

    counted = flops(lambda: model(x, path="masked", force=all_open(model)))

    assert counted == 2 * table.full_total
    assert table.gate_total == (0 if gate is None else sum(table.to_dict()["gate_macs_each"]))


@pytest.mark.parametrize("gate", GATE_DESIGNS)
@pytest.mark.parametrize(("arch", "shape", "device"), PAPER_SIZES)
def test_each_gate_costs_what_flop_counter_counts_for_it_alone(arch, shape, device, gate):
    model = build_on(device, arch, gate)
    each = count_costs(model, shape).to_dict()["gate_macs_each"]
    shapes = gate_inputs(model, torch.zeros(1, *shape, device=device))
    assert len(shapes) == len(each) == model.num_gates

    for i, (s, macs) in enumerate(zip(shapes, each, strict=True)):
        x = torch.zeros(s, device=device)
        if isinstance(model.gates, RNNGate):
            # The shared gate from a fresh state: it runs its hidden matmul at every gate.
            counted = flops(lambda x=x: model.gates(x, None))
        else:
            counted = flops(lambda x=x, i=i: model.gates[i](x))
        assert counted == 2 * macs, f"gate {i}"


def test_counts_on_the_meta_device_equal_counts_on_the_cpu():
    shape = (3, 64, 64)
    tables, counts = [], []
    for device in ("cpu", "meta"):
        model = build_on(device, "resnet18", "ff1")
        tables.append(count_costs(model, shape).to_dict())
        x = torch.zeros(1, *shape, device=device)
        counts.append(flops(lambda model=model, x=x: model(x, force=all_open(model))))

    assert tables[0] == tables[1]
    assert counts[0] == counts[1] == 2 * tables[0]["total_macs"]


# --- per sample, against what the sparse path runs ----------------------------------------------


@pytest.mark.parametrize("gate", ["ff1", "rnn"])
@pytest.mark.parametrize("pattern", ["all", "none", 1, 2, 3, 4], ids=str)
def test_per_sample_cost_is_what_the_sparse_path_runs(gate, pattern):
    model = build_on("cpu", "cifar_resnet20", gate)
    table = count_costs(model, (3, 32, 32))
    if pattern in ("all", "none"):
        executed = torch.full((1, model.num_gates), pattern == "all")
    else:
        torch.manual_seed(pattern)
        executed = torch.rand(1, model.num_gates) < 0.5
        assert executed.any() and not executed.all()
    x = torch.randn(1, 3, 32, 32)

    counted = flops(lambda: model(x, path="sparse", force=executed))

    assert counted == 2 * table.per_sample(executed).item()


def test_per_sample_costs_of_a_batch_add_up_to_the_sparse_batch():
    model = build_on("cpu", "cifar_resnet20", "ff2")
    table = count_costs(model, (3, 32, 32))
    torch.manual_seed(1)
    executed = torch.rand(5, model.num_gates) < 0.5
    x = torch.randn(5, 3, 32, 32)

    sparse = flops(lambda: model(x, path="sparse", force=executed))
    masked = flops(lambda: model(x, path="masked", force=executed))

    per_sample = table.per_sample(executed)
    assert per_sample.shape == (5,) and per_sample.dtype == torch.float64
    assert sparse == 2 * per_sample.sum().item()
    # The masked path computes every block whatever the gates say.
    assert masked == 2 * 5 * table.full_total


def test_skipping_a_block_saves_its_convolutions_less_its_shortcut():
    table = count_costs(build_on("cpu", "cifar_resnet20", "rnn"), (3, 32, 32))
    g = table.num_gates
    full = table.per_sample(torch.ones(1, g)).item()

    for i, saving in enumerate(table.skip_savings()):
        skip_one = torch.ones(1, g)
        skip_one[0, i] = 0
        assert full - table.per_sample(skip_one).item() == saving
    assert full == table.full_total
    assert table.per_sample(torch.zeros(1, g)).item() == full - sum(table.skip_savings())


def test_a_plain_network_costs_the_same_for_every_sample():
    table = count_costs(build_on("cpu", "cifar_resnet20", None), (3, 32, 32))

    per_sample = table.per_sample(torch.zeros(3, 0, dtype=torch.bool))

    assert per_sample.tolist() == [table.full_total] * 3
    assert table.full_total == table.plain_total and table.gate_total == 0


@pytest.mark.parametrize("gate", GATE_DESIGNS)
def test_gates_do_not_change_the_backbone_cost(gate):
    plain = count_costs(build_on("cpu", "cifar_resnet38", None), (3, 32, 32))
    gated = count_costs(build_on("cpu", "cifar_resnet38", gate), (3, 32, 32))

    assert gated.plain_total == plain.plain_total == plain.full_total
    assert gated.full_total == plain.full_total + gated.gate_total
    assert gated.gate_total > 0


# --- hand counts --------------------------------------------------------------------------------

# cifar_resnet8 on a 1x8x8 input, 10 classes. A convolution costs
# out_h * out_w * C_out * C_in * k * k multiply-adds.
STEM = 8 * 8 * 16 * 1 * 9  # 3x3, 1 -> 16 channels at 8x8
BLOCK0 = 2 * (8 * 8 * 16 * 16 * 9)  # two 3x3, 16 -> 16 at 8x8
SHORT1 = 4 * 4 * 32 * 16  # 1x1 s2 projection, 16 -> 32, out 4x4
BLOCK1 = 4 * 4 * 32 * 16 * 9 + 4 * 4 * 32 * 32 * 9 + SHORT1
SHORT2 = 2 * 2 * 64 * 32  # 1x1 s2 projection, 32 -> 64, out 2x2
BLOCK2 = 2 * 2 * 64 * 32 * 9 + 2 * 2 * 64 * 64 * 9 + SHORT2
HEAD = 64 * 10
# FFGate-II: a 3x3 stride-2 conv at the width it reads, then a linear layer to one logit.
FF2_CONV = [4 * 4 * 16 * 16 * 9, 2 * 2 * 32 * 32 * 9]  # reads block 0 (16ch 8x8), block 1
FF2_LINEAR = [16, 32]
# RNNGate: projection to 10, LSTM cell 4H(I + H) with I = H = 10, linear to one logit.
RNN_LINEAR = [w * 10 + 4 * 10 * (10 + 10) + 10 for w in (16, 32)]


def test_plain_network_matches_a_hand_count():
    table = count_costs(build_on("cpu", "cifar_resnet8", None, in_channels=1), (1, 8, 8))
    plain = torch.zeros(1, 0, dtype=torch.bool)

    assert table.per_sample(plain, conv_only=True).item() == STEM + BLOCK0 + BLOCK1 + BLOCK2
    assert table.per_sample(plain).item() == STEM + BLOCK0 + BLOCK1 + BLOCK2 + HEAD
    assert table.block == [BLOCK0, BLOCK1, BLOCK2]
    assert table.shortcut == [0, SHORT1, SHORT2]


@pytest.mark.parametrize(
    ("gate", "gate_conv", "gate_linear"),
    [("ff2", FF2_CONV, FF2_LINEAR), ("rnn", [0, 0], RNN_LINEAR)],
)
@pytest.mark.parametrize("executed", [(1, 1), (1, 0), (0, 1), (0, 0)], ids=str)
def test_gated_network_matches_a_hand_count(gate, gate_conv, gate_linear, executed):
    table = count_costs(build_on("cpu", "cifar_resnet8", gate, in_channels=1), (1, 8, 8))
    run1, run2 = executed
    conv = (
        STEM
        + BLOCK0
        + (BLOCK1 if run1 else SHORT1)
        + (BLOCK2 if run2 else SHORT2)
        + sum(gate_conv)  # every gate runs, whatever it decides
    )

    e = torch.tensor([executed])
    assert table.per_sample(e, conv_only=True).item() == conv
    assert table.per_sample(e).item() == conv + HEAD + sum(gate_linear)
    assert table.gate_conv == gate_conv and table.gate_linear == gate_linear


def test_ffgate_ii_costs_an_eighth_of_the_basic_block_it_decides():
    # Paper Fig. 3b: "about 12.5% of the computation of residual blocks". Exactly 1/8 for a
    # block that keeps its shape: one stride-2 conv against two stride-1 convs.
    table = count_costs(build_on("cpu", "cifar_resnet38", "ff2"), (3, 32, 32))

    same_shape = [i for i in range(table.num_gates) if table.shortcut[i + 1] == 0]
    assert len(same_shape) == table.num_gates - 2  # all but the two stage transitions
    assert all(8 * table.gate_conv[i] == table.block[i + 1] for i in same_shape)


def test_count_costs_leaves_the_model_as_it_found_it():
    model = build_on("cpu", "cifar_resnet8", "ff1").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    count_costs(model, (3, 32, 32))

    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())


# --- command line -------------------------------------------------------------------------------

# ResNet-20 at 32x32, the widely quoted 40.8M multiply-adds: the stem, sixteen 3x3 convs at
# full cost (2,359,296 each), the two strided ones at half that, two 1x1 projections.
RESNET20_CONV = (
    32 * 32 * 16 * 3 * 9
    + 16 * (32 * 32 * 16 * 16 * 9)
    + 2 * (16 * 16 * 32 * 16 * 9)
    + 16 * 16 * 32 * 16
    + 8 * 8 * 64 * 32
)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_for_the_plain_resnet20(capsys):
    code, out, err = run_cli(capsys, "cifar_resnet20", "--json")

    info = json.loads(out)
    assert code == 0 and err == ""
    assert info["conv_macs"] == RESNET20_CONV == 40_812_544
    assert info["total_macs"] == RESNET20_CONV + 64 * 10
    assert info["gate_macs"] == 0


@pytest.mark.parametrize("gate", GATE_DESIGNS)
def test_cli_json_reports_the_cost_table(capsys, gate):
    code, out, _ = run_cli(capsys, "cifar_resnet20", "--gate", gate, "--input", "1x28x28", "--json")

    info = json.loads(out)
    model = build_model("cifar_resnet20", gate=gate, in_channels=1)
    table = count_costs(model, (1, 28, 28))
    assert code == 0
    assert info["conv_macs"] == table.full_conv
    assert info["total_macs"] == table.full_total
    assert info["gate_macs"] == table.gate_total > 0
    assert info["input"] == [1, 28, 28] and info["gate"] == gate


def test_cli_num_classes_sets_the_classifier(capsys):
    _, out, _ = run_cli(capsys, "cifar_resnet8", "--num-classes", "100", "--json")

    assert json.loads(out)["head_macs"] == 64 * 100


def test_cli_text_report(capsys):
    code, out, _ = run_cli(capsys, "cifar_resnet20", "--gate", "rnn")

    assert code == 0
    assert "cifar_resnet20 gate=rnn input=3x32x32 classes=10" in out
    assert f"(all blocks executed): {RESNET20_CONV:,}" in out  # the recurrent gate has no convs
    assert "gates: 8 evaluated" in out


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["resnet9"], "cifar_resnet20"),  # lists the allowed architectures
        (["cifar_resnet8", "--gate", "ff3"], "rnn"),
        (["cifar_resnet8", "--input", "3x32"], "CxHxW"),
        (["cifar_resnet8", "--input", "3xax32"], "CxHxW"),
        (["cifar_resnet8", "--input", "3x32x32x1"], "CxHxW"),
        (["cifar_resnet8", "--input", "0x32x32"], "positive"),
        (["cifar_resnet8", "--num-classes", "-3"], "positive"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_cli_bad_input_exits_2_with_one_error_line(capsys, argv, says):
    code, out, err = run_cli(capsys, *argv)

    assert code == 2 and out == ""
    assert says in one_error_line(err)


def test_cli_refuses_zero_classes(capsys):
    code, _, err = run_cli(capsys, "cifar_resnet8", "--num-classes", "0", "--json")

    assert code == 2
    assert "positive" in one_error_line(err)


def test_cli_exit_status_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "skipnet_sweep.flops", "resnet9"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 2 and proc.stdout == ""
    one_error_line(proc.stderr)
