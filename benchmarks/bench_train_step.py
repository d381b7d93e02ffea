"""Training-step time of the SP and HRL stages over the plain ResNet's step, per gate design.

A step is what the training loop (``skipnet_sweep.stages.loop``) does per batch: forward on
the masked path in the objective's gate mode (SP ``hard``, HRL ``sample``), the loss from the
project's objective (the method registry's ``build_objective``), backward, SGD step. The plain step is the same
backbone without gates and the baseline objective (cross-entropy). All variants are timed
interleaved, round by round, and compared by their median ms/step.

    python benchmarks/bench_train_step.py                     # ResNet-38, 1x28x28, batch 128
    python benchmarks/bench_train_step.py --input 3x32x32 --json
    python benchmarks/bench_train_step.py --smoke-test
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from _timing import (
    add_common_args,
    add_network_args,
    apply_common_args,
    apply_smoke_test,
    interleaved,
    paired_median,
    report,
)

from skipnet_sweep.flops import count_costs, parse_input
from skipnet_sweep.methods import build_objective
from skipnet_sweep.models import GATE_DESIGNS, SkipResNet, build_model
from skipnet_sweep.stages.config import DataConfig, StageConfig, TrainConfig, hrl_defaults

# Goal on step time over the plain step, per gate design (both stages).
GOALS = {"rnn": 1.05, "ff2": 1.20, "ff1": 1.30}


@dataclass
class Row:
    gate: str  # "-" for the plain network
    stage: str  # baseline, sp, hrl
    mode: str  # gate mode of the forward pass
    ms_median: float
    ms_q1: float
    ms_q3: float
    ratio: float | None = None  # median step time / median plain step time
    paired_ratio: float | None = None  # median over rounds of the per-round ratio
    goal: float | None = None
    status: str | None = None


def make_step(
    model: SkipResNet, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor
) -> tuple[Callable[[], None], str]:
    """One training step of ``cfg``'s stage on a fixed batch, as the training loop does it."""
    costs = count_costs(model, tuple(x.shape[1:]))
    objective = build_objective(StageConfig(model.config, DataConfig(), cfg), costs)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    model.train()

    def step() -> None:
        out = model(x, mode=objective.gate_mode, path="masked")
        res = objective(out, y)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()

    return step, objective.gate_mode


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_network_args(p, arch="cifar_resnet38", rounds=15)
    p.add_argument("--gates", nargs="+", default=list(GATE_DESIGNS), choices=GATE_DESIGNS)
    p.add_argument("--stages", nargs="+", default=["sp", "hrl"], choices=("sp", "hrl"))
    add_common_args(p)
    args = p.parse_args(argv)
    apply_smoke_test(args, rounds=3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    malloc = apply_common_args(args)
    shape = parse_input(args.input)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, *shape, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)

    torch.manual_seed(args.seed)
    plain = build_model(args.arch, in_channels=shape[0])
    backbone = plain.state_dict()
    configs = {
        "baseline": TrainConfig(phase="baseline", iterations=1),
        "sp": TrainConfig(phase="sp", iterations=1),
        "hrl": hrl_defaults(),
    }
    steps, modes = {}, {}
    steps[("-", "baseline")], modes[("-", "baseline")] = make_step(plain, configs["baseline"], x, y)
    for gate in args.gates:
        for stage in args.stages:
            # A model per (gate, stage): each stage owns its optimiser state; same backbone.
            torch.manual_seed(args.seed)
            model = build_model(args.arch, in_channels=shape[0], gate=gate)
            model.load_state_dict(backbone, strict=False)
            steps[(gate, stage)], modes[(gate, stage)] = make_step(model, configs[stage], x, y)

    times = interleaved(
        {f"{g}/{s}": fn for (g, s), fn in steps.items()},
        args.rounds,
        warmup=args.warmup,
        min_time=0.0,
        clock=args.clock,
    )
    base = times["-/baseline"]
    rows = []
    for gate, stage in steps:
        t = times[f"{gate}/{stage}"]
        q1, q3 = t.iqr
        mode = "-" if gate == "-" else modes[(gate, stage)]
        row = Row(gate, stage, mode, 1e3 * t.median, 1e3 * q1, 1e3 * q3)
        if gate != "-":
            row.ratio = t.median / base.median
            row.paired_ratio = paired_median(t, base)
            row.goal = GOALS[gate]
            row.status = "PASS" if row.ratio <= row.goal else "MISS"
        rows.append(row)

    cols = (
        f"{'gate':<5} {'stage':<8} {'mode':<9} {'ms/step':>8} {'IQR':>17} "
        f"{'ratio':>6} {'paired':>6}  goal"
    )

    def line(r: Row) -> str:
        ratio = "-" if r.ratio is None else f"{r.ratio:.3f}"
        paired = "-" if r.paired_ratio is None else f"{r.paired_ratio:.3f}"
        goal = "" if r.goal is None else f"<={r.goal:.2f}x {r.status}"
        return (
            f"{r.gate:<5} {r.stage:<8} {r.mode:<9} {r.ms_median:>8.1f} "
            f"{f'[{r.ms_q1:.1f}, {r.ms_q3:.1f}]':>17} {ratio:>6} {paired:>6}  {goal}"
        )

    return report(args, malloc, rows, cols, line, omp_wait_policy=True, meaningless="goals")


if __name__ == "__main__":
    sys.exit(main())
