"""GPU figures, side by side in one run: SP and HRL training throughput against the plain
ResNet in fp32 and bf16, peak memory per step, and the sparse-inference speed-up over the
plain ResNet at batch 1 and 64.

    python benchmarks/bench_gpu.py                       # CIFAR ResNet-110 and ImageNet ResNet-101
    python benchmarks/bench_gpu.py --models cifar --gate ff2 --json
    python benchmarks/bench_gpu.py --smoke-test          # tiny, seconds, runs on CPU too

Training: a step is what the training loop does per batch (masked path in the objective's
gate mode, the project's objective, backward, SGD), on one fixed random batch; bf16 runs the
forward pass and the loss under ``torch.autocast`` (weights and optimiser stay fp32), the
backward outside it. Every (precision, network, stage) step is timed interleaved with the
others, round by round, with the device synchronised around each call. Peak memory is what
one step allocates beyond the resident weights and optimiser state
(``torch.cuda.max_memory_allocated``; not measured on CPU).

Inference: ``skipnet_sweep.latency.measure_latency`` (the per-run latency metric), with the
gates' output biases shifted so that the network's own thresholded decisions skip about
``--skip`` of the gated blocks on the timed images (``bench_inference.own_decisions``); the
FLOPs saving of those decisions is printed beside the realised one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from _timing import CLOCKS, Timing, add_common_args, apply_common_args, paired_median
from bench_inference import own_decisions

from skipnet_sweep import metrics as M
from skipnet_sweep.flops import count_costs, parse_input
from skipnet_sweep.latency import measure_latency, synchronizer, time_interleaved
from skipnet_sweep.methods import build_objective
from skipnet_sweep.models import GATE_DESIGNS, SkipResNet, build_model
from skipnet_sweep.stages.config import DataConfig, StageConfig, TrainConfig, hrl_defaults

# The two settings of the paper: CIFAR ResNet-110 at 32x32, batch 128 (ResNet recipe); ImageNet
# ResNet-101 at 224x224, batch 64 per GPU (SkipNet trains with 256 on 4 GPUs).
SETUPS = {
    "cifar": ("cifar_resnet110", "3x32x32", 128),
    "imagenet": ("resnet101", "3x224x224", 64),
}
SMOKE_SETUPS = {
    "cifar": ("cifar_resnet8", "3x16x16", 4),
    "imagenet": ("resnet18", "3x16x16", 2),
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


@dataclass
class TrainRow:
    """One training step variant."""

    setup: str
    dtype: str
    gate: str  # "-" for the plain network
    stage: str  # baseline, sp, hrl
    ms_median: float
    ms_q1: float
    ms_q3: float
    images_per_s: float
    ratio: float | None = None  # step time / the plain step time in the same precision
    paired_ratio: float | None = None  # median over rounds of the per-round ratio
    bf16_speedup: float | None = None  # fp32 step time / bf16 step time (bf16 rows)
    peak_mib: float | None = None  # allocated by one step beyond what was resident


@dataclass
class InferenceRow:
    """Sparse inference against the plain ResNet at one batch size."""

    setup: str
    batch: int
    ms: float
    plain_ms: float
    speedup: float  # plain / network
    skip_fraction: float  # of gated blocks, over the timed images
    flops_saving: float  # 1 - mean MACs / plain MACs of those decisions
    realised_saving: float  # 1 - ms / plain_ms


def make_step(
    model: SkipResNet, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, dtype: str
) -> Callable[[], None]:
    """One training step of ``cfg``'s stage on a fixed batch, in precision ``dtype``."""
    costs = count_costs(model, tuple(x.shape[1:]))
    objective = build_objective(StageConfig(model.config, DataConfig(), cfg), costs)
    model.to(x.device).train()
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    cast = DTYPES[dtype]

    def step() -> None:
        with torch.autocast(x.device.type, dtype=cast or torch.float32, enabled=cast is not None):
            res = objective(model(x, mode=objective.gate_mode, path="masked"), y)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()

    return step


def peak_step_mib(step: Callable[[], None], device: torch.device) -> float | None:
    """Memory one step allocates beyond what is resident before it (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def bench_training(
    setup: str, arch: str, shape, batch: int, device: torch.device, args
) -> list[TrainRow]:
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(batch, *shape, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    torch.manual_seed(args.seed)
    plain = build_model(arch, in_channels=shape[0])
    backbone = plain.state_dict()
    configs = {
        "baseline": TrainConfig(phase="baseline", iterations=1),
        "sp": TrainConfig(phase="sp", iterations=1),
        "hrl": hrl_defaults(),
    }
    nets = {("-", "baseline"): plain}
    for stage in args.stages:
        # A network per stage: each owns its optimiser state; same backbone weights.
        torch.manual_seed(args.seed)
        nets[(args.gate, stage)] = build_model(arch, in_channels=shape[0], gate=args.gate)
        nets[(args.gate, stage)].load_state_dict(backbone, strict=False)
    steps = {
        (dtype, gate, stage): make_step(net, configs[stage], x, y, dtype)
        for dtype in args.dtypes
        for (gate, stage), net in nets.items()
    }
    samples = time_interleaved(
        {"/".join(k): fn for k, fn in steps.items()},
        warmup=args.warmup,
        repeats=args.rounds,
        sync=synchronizer(device),
        clock=CLOCKS[args.clock],
    )
    times = {k: Timing(samples["/".join(k)]) for k in steps}
    rows = []
    for (dtype, gate, stage), t in times.items():
        q1, q3 = t.iqr
        ms = (1e3 * t.median, 1e3 * q1, 1e3 * q3)
        row = TrainRow(setup, dtype, gate, stage, *ms, images_per_s=batch / t.median)
        if gate != "-":
            base = times[(dtype, "-", "baseline")]
            row.ratio = t.median / base.median
            row.paired_ratio = paired_median(t, base)
        if dtype == "bf16" and ("fp32", gate, stage) in times:
            row.bf16_speedup = times[("fp32", gate, stage)].median / t.median
        row.peak_mib = peak_step_mib(steps[(dtype, gate, stage)], device)
        rows.append(row)
    return rows


def bench_inference(setup: str, arch: str, shape, device: torch.device, args) -> list[InferenceRow]:
    torch.manual_seed(args.seed)
    plain = build_model(arch, in_channels=shape[0]).eval()
    gated = build_model(arch, in_channels=shape[0], gate=args.gate).eval()
    gated.load_state_dict(plain.state_dict(), strict=False)
    costs = count_costs(gated, shape)
    plain.to(device), gated.to(device)
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randn(max(args.latency_batch), *shape, generator=gen).to(device)
    rows = []
    with own_decisions(gated, images, args.skip):
        metrics = measure_latency(
            gated,
            shape,
            device=device,
            batch_sizes=args.latency_batch,
            warmup=args.warmup,
            repeats=args.rounds,
            reference=plain,
            images=images,
            clock=CLOCKS[args.clock],
        )
        for b in args.latency_batch:
            with torch.inference_mode():
                executed = gated(images[:b], mode="threshold", path="sparse").executed.cpu()
            ms, plain_ms = metrics[M.latency_ms(b)], metrics[M.latency_plain_ms(b)]
            rows.append(
                InferenceRow(
                    setup,
                    b,
                    ms,
                    plain_ms,
                    metrics[M.speedup(b)],
                    1 - executed.float().mean().item(),
                    1 - costs.per_sample(executed).mean().item() / costs.plain_total,
                    1 - ms / plain_ms,
                )
            )
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--gate", default="rnn", choices=GATE_DESIGNS)
    p.add_argument("--stages", nargs="+", default=["sp", "hrl"], choices=("sp", "hrl"))
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--latency-batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--skip", type=float, default=0.5, help="fraction of gated blocks skipped")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    add_common_args(p)
    args = p.parse_args(argv)
    args.setups = SMOKE_SETUPS if args.smoke_test else SETUPS
    if args.smoke_test:
        args.latency_batch, args.rounds, args.warmup = [1, 4], 1, 1
        # Tiny tensors gain nothing from threads, and on a busy machine spinning ones cost more
        # than the work itself.
        args.threads = args.threads or 1
    if not 0 <= args.skip <= 1:
        p.error("--skip is a fraction in [0, 1]")
    if min(args.latency_batch) < 1:
        p.error("--latency-batch sizes must be >= 1")
    return args


def print_report(info: dict, train: list[TrainRow], inference: list[InferenceRow]) -> None:
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    cols = (
        f"{'setup':<9} {'dtype':<5} {'gate':<5} {'stage':<8} {'ms/step':>9} {'IQR':>19} "
        f"{'img/s':>9} {'ratio':>6} {'paired':>6} {'bf16 x':>6} {'peak MiB':>9}"
    )
    print(cols)
    print("-" * len(cols))
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in train:
        print(
            f"{r.setup:<9} {r.dtype:<5} {r.gate:<5} {r.stage:<8} {r.ms_median:>9.2f} "
            f"{f'[{r.ms_q1:.2f}, {r.ms_q3:.2f}]':>19} {r.images_per_s:>9.1f} "
            f"{f(r.ratio, '.3f'):>6} {f(r.paired_ratio, '.3f'):>6} "
            f"{f(r.bf16_speedup, '.2f'):>6} {f(r.peak_mib, '.0f'):>9}"
        )
    print()
    cols = (
        f"{'setup':<9} {'batch':>5} {'ms':>9} {'plain ms':>9} {'speed-up':>8} {'skip':>5} "
        f"{'FLOPs sav':>9} {'realised':>8}"
    )
    print(cols)
    print("-" * len(cols))
    for r in inference:
        print(
            f"{r.setup:<9} {r.batch:>5} {r.ms:>9.3f} {r.plain_ms:>9.3f} {r.speedup:>8.2f} "
            f"{r.skip_fraction:>5.2f} {r.flops_saving:>9.3f} {r.realised_saving:>8.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    malloc = apply_common_args(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    train, inference = [], []
    for setup in args.models:
        arch, text, batch = args.setups[setup]
        shape = parse_input(text)
        train += bench_training(setup, arch, shape, batch, device, args)
        inference += bench_inference(setup, arch, shape, device, args)
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "gate": args.gate,
        "setups": {s: args.setups[s] for s in args.models},
        "rounds": args.rounds,
        "clock": args.clock,
        "threads": torch.get_num_threads(),
        "malloc": malloc,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "smoke_test": args.smoke_test,
    }
    if args.json:
        print(
            json.dumps(
                {
                    **info,
                    "train": [asdict(r) for r in train],
                    "inference": [asdict(r) for r in inference],
                }
            )
        )
        return 0
    print_report(info, train, inference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
