"""Realised inference saving of the sparse path against the plain ResNet, beside the FLOPs
saving of the same decisions.

A gated network and the plain network share one backbone (same weights). The gated network
runs with decisions forced (``force=``) to a fixed pattern, so the FLOPs saving is known
exactly; optionally also with its own decisions, after shifting the gates' output biases
until they skip the requested fraction. Gates are evaluated in every case (as in a real
SkipNet), so their cost is in the measured time and in the FLOPs. Plain, sparse and masked
(computes every block, saves nothing) are timed interleaved, round by round.

    python benchmarks/bench_inference.py                      # ResNet-110, RNN gates
    python benchmarks/bench_inference.py --gate ff2 --own --json
    python benchmarks/bench_inference.py --smoke-test

Realised saving = 1 - t_sparse / t_plain (median wall time per batch); FLOPs saving =
1 - mean(per-sample MACs) / plain MACs (``skipnet_sweep.flops``); the goal is on their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass

import torch
from _timing import Timing, add_common_args, apply_common_args, interleaved, paired_median
from torch import Tensor

from skipnet_sweep.flops import count_costs, default_input, parse_input
from skipnet_sweep.models import GATE_DESIGNS, SkipResNet, build_model, list_models

# Goal on realised / FLOPs saving of the sparse path, per batch size (others: no goal).
GOALS = {1: 0.90, 64: 0.85}


@dataclass
class Row:
    """One timed alternative at one batch size."""

    batch: int
    path: str  # plain, sparse, masked
    decisions: str  # "-" (plain), "forced" or "own"
    ms_median: float
    ms_q1: float
    ms_q3: float
    skip_fraction: float | None = None  # of gated blocks, over the batch
    flops_saving: float | None = None
    realised_saving: float | None = None  # from the medians
    paired_saving: float | None = None  # median over rounds of the per-round saving
    ratio: float | None = None  # realised / FLOPs saving
    goal: float | None = None
    status: str | None = None  # PASS / MISS


def skip_pattern(batch: int, gates: int, skip: float, pattern: str, seed: int) -> Tensor:
    """(batch, gates) bool execute decisions with ``round(skip * gates)`` blocks skipped per
    sample, chosen at random (``per-sample``) or once for the whole batch (``same``)."""
    gen = torch.Generator().manual_seed(seed)
    n_skip = round(skip * gates)
    rows = 1 if pattern == "same" else batch
    run = torch.ones(rows, gates, dtype=torch.bool)
    for r in range(rows):
        run[r, torch.randperm(gates, generator=gen)[:n_skip]] = False
    return run.expand(batch, gates).clone()


def _gate_biases(model: SkipResNet) -> list[Tensor]:
    """The output-layer bias of every gate (one, shared, for the recurrent gate)."""
    if model.gate_design == "rnn":
        return [model.gates.fc.bias]
    return [g.fc.bias for g in model.gates]


@contextmanager
def own_decisions(model: SkipResNet, x: Tensor, skip: float, iters: int = 40):
    """Shift all gate output biases by one amount (bisection) so that the network's own
    thresholded decisions on ``x`` skip about ``skip`` of its gated blocks; yields those
    decisions and restores the biases on exit."""
    biases = _gate_biases(model)
    base = [b.detach().clone() for b in biases]

    @torch.inference_mode()
    def decisions(delta: float) -> Tensor:
        for b, b0 in zip(biases, base, strict=True):
            b.copy_(b0 + delta)
        return model(x, mode="threshold", path="sparse").executed

    try:
        lo, hi = -100.0, 100.0  # the skip fraction falls as delta rises
        for _ in range(iters):
            mid = (lo + hi) / 2
            frac = 1 - decisions(mid).float().mean().item()
            if abs(frac - skip) < 0.5 / (x.shape[0] * model.num_gates):  # half a decision
                break
            lo, hi = (mid, hi) if frac > skip else (lo, mid)
        yield decisions(mid)
    finally:
        with torch.inference_mode():
            for b, b0 in zip(biases, base, strict=True):
                b.copy_(b0)


@torch.inference_mode()
def check_paths(model: SkipResNet, x: Tensor, force: Tensor) -> None:
    """The sparse path must honour ``force`` and match the masked path (eval mode)."""
    sparse = model(x, path="sparse", force=force)
    masked = model(x, path="masked", force=force)
    if not torch.equal(sparse.executed, force):
        raise AssertionError("sparse path did not execute the forced decisions")
    if not torch.allclose(sparse.logits, masked.logits, rtol=1e-4, atol=1e-4):
        raise AssertionError("sparse and masked paths disagree on the same decisions")


def bench_batch(
    plain: SkipResNet,
    gated: SkipResNet,
    shape: tuple[int, int, int],
    batch: int,
    args: argparse.Namespace,
) -> list[Row]:
    """Time plain, sparse and masked (and optionally own decisions) at one batch size."""
    costs = count_costs(gated, shape)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(batch, *shape, generator=gen)
    force = skip_pattern(batch, gated.num_gates, args.skip, args.pattern, args.seed + 1)
    check_paths(gated, x, force)

    def flops_saving(executed: Tensor) -> float:
        return 1 - costs.per_sample(executed).mean().item() / costs.plain_total

    fns = {
        ("plain", "-"): lambda: plain(x),
        ("sparse", "forced"): lambda: gated(x, path="sparse", force=force),
        ("masked", "forced"): lambda: gated(x, path="masked", force=force),
    }
    decided = {"forced": force}
    with ExitStack() as stack:
        if args.own:
            decided["own"] = stack.enter_context(own_decisions(gated, x, args.skip))
            fns[("sparse", "own")] = lambda: gated(x, mode="threshold", path="sparse")
        stack.enter_context(torch.inference_mode())
        times = interleaved(
            {f"{p}/{d}": fn for (p, d), fn in fns.items()},
            args.rounds,
            warmup=args.warmup,
            min_time=args.min_time,
            clock=args.clock,
        )
    base: Timing = times["plain/-"]
    rows = []
    for path, dec in fns:
        t = times[f"{path}/{dec}"]
        q1, q3 = t.iqr
        row = Row(batch, path, dec, 1e3 * t.median, 1e3 * q1, 1e3 * q3)
        if dec != "-":
            ex = decided[dec]
            row.skip_fraction = 1 - ex.float().mean().item()
            row.flops_saving = flops_saving(ex)
            row.realised_saving = 1 - t.median / base.median
            row.paired_saving = 1 - paired_median(t, base)
            if row.flops_saving > 0:
                row.ratio = row.realised_saving / row.flops_saving
        if (path, dec) == ("sparse", "forced") and batch in GOALS and row.ratio is not None:
            row.goal = GOALS[batch]
            row.status = "PASS" if row.ratio >= row.goal else "MISS"
        rows.append(row)
    return rows


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[Row], header: str) -> None:
    print(header)
    cols = (
        f"{'batch':>5} {'path':<6} {'decisions':<9} {'ms/batch':>9} {'IQR':>17} "
        f"{'skip':>5} {'FLOPs sav':>9} {'realised':>8} {'paired':>7} {'ratio':>6}  goal"
    )
    print(cols)
    print("-" * len(cols))
    for r in rows:
        goal = f"ratio>={r.goal:.2f} {r.status}" if r.goal is not None else ""
        print(
            f"{r.batch:>5} {r.path:<6} {r.decisions:<9} {r.ms_median:>9.2f} "
            f"{f'[{r.ms_q1:.2f}, {r.ms_q3:.2f}]':>17} {_fmt(r.skip_fraction, '.2f'):>5} "
            f"{_fmt(r.flops_saving, '.3f'):>9} {_fmt(r.realised_saving, '.3f'):>8} "
            f"{_fmt(r.paired_saving, '.3f'):>7} {_fmt(r.ratio, '.2f'):>6}  {goal}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="cifar_resnet110", help=f"one of: {', '.join(list_models())}")
    p.add_argument("--input", default=None, help="CxHxW; default 3x32x32 (CIFAR), 3x224x224")
    p.add_argument("--gate", default="rnn", choices=GATE_DESIGNS)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--skip", type=float, default=0.5, help="fraction of gated blocks skipped")
    p.add_argument("--pattern", default="per-sample", choices=("per-sample", "same"))
    p.add_argument("--own", action="store_true", help="also time the model's own decisions")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per timing sample")
    add_common_args(p)
    args = p.parse_args(argv)
    if args.smoke_test:
        args.arch, args.input, args.batch = "cifar_resnet14", "3x16x16", [1, 4]
        args.rounds, args.warmup, args.min_time, args.own = 3, 1, 0.0, True
    if not 0 <= args.skip <= 1:
        p.error("--skip is a fraction in [0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    malloc = apply_common_args(args)
    shape = parse_input(args.input) if args.input else default_input(args.arch)
    torch.manual_seed(args.seed)
    plain = build_model(args.arch, in_channels=shape[0]).eval()
    gated = build_model(args.arch, in_channels=shape[0], gate=args.gate).eval()
    # Same backbone weights: only the gates differ between the two networks.
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("gates.") for k in missing)

    rows = [r for b in args.batch for r in bench_batch(plain, gated, shape, b, args)]
    info = {
        "arch": args.arch,
        "input": "x".join(map(str, shape)),
        "gate": args.gate,
        "skip": args.skip,
        "pattern": args.pattern,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rounds": args.rounds,
        "clock": args.clock,
        "malloc": malloc,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "smoke_test": args.smoke_test,
    }
    if args.json:
        print(json.dumps({**info, "rows": [asdict(r) for r in rows]}))
        return 0
    header = (
        f"{args.arch} {info['input']} gate={args.gate} skip={args.skip:g} "
        f"pattern={args.pattern} threads={info['threads']} torch {torch.__version__} "
        f"rounds={args.rounds} clock={args.clock} malloc={malloc} "
        f"OMP_WAIT_POLICY={info['omp_wait_policy']}"
        + (" (smoke test: goals not meaningful)" if args.smoke_test else "")
    )
    print_table(rows, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
