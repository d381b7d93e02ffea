"""Channels-last over the contiguous layout: training-step and evaluation time per network.

The stages keep their networks and batches channels-last on every device
(``skipnet_sweep.models.model_input``). This measures what that layout buys on the machine it
runs on: for the plain ResNet, SP with the recurrent gate and SACT, one training step as the
loop does it and one evaluation forward (``threshold`` gates, sparse path), each in both
layouts, all timed interleaved round by round; the ratio is contiguous time over channels-last
time (above 1: channels-last is faster).

    python benchmarks/bench_layout.py --threads 1      # ResNet-20, 1x28x28, batch 128
    python benchmarks/bench_layout.py --threads 2 --json
    python benchmarks/bench_layout.py --smoke-test
"""

from __future__ import annotations

import argparse
import sys
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
from bench_train_step import make_step

from skipnet_sweep.flops import parse_input
from skipnet_sweep.models import ModelConfig, build_from_config
from skipnet_sweep.stages.config import TrainConfig

NETWORKS = {"plain": ("baseline", None), "sp-rnn": ("sp", "rnn"), "sact": ("sact", "sact")}
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass
class Row:
    network: str
    work: str  # train (one step) or eval (one forward)
    contiguous_ms: float
    channels_last_ms: float
    speedup: float  # contiguous / channels-last, medians
    paired_speedup: float  # median over rounds of the per-round ratio


def _network(name: str, arch: str, channels: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_from_config(ModelConfig(arch, NETWORKS[name][1], 10, channels))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_network_args(p, arch="cifar_resnet20", rounds=10)
    add_common_args(p)
    args = p.parse_args(argv)
    apply_smoke_test(args, rounds=2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    malloc = apply_common_args(args)
    shape = parse_input(args.input)
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.batch, *shape, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    fns = {}
    for name, (phase, _) in NETWORKS.items():
        for layout, fmt in LAYOUTS.items():
            x = images.contiguous(memory_format=fmt)
            train_net = _network(name, args.arch, shape[0], args.seed).to(memory_format=fmt)
            cfg = TrainConfig(phase=phase, iterations=1)
            fns[(name, "train", layout)] = make_step(train_net, cfg, x, y)[0]
            eval_net = _network(name, args.arch, shape[0], args.seed).to(memory_format=fmt)
            eval_net.eval()

            def forward(net=eval_net, x=x) -> None:
                with torch.inference_mode():
                    net(x, mode="threshold", path="sparse")

            fns[(name, "eval", layout)] = forward
    times = interleaved(
        {"/".join(k): fn for k, fn in fns.items()},
        args.rounds,
        warmup=args.warmup,
        min_time=0.0,
        clock=args.clock,
    )
    rows = []
    for name in NETWORKS:
        for work in ("train", "eval"):
            contiguous = times[f"{name}/{work}/contiguous"]
            last = times[f"{name}/{work}/channels_last"]
            rows.append(
                Row(
                    name,
                    work,
                    1e3 * contiguous.median,
                    1e3 * last.median,
                    contiguous.median / last.median,
                    1 / paired_median(last, contiguous),
                )
            )
    cols = f"{'network':<8} {'work':<6} {'contiguous ms':>13} {'channels-last ms':>16} {'speed-up':>8} {'paired':>6}"
    return report(
        args,
        malloc,
        rows,
        cols,
        lambda r: (
            f"{r.network:<8} {r.work:<6} {r.contiguous_ms:>13.1f} {r.channels_last_ms:>16.1f} "
            f"{r.speedup:>7.2f}x {r.paired_speedup:>5.2f}x"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
