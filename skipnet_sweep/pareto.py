"""Pareto frontier and hypervolume of (MACs, top-1) points, and the latency axis of the
measured-latency frontier, decided beyond the timings' noise.

A point is ``(macs, top1)``: multiply-adds per image (lower is better) and top-1 accuracy
in percent (higher is better). Pure functions over plain numbers, so the sweep (which
tags runs ``pareto=true``) and ``reporting/`` (which draws the frontier) agree by
construction.

Conventions, chosen so that every caller gets the same answer:

- ``q`` dominates ``p`` when ``q.macs <= p.macs`` and ``q.top1 >= p.top1`` with at least
  one strict inequality. Exact duplicates therefore never dominate each other: when one
  copy is on the frontier, every copy is.
- Points with a NaN or infinite coordinate are never on the frontier and never add area.
- The frontier is returned in increasing MACs (ties, i.e. duplicates, by input index), the
  order in which it is drawn as a step line.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Iterable, Sequence

Point = tuple[float, float]  # (macs, top1)

__all__ = [
    "FASTER",
    "NOT_FASTER",
    "TOO_NOISY",
    "Point",
    "comparable_latency",
    "format_hypervolume",
    "hypervolume",
    "interval_front",
    "latency_intervals",
    "normalised_hypervolume",
    "pareto_front",
    "pareto_mask",
    "speedup_verdict",
]

# Whether a network runs faster than the plain ResNet timed beside it, told beyond the noise
# of the timing: the interquartile range of its round-by-round speed-up lies above 1 (faster),
# at or below 1 (not faster), or spans 1 (too noisy to tell).
FASTER, NOT_FASTER, TOO_NOISY = "faster", "not faster", "too noisy"


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def speedup_verdict(speedup: float | None, q1: float | None, q3: float | None) -> str | None:
    """``FASTER``, ``NOT_FASTER`` or ``TOO_NOISY`` from a speed-up and its quartiles over the
    timed rounds (``latency.measure_latency``); a run without quartiles is told by its
    speed-up alone. None for a run that was not timed."""
    if not _finite(speedup):
        return None
    lo, hi = (q1, q3) if _finite(q1, q3) else (speedup, speedup)
    if lo > 1.0:
        return FASTER
    if hi <= 1.0:
        return NOT_FASTER
    return TOO_NOISY


def comparable_latency(
    latency_ms: Sequence[float | None],
    plain_ms: Sequence[float | None],
    groups: Sequence[Hashable] | None = None,
) -> list[float]:
    """Latencies of runs timed in separate processes, on one scale for a frontier: each run's
    time over the plain ResNet's timed call for call beside it (``latency.measure_latency``),
    times the median of the plain timings of its group (its backbone and dataset: a ResNet-110
    stays on ResNet-110's scale, a ResNet-38 on its own). The raw milliseconds are not
    comparable across runs: each carries its process's load (trials share the machine, or
    not) and the machine's drift, which the in-process ratio cancels (docs/benchmarks.md
    section 6). NaN where a run lacks either timing.

    Args:
        latency_ms: each run's own time.
        plain_ms: the plain ResNet's time in the same process.
        groups: each run's group (e.g. ``(dataset, backbone)``); None: one group.
    """

    def valid(lat: float | None, ref: float | None) -> bool:
        return lat is not None and ref is not None and math.isfinite(lat) and ref > 0

    pairs = list(zip(latency_ms, plain_ms, strict=True))
    keys = [None] * len(pairs) if groups is None else list(groups)
    if len(keys) != len(pairs):
        raise ValueError(f"{len(keys)} groups for {len(pairs)} runs")
    refs: dict[Hashable, list[float]] = {}
    for key, (lat, ref) in zip(keys, pairs, strict=True):
        if valid(lat, ref):
            refs.setdefault(key, []).append(ref)
    scale = {key: statistics.median(values) for key, values in refs.items()}
    return [
        scale[key] * lat / ref if valid(lat, ref) else math.nan
        for key, (lat, ref) in zip(keys, pairs, strict=True)
    ]


def latency_intervals(
    latency_ms: Sequence[float | None],
    plain_ms: Sequence[float | None],
    groups: Sequence[Hashable] | None = None,
    spread: Sequence[tuple[float | None, float | None]] | None = None,
) -> list[tuple[float, float, float]]:
    """Each run's latency on the scale of ``comparable_latency`` with the interval its
    timing's noise gives it: (low, value, high). A speed-up whose round-by-round quartiles are
    ``(q1, q3)`` (``spread``, plain / network) puts the run's time over its reference between
    1 / q3 and 1 / q1 of its plain time; the interval is widened to hold the value itself.
    Without quartiles the interval is the value alone; NaN where the run lacks a timing."""
    values = comparable_latency(latency_ms, plain_ms, groups)
    spread = list(spread) if spread is not None else [(None, None)] * len(values)
    out = []
    for value, lat, ref, (q1, q3) in zip(values, latency_ms, plain_ms, spread, strict=True):
        if not (math.isfinite(value) and _finite(q1, q3) and q1 > 0 and lat > 0):
            out.append((value, value, value))
            continue
        scale = value * ref / lat  # the group's plain time: value = scale * lat / ref
        out.append((min(value, scale / q3), value, max(value, scale / q1)))
    return out


def interval_front(intervals: Sequence[tuple[float, float]], top1: Sequence[float]) -> list[int]:
    """Indices of the runs that no other run beats beyond the noise: ``q`` beats ``p`` when
    it is at least as accurate and its whole latency interval lies below ``p``'s (or it is
    more accurate and its interval ends where ``p``'s starts). Runs whose intervals overlap
    stay on the frontier together: their timings cannot tell which is faster. Without noise
    (intervals of one value) this is ``pareto_front``.

    Args:
        intervals: ``(low, high)`` latency of each run (``latency_intervals``).
        top1: each run's accuracy.

    Returns:
        Indices by increasing low end of the interval, then by index; runs with a NaN
        latency or accuracy are never on it.
    """
    rows = [(lo, hi, acc) for (lo, hi), acc in zip(intervals, top1, strict=True)]
    ok = [i for i, r in enumerate(rows) if _finite(*r)]

    def beats(q: tuple, p: tuple) -> bool:
        return (q[2] >= p[2] and q[1] < p[0]) or (q[2] > p[2] and q[1] <= p[0])

    front = [i for i in ok if not any(beats(rows[j], rows[i]) for j in ok if j != i)]
    return sorted(front, key=lambda i: (rows[i][0], -rows[i][2], i))


def _as_points(points: Iterable[Sequence[float]]) -> list[Point]:
    out = []
    for i, p in enumerate(points):
        if len(p) != 2:
            raise ValueError(f"point {i} has {len(p)} coordinates, expected (macs, top1)")
        out.append((float(p[0]), float(p[1])))
    return out


def _finite_point(p: Point) -> bool:
    return math.isfinite(p[0]) and math.isfinite(p[1])


def pareto_front(points: Iterable[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (maximise top-1, minimise MACs).

    Args:
        points: ``(macs, top1)`` pairs (a list of tuples, an ``(N, 2)`` array, ...).

    Returns:
        Indices into ``points``, sorted by increasing MACs, then by index. Duplicates of a
        frontier point are all included; points with NaN/inf coordinates never are. A
        single finite point is its own frontier; no finite point gives ``[]``.
    """
    pts = _as_points(points)
    # Increasing MACs, and at equal MACs the most accurate first: every point that could
    # dominate a point comes before it in this order.
    order = sorted(
        (i for i, p in enumerate(pts) if _finite_point(p)),
        key=lambda i: (pts[i][0], -pts[i][1], i),
    )
    front: list[int] = []
    best_top1 = -math.inf
    best_macs = math.inf  # the fewest MACs that reach best_top1 (the first point to reach it)
    for i in order:
        macs, top1 = pts[i]
        if top1 > best_top1:
            best_top1, best_macs = top1, macs
            front.append(i)
        elif top1 == best_top1 and macs == best_macs:
            front.append(i)  # an exact duplicate of a frontier point
    return front


def pareto_mask(points: Iterable[Sequence[float]]) -> list[bool]:
    """``mask[i]`` is True when point ``i`` is on the frontier (see :func:`pareto_front`)."""
    pts = _as_points(points)
    on = set(pareto_front(pts))
    return [i in on for i in range(len(pts))]


def hypervolume(points: Iterable[Sequence[float]], ref_macs: float, ref_top1: float = 0.0) -> float:
    """Area dominated by the points inside the box bounded by the reference point.

    The area is that of the union of the rectangles ``[macs, ref_macs] x [ref_top1, top1]``,
    one per point, in units of MACs x percent. A point costlier than ``ref_macs`` or less
    accurate than ``ref_top1`` has an empty rectangle and adds nothing; only the part of
    each rectangle inside the box counts.

    Args:
        points: ``(macs, top1)`` pairs.
        ref_macs: the MACs bound (the sweep uses the plain ResNet's ``flops_plain``).
        ref_top1: the accuracy bound, in percent (default 0).

    Returns:
        The area (``0.0`` when no finite point lies inside the box).
    """
    if not (math.isfinite(ref_macs) and math.isfinite(ref_top1)):
        raise ValueError(f"reference point must be finite, got ({ref_macs}, {ref_top1})")
    pts = [p for p in _as_points(points) if _finite_point(p)]
    inside = [p for p in pts if p[0] <= ref_macs and p[1] >= ref_top1]
    area = 0.0
    level = ref_top1
    # Along the frontier top-1 increases with MACs; each point adds the horizontal strip
    # between the previous accuracy level and its own, from its MACs to ref_macs.
    for i in pareto_front(inside):
        macs, top1 = inside[i]
        area += (ref_macs - macs) * (top1 - level)
        level = top1
    return area


def normalised_hypervolume(points: Iterable[Sequence[float]], plain_macs: float) -> float:
    """Hypervolume as a fraction of the plain ResNet's box, the one form the project reports.

    The box is top-1 in [0, 100] x MACs in [0, plain_macs]: a method that kept 100 % top-1
    at zero MACs would score 1, the plain ResNet itself scores (its top-1) / 100 x 0 = 0,
    and the number compares across datasets and backbones, unlike MACs x percent.

    Args:
        points: ``(macs, top1)`` pairs, top-1 in percent.
        plain_macs: the plain ResNet's multiply-adds per image (the ``flops_plain`` metric).

    Returns:
        A number in [0, 1].

    Raises:
        ValueError: ``plain_macs`` is not a finite positive number.
    """
    if not (math.isfinite(plain_macs) and plain_macs > 0):
        raise ValueError(f"plain_macs must be a finite positive number of MACs, got {plain_macs}")
    # Clip top-1 to 100 so a value past the box (bad input) cannot push the fraction past 1.
    clipped = [(p[0], min(p[1], 100.0)) for p in _as_points(points)]
    return hypervolume(clipped, plain_macs, 0.0) / (plain_macs * 100.0)


def format_hypervolume(value: float) -> str:
    """The printed form of :func:`normalised_hypervolume` everywhere (figures, summary,
    terminal): ``HV 0.712``."""
    return f"HV {value:.3f}"
