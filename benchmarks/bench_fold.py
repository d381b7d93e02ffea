"""Evaluation with each BatchNorm folded into its convolution, against the network as trained.

Evaluation and latency run a folded copy of the network (``skipnet_sweep.models.folded``):
the same function to float rounding, one pass fewer over every activation. This measures what
that buys on the machine it runs on: one evaluation forward (``threshold`` gates, sparse
path, inference mode, channels-last) of the plain ResNet, SP with the recurrent gate and
SACT, each as built and folded, timed interleaved round by round; the ratio is unfolded time
over folded time (above 1: folding is faster).

    python benchmarks/bench_fold.py --threads 1      # ResNet-20, 1x28x28, batch 128
    python benchmarks/bench_fold.py --threads 2 --json
    python benchmarks/bench_fold.py --smoke-test
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from _timing import apply_common_args, interleaved, paired_median, report
from bench_layout import NETWORKS, _network, parse_args

from skipnet_sweep.flops import parse_input
from skipnet_sweep.models import folded, input_layout


@dataclass
class Row:
    network: str
    unfolded_ms: float
    folded_ms: float
    speedup: float  # unfolded / folded, medians
    paired_speedup: float  # median over rounds of the per-round ratio


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    malloc = apply_common_args(args)
    shape = parse_input(args.input)
    images = torch.randn(args.batch, *shape, generator=torch.Generator().manual_seed(args.seed))
    fns = {}
    for name in NETWORKS:
        net = _network(name, args.arch, shape[0], args.seed).eval()
        layout = input_layout(net)
        net.to(memory_format=layout)
        x = images.contiguous(memory_format=layout)
        for form, model in (("unfolded", net), ("folded", folded(net))):

            def forward(model=model, x=x) -> None:
                with torch.inference_mode():
                    model(x, mode="threshold", path="sparse")

            fns[f"{name}/{form}"] = forward
    times = interleaved(fns, args.rounds, warmup=args.warmup, min_time=0.0, clock=args.clock)
    rows = []
    for name in NETWORKS:
        plain, fold = times[f"{name}/unfolded"], times[f"{name}/folded"]
        rows.append(
            Row(
                name,
                1e3 * plain.median,
                1e3 * fold.median,
                plain.median / fold.median,
                1 / paired_median(fold, plain),
            )
        )
    cols = f"{'network':<8} {'unfolded ms':>11} {'folded ms':>9} {'speed-up':>8} {'paired':>6}"
    return report(
        args,
        malloc,
        rows,
        cols,
        lambda r: (
            f"{r.network:<8} {r.unfolded_ms:>11.1f} {r.folded_ms:>9.1f} "
            f"{r.speedup:>7.2f}x {r.paired_speedup:>5.2f}x"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
