"""Exact multiply-add (MAC) accounting, per sample, from each sample's own gate decisions.

Counting follows the paper (§4.2.1, after the ResNet paper): the multiply-adds of the
convolutions, ``out_elements * (C_in / groups) * k_h * k_w``; linear layers (the classifier,
the gates' projections, the LSTM's two matmuls ``4H * (I + H)``) add ``in * out`` each and
are reported separately so both the paper's conv-only figure and the full total exist.
Batch-norm, activations, pooling and the gate mixing are not counted (as in the paper and
as ``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per MAC; the tests
check the two agree exactly).

A sample's cost is: the stem, the first (ungated) block, each gated block it executed, the
shortcut projection of each shape-changing block it skipped, **every gate** (each gate is
evaluated whatever it decides), and the classifier.

    python -m skipnet_sweep.flops cifar_resnet110 --gate rnn --json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import torch
from torch import Tensor

from skipnet_sweep.models import SkipResNet, build_model, list_models
from skipnet_sweep.models.costs import MacTable, trace_macs
from skipnet_sweep.models.gates import GATE_DESIGNS
from skipnet_sweep.models.halting import HaltingResNet, count_halting_costs


@dataclass
class CostTable(MacTable):
    """Per-sample MACs of every part of a SkipNet at one input size; the totals
    (``plain_total``, ``full_total``...) are ``MacTable``'s.

    Attributes:
        stem: convolution MACs of the stem.
        block: convolution MACs of each residual block when executed (shortcut included).
        shortcut: convolution MACs of each block's shortcut projection (0 for identity).
        gate_conv: convolution MACs of each gate.
        gate_linear: linear MACs of each gate (projection, LSTM, output layer).
        head: linear MACs of the classifier.
    """

    stem: int
    block: list[int]
    shortcut: list[int]
    gate_conv: list[int]
    gate_linear: list[int]
    head: int

    def _parts(self) -> tuple[list[int], list[int], list[int]]:
        return self.block, self.gate_conv, self.gate_linear

    @property
    def num_gates(self) -> int:
        return len(self.gate_conv)

    def skip_savings(self) -> list[int]:
        """MACs saved by skipping each gated block (its convolutions less its shortcut)."""
        return [b - s for b, s in zip(self.block[1:], self.shortcut[1:], strict=True)]

    def per_sample(self, executed: Tensor, *, conv_only: bool = False) -> Tensor:
        """MACs of each sample given its decisions.

        Args:
            executed: (B, G) bool/0-1, block ``i + 1`` executed; G may be 0 (plain ResNet).
            conv_only: count convolutions only (the paper's figure).

        Returns:
            (B,) float64 MACs.
        """
        e = executed.to(torch.float64)
        block = torch.tensor(self.block[1:], dtype=torch.float64)
        short = torch.tensor(self.shortcut[1:], dtype=torch.float64)
        fixed = self.stem + self.block[0] + sum(self.gate_conv)
        if not conv_only:
            fixed += self.head + sum(self.gate_linear)
        if e.shape[1] == 0:
            # A plain ResNet: every block is executed.
            return torch.full((e.shape[0],), float(fixed + block.sum()), dtype=torch.float64)
        return fixed + e @ block + (1 - e) @ short

    def to_dict(self) -> dict:
        return self._to_dict(after_blocks={"shortcut_macs": self.shortcut})


def count_costs(model: SkipResNet, input_shape: tuple[int, int, int]) -> CostTable:
    """Measure the per-sample cost table of ``model`` at ``input_shape`` (C, H, W).

    Runs one sample through the masked path with every gate forced open and reads each
    convolution's output shape (spatial sizes depend on the input, so the table is only
    valid for that size). Each layer call is attributed to the stem, a block or a gate by
    the layer's name and the order of calls (the shared recurrent gate runs once per gate).
    A halting network (ACT/SACT) gets its own table (``models.halting.HaltingCostTable``).
    """
    if isinstance(model, HaltingResNet):
        return count_halting_costs(model, input_shape)

    def run_all_open(model: SkipResNet, x: Tensor) -> None:
        force = torch.ones(1, model.num_gates, dtype=torch.bool, device=x.device)
        model(x, mode="threshold", path="masked", force=force)

    events = trace_macs(model, input_shape, run_all_open)
    stage_sizes = [len(s) for s in model.stages]
    n_blocks = sum(stage_sizes)
    stem = head = 0
    block, shortcut = [0] * n_blocks, [0] * n_blocks
    gate_conv, gate_linear = [0] * model.num_gates, [0] * model.num_gates
    last_block = -1
    for name, is_conv, macs in events:
        parts = name.split(".")
        if parts[0] == "stem":
            stem += macs
        elif parts[0] == "stages":
            last_block = sum(stage_sizes[: int(parts[1])]) + int(parts[2])
            block[last_block] += macs
            if parts[3] == "downsample":
                shortcut[last_block] += macs
        elif parts[0] == "gates":
            # Gate i runs after block i and decides block i + 1.
            (gate_conv if is_conv else gate_linear)[last_block] += macs
        elif parts[0] == "fc":
            head += macs
    return CostTable(stem, block, shortcut, gate_conv, gate_linear, head)


def default_input(arch: str) -> tuple[int, int, int]:
    """The input size an architecture family is usually run at."""
    return (3, 32, 32) if arch.startswith("cifar") else (3, 224, 224)


def parse_input(text: str) -> tuple[int, int, int]:
    """Parse ``CxHxW`` (e.g. ``1x28x28``)."""
    try:
        c, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input must look like CxHxW (e.g. 3x32x32), got {text!r}") from None
    if min(c, h, w) < 1:
        raise ValueError(f"--input sizes must be positive, got {text!r}")
    return c, h, w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skipnet_sweep.flops",
        description="Per-sample multiply-adds of a registered network with all blocks executed.",
    )
    parser.add_argument("arch", help=f"one of: {', '.join(list_models())}")
    parser.add_argument("--gate", default="none", help=f"{', '.join(GATE_DESIGNS)} or none")
    parser.add_argument("--input", default=None, help="CxHxW, default 3x32x32 (CIFAR) / 3x224x224")
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        shape = parse_input(args.input) if args.input else default_input(args.arch)
        gate = None if args.gate == "none" else args.gate
        classes = args.num_classes
        if classes is None:
            classes = 10 if args.arch.startswith("cifar") else 1000
        model = build_model(args.arch, num_classes=classes, in_channels=shape[0], gate=gate)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = count_costs(model, shape)
    info = {"arch": args.arch, "gate": gate, "input": list(shape), "num_classes": classes}
    info.update(table.to_dict())
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{args.arch} gate={gate} input={'x'.join(map(str, shape))} classes={classes}")
    print(f"  conv multiply-adds (all blocks executed): {table.full_conv:,}")
    print(f"  total with linear layers:                 {table.full_total:,}")
    print(f"  plain ResNet (no gates), total:           {table.plain_total:,}")
    if table.num_gates:
        print(
            f"  gates: {table.num_gates} evaluated, {table.gate_total:,} MACs "
            f"({info['gate_share_pct']:.3f}% of the total)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
