"""Wall-clock latency of a trained network as a user would deploy it, against the plain ResNet.

FLOPs say what skipping could save; latency says what it does save on the machine at hand
(per-gate overhead, gather/scatter and kernel launches are invisible to FLOPs; see
docs/benchmarks.md). ``measure_latency`` times a copy of the network as deployed (eval
mode, each BatchNorm folded into its convolution: ``models.folded``) under
``torch.inference_mode`` through the call evaluation makes (``stages/evaluate.py``:
thresholded gates, sparse path), so SkipNets run only the blocks their gates open and
ACT/SACT networks their own halting forward. Beside it, in the same process, the plain ResNet
of the same backbone is timed call for call, the two alternating in an order that flips every
round, so drift in the machine's speed hits both alike. The times are medians over repeats,
robust to the odd slow call (a page fault, another process's burst); the speed-up is the
median of each round's ratio, reported with its interquartile range, which says how far a
loaded machine moves it (docs/benchmarks.md section 6).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from skipnet_sweep import metrics as M
from skipnet_sweep.models import build_from_config, folded, input_layout, model_input

__all__ = [
    "measure_latency",
    "plain_reference",
    "quartiles",
    "synchronizer",
    "time_interleaved",
]


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) of ``values`` (all three the value itself
    when there is one)."""
    if len(values) == 1:
        return (values[0],) * 3
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """A function that waits for the work queued on ``device`` (CUDA runs asynchronously: a
    timer read without it measures the launch, not the work); a no-op elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    warmup: int,
    repeats: int,
    sync: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Time each of ``fns`` once per round, the order flipping every round.

    Args:
        fns: alternatives by name; each call does one unit of work.
        warmup: untimed rounds first (allocator, caches, cuDNN's algorithm choice).
        repeats: timed rounds.
        sync: waits for queued device work; called before and after every timed call.
        clock: seconds, monotonic.

    Returns:
        per alternative, the seconds of each timed call, in round order.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync()
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            sync()
            t0 = clock()
            fns[name]()
            sync()
            out[name].append(clock() - t0)
    return out


def plain_reference(model: nn.Module) -> nn.Module:
    """The plain ResNet of ``model``'s backbone, built by the registry (fresh weights: the
    time of a network without gates does not depend on its weights). The global RNG is left
    as it was, so timing a run does not change what follows it."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(
            "the model carries no ModelConfig (build it with the model registry) and no "
            "reference was given: pass reference= the plain network to compare with"
        )
    with torch.random.fork_rng(devices=[]):
        return build_from_config(config.plain())


def _batch(
    images: Tensor | None, batch: int, shape: Sequence[int], device, layout: torch.memory_format
) -> Tensor:
    """``batch`` images: the given ones, repeated if there are fewer, else seeded noise."""
    if images is None:
        gen = torch.Generator().manual_seed(0)
        return model_input(torch.randn(batch, *shape, generator=gen), device, layout)
    if tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(
            f"images have shape {tuple(images.shape[1:])}, expected input_shape {tuple(shape)}"
        )
    reps = -(-batch // images.shape[0])
    return model_input(images.repeat(reps, *([1] * len(shape)))[:batch], device, layout)


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | torch.device = "cpu",
    batch_sizes: Iterable[int] = (1, 64),
    warmup: int = 5,
    repeats: int = 20,
    reference: nn.Module | None = None,
    images: Tensor | None = None,
    path: str = "sparse",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Latency of ``model`` and of the plain ResNet, per batch size, and the speed-up.

    Args:
        model: the network (not wrapped for data parallelism), already on ``device``; called
            as evaluation calls it, ``model(x, mode="threshold", path=path)``.
        input_shape: (C, H, W) of one image.
        device: where the model runs.
        batch_sizes: batch sizes to time; empty measures nothing.
        warmup: untimed rounds per batch size.
        repeats: timed rounds per batch size (medians and quartiles are over them).
        reference: the network to compare with; default ``plain_reference(model)``. It is
            called the same way; its copy is put on ``device``. Both are timed as folded copies
            (``models.folded``) in the layout the stages train and evaluate in
            (``models.input_layout``); neither network is changed.
        images: (N, C, H, W) images to time on (a SkipNet's decisions, and so its time,
            depend on them): the first ``b`` (repeated if N < b); None for seeded noise.
        path: the execution path, ``sparse`` (skipped blocks are not computed) by default.
        clock: seconds, monotonic (a test may inject its own).

    Returns:
        ``{latency_ms(b), latency_plain_ms(b), speedup(b), speedup_q1(b), speedup_q3(b)}``
        for every batch size (names in ``skipnet_sweep.metrics``): the median times, and the
        median and quartiles over rounds of the round's plain / model.

    Raises:
        ValueError: a batch size < 1, warmup < 0, repeats < 1 or images of another shape.
    """
    sizes = list(batch_sizes)
    if any(b < 1 for b in sizes) or warmup < 0 or repeats < 1:
        raise ValueError(
            f"need batch sizes >= 1, warmup >= 0 and repeats >= 1, got batch_sizes={sizes}, "
            f"warmup={warmup}, repeats={repeats}"
        )
    if not sizes:
        return {}
    reference = plain_reference(model) if reference is None else reference
    # Both as deployed (copies in eval mode, BatchNorm folded into the convolutions) and in
    # the layout the stages keep the network in.
    layout = input_layout(model)
    nets = {"model": folded(model), "plain": folded(reference).to(device)}
    sync = synchronizer(device)
    out: dict[str, float] = {}
    with torch.inference_mode():
        for b in sizes:
            x = _batch(images, b, input_shape, device, layout)
            times = time_interleaved(
                {
                    name: (lambda net=net, x=x: net(x, mode="threshold", path=path))
                    for name, net in nets.items()
                },
                warmup=warmup,
                repeats=repeats,
                sync=sync,
                clock=clock,
            )
            out[M.latency_ms(b)] = statistics.median(times["model"]) * 1e3
            out[M.latency_plain_ms(b)] = statistics.median(times["plain"]) * 1e3
            # Per round: the two calls ran side by side, so the ratio cancels the machine's
            # drift between rounds.
            ratios = [
                p / m if m > 0 else float("nan")
                for p, m in zip(times["plain"], times["model"], strict=True)
            ]
            q1, median, q3 = quartiles(ratios)
            out[M.speedup(b)], out[M.speedup_q1(b)], out[M.speedup_q3(b)] = median, q1, q3
    return out
