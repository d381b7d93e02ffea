"""Interleaved wall-clock timing shared by the benchmarks.

The machine the benchmarks run on is shared, so its speed drifts while they run. Timing the
alternatives one after the other (all of A, then all of B) would let that drift decide the
comparison; instead every round times each alternative once, in an order that rotates from
round to round, and the figures are medians over rounds. Ratios are also given per round
(the alternatives of one round ran seconds apart, under nearly the same load).

The clock is wall time by default. ``cpu`` (this process's CPU time) is a cross-check that
time spent descheduled by other processes' load does not inflate; it equals wall time only
on one thread (with more, it adds the threads' times, idle spinning included), so use it
with ``--threads 1``.

Memory: glibc's malloc serves large blocks (a batch of activations is megabytes) with mmap
and returns freed heap to the kernel, so a forward pass can spend a large part of its time
in page faults, and how much depends on the order of allocations, not on the work (on the
2-core benchmark machine a plain ResNet-110 batch of 64 took up to twice as long as with
the memory kept; the masked path, which computes more, came out *faster* than the plain
network). ``keep_freed_memory`` keeps freed memory in the process (what jemalloc or
tcmalloc, recommended for PyTorch on CPU, do anyway), so the timings compare computation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from skipnet_sweep.models import list_models

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class Timing:
    """Seconds per call of one alternative, one entry per round."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def iqr(self) -> tuple[float, float]:
        """First and third quartiles (equal to the median with fewer than two rounds)."""
        if len(self.samples) < 2:
            return self.median, self.median
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q1, q3


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve blocks up to 32 MiB from the heap and never to trim it
    (``mallopt(M_MMAP_THRESHOLD)``, ``mallopt(M_TRIM_THRESHOLD)``). Returns whether it
    applied (False where the C library is not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def calls_per_sample(fn: Callable[[], object], min_time: float) -> int:
    """How many consecutive calls make one timing sample last at least ``min_time`` seconds
    (short calls are repeated so the timer's resolution and one-off hiccups matter less)."""
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-6)
    return max(1, math.ceil(min_time / once))


def interleaved(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    *,
    warmup: int = 2,
    min_time: float = 0.05,
    clock: str = "wall",
) -> dict[str, Timing]:
    """Time each of ``fns`` once per round, rotating the order every round.

    Args:
        fns: alternatives by name; each call does one unit of work (a batch, a step).
        rounds: timing rounds.
        warmup: untimed calls of each alternative first (allocator, caches, lazy init).
        min_time: each sample repeats a call until it lasts at least this long (seconds).
        clock: ``wall`` or ``cpu`` (see the module docstring).

    Returns:
        per alternative, the seconds per call of each round.
    """
    now = CLOCKS[clock]
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    reps = {name: calls_per_sample(fns[name], min_time) for name in names}
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn, n = fns[name], reps[name]
            t0 = now()
            for _ in range(n):
                fn()
            out[name].append((now() - t0) / n)
    return {name: Timing(v) for name, v in out.items()}


def paired_median(a: Timing, b: Timing) -> float:
    """Median over rounds of ``a / b`` (both timed in the same round)."""
    return statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))


def add_common_args(parser) -> None:
    """The options every benchmark takes: threads, allocator, clock, seed, output."""
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--malloc",
        default="keep",
        choices=("keep", "glibc"),
        help="keep: keep freed memory (default, see _timing); glibc: the C library's defaults",
    )
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"), help="cpu: see _timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--smoke-test", action="store_true", help="tiny configuration, seconds")


def apply_common_args(args) -> str:
    """Act on ``add_common_args``' process-wide options: torch's threads and the allocator.
    Returns the allocator in effect (``keep``, or ``glibc`` where it could not be kept)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return "keep" if args.malloc == "keep" and keep_freed_memory() else "glibc"


def add_network_args(parser, *, arch: str, rounds: int) -> None:
    """The workload of a benchmark over one network: architecture, input, batch, rounds."""
    parser.add_argument("--arch", default=arch, help=f"one of: {', '.join(list_models())}")
    parser.add_argument(
        "--input", default="1x28x28", help="CxHxW: 1x28x28 (Fashion-MNIST), 3x32x32"
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--warmup", type=int, default=2)


def apply_smoke_test(args, *, rounds: int) -> None:
    """``--smoke-test``: ResNet-8 on 1x16x16, batch 8, ``rounds`` rounds after one warm-up."""
    if args.smoke_test:
        args.arch, args.input, args.batch, args.rounds, args.warmup = (
            "cifar_resnet8",
            "1x16x16",
            8,
            rounds,
            1,
        )


def report(
    args,
    malloc: str,
    rows: list,
    cols: str,
    line: Callable[[Any], str],
    *,
    omp_wait_policy: bool = False,
    meaningless: str = "figures",
) -> int:
    """Print a network benchmark's rows: one JSON object (``--json``), or a header line with
    what they were measured under, then the ``cols`` title and a ``line`` per row."""
    info = {
        "arch": args.arch,
        "input": args.input,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rounds": args.rounds,
        "clock": args.clock,
        "malloc": malloc,
    }
    if omp_wait_policy:
        info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "unset")
    info["smoke_test"] = args.smoke_test
    if args.json:
        print(json.dumps({**info, "rows": [asdict(r) for r in rows]}))
        return 0
    print(
        f"{args.arch} {args.input} batch={args.batch} threads={info['threads']} "
        f"torch {torch.__version__} rounds={args.rounds} clock={args.clock} malloc={malloc}"
        + (f" OMP_WAIT_POLICY={info['omp_wait_policy']}" if omp_wait_policy else "")
        + (f" (smoke test: {meaningless} not meaningful)" if args.smoke_test else "")
    )
    print(cols)
    print("-" * len(cols))
    for r in rows:
        print(line(r))
    return 0
