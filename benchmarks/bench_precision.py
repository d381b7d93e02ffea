"""bf16 autocast over fp32 on the CPU: one training step per network, as the loop does it.

``precision: fast`` trains in bf16 autocast on a CPU that computes bf16 natively (AMX or
AVX512-BF16, ``skipnet_sweep.stages.loop.cpu_bf16_flags``) and in fp32 elsewhere. This measures
what that buys on the machine it runs on: one training step of the plain ResNet, SP and HRL
with the recurrent gate, in fp32 and under bf16 autocast, timed interleaved round by round; the
ratio is fp32 time over bf16 time (above 1: bf16 is faster). On a CPU without the flags the
ratio is below 1, which is why ``auto`` stays fp32 on the CPU.

    python benchmarks/bench_precision.py --threads 1      # ResNet-20, 1x28x28, batch 64
    python benchmarks/bench_precision.py --threads 2 --json
    python benchmarks/bench_precision.py --smoke-test
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
from skipnet_sweep.stages.loop import cpu_bf16_flags

NETWORKS = {"plain": ("baseline", None), "sp-rnn": ("sp", "rnn"), "hrl-rnn": ("hrl", "rnn")}


@dataclass
class Row:
    network: str
    fp32_ms: float
    bf16_ms: float
    speedup: float  # fp32 / bf16, medians
    paired_speedup: float  # median over rounds of the per-round ratio
    cpu_bf16_flags: str


def _step(name: str, args, x: torch.Tensor, y: torch.Tensor, bf16: bool):
    phase, gate = NETWORKS[name]
    torch.manual_seed(args.seed)
    net = build_from_config(ModelConfig(args.arch, gate, 10, x.shape[1]))
    net = net.to(memory_format=torch.channels_last)
    step = make_step(net, TrainConfig(phase=phase, iterations=1), x, y)[0]

    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            step()

    return run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_network_args(p, arch="cifar_resnet20", rounds=10)
    add_common_args(p)
    p.set_defaults(input="1x28x28", batch=64)
    args = p.parse_args(argv)
    apply_smoke_test(args, rounds=2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    malloc = apply_common_args(args)
    shape = parse_input(args.input)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, *shape, generator=gen).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    fns = {
        f"{name}/{p}": _step(name, args, x, y, p == "bf16")
        for name in NETWORKS
        for p in ("fp32", "bf16")
    }
    times = interleaved(fns, args.rounds, warmup=args.warmup, min_time=0.0, clock=args.clock)
    flags = ",".join(cpu_bf16_flags()) or "none"
    rows = [
        Row(
            name,
            1e3 * times[f"{name}/fp32"].median,
            1e3 * times[f"{name}/bf16"].median,
            times[f"{name}/fp32"].median / times[f"{name}/bf16"].median,
            1 / paired_median(times[f"{name}/bf16"], times[f"{name}/fp32"]),
            flags,
        )
        for name in NETWORKS
    ]
    cols = f"{'network':<8} {'fp32 ms':>8} {'bf16 ms':>8} {'speed-up':>8} {'paired':>6}  cpu bf16 flags"
    return report(
        args,
        malloc,
        rows,
        cols,
        lambda r: (
            f"{r.network:<8} {r.fp32_ms:>8.1f} {r.bf16_ms:>8.1f} {r.speedup:>7.2f}x "
            f"{r.paired_speedup:>5.2f}x  {r.cpu_bf16_flags}"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
