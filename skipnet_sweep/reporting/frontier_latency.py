"""Top-1 against measured latency: the frontier a deployed network shows, each run on the
scale of the plain ResNet timed beside it, decided beyond the timings' noise."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from skipnet_sweep import metrics as M
from skipnet_sweep.pareto import NOT_FASTER, latency_intervals, speedup_verdict
from skipnet_sweep.reporting import style as S
from skipnet_sweep.reporting.common import NotEnoughData, finished, finite_rows, save
from skipnet_sweep.reporting.frontier import (
    RING,
    canvas,
    caption,
    frontier_rows,
    method_groups,
    method_handles,
    own_runs,
    runs_shown,
    scatter_runs,
    series_looks,
    step_line,
)

__all__ = ["LatencyData", "latency_figure"]

# The columns of a latency point's noise interval (``pareto.latency_intervals``).
_LOW, _HIGH = "latency_low_ms", "latency_high_ms"


@dataclass
class LatencyData:
    """Data behind :func:`latency_figure`.

    Attributes:
        points: every drawn run (top-1, latency), with ``on_frontier``.
        frontier: the latency frontier by increasing latency.
        counted_only: runs whose MACs are below the plain ResNet's but that run no faster
            than it (their savings are counted, not realised).
        files: PNG and PDF.
        figure: the drawn figure.
    """

    points: pd.DataFrame
    frontier: pd.DataFrame
    counted_only: pd.DataFrame
    files: list[Path]
    figure: Figure | None = field(default=None, repr=False)


_LATENCY_NOTE = (
    "Latency measured after each run's final evaluation, as deployed (thresholded "
    "gates, blocks skipped for real; ACT halting; SACT as it runs), beside the plain "
    "ResNet timed in the same process. Bars: the interquartile range of its "
    "round-by-round speed-up; a run leaves the frontier only for one at least as "
    "accurate and faster beyond both bars."
)
_LATENCY_SERIES_NOTE = (
    "Colour: the sweep or experiment, each on its own plain ResNet's scale (its "
    "timings are of its own hardware), its frontier the line of that colour; "
    "marker: the method. Published baselines report MACs, not times: see the "
    "MACs axis."
)


def latency_figure(
    runs: pd.DataFrame, out_stem: str | Path, *, batch: int = 1, series: str | None = None
) -> LatencyData:
    """Top-1 against measured latency at ``batch`` images per call: the frontier a user who
    deploys the networks sees, beside the MACs frontier of
    :func:`.frontier_macs.pareto_figure`. Each run's latency is put on one scale, its time
    over the plain ResNet timed beside it in its own process times the median plain time of
    its dataset and backbone (``pareto.comparable_latency``, as the sweep's latency
    frontier); those medians are the dashed references. Each run's bar is the interquartile range of its round-by-round
    speed-up on that scale, and the frontier leaves out only runs beaten beyond it, as the
    sweep's does. A run whose MACs are below the plain ResNet's but that is not faster than
    its reference beyond that noise is drawn with a cross and named in the caption.

    With ``series`` (a comparison), each series keeps its own scale (its own plain ResNet's
    median: sweeps timed on different hardware stay on their own) and has its own frontier
    and reference in its colour (:func:`.style.series_style`); markers give the method.

    Args:
        runs: from ``load_runs``.
        out_stem: writes ``<stem>.png`` and ``<stem>.pdf``.
        batch: the batch size whose latency is drawn (``latency_ms_b<batch>``).
        series: the column naming each run's series; None: the runs are one study.
    """
    lat, plain_lat = M.latency_ms(batch), M.latency_plain_ms(batch)
    if lat not in runs.columns or plain_lat not in runs.columns:
        raise NotEnoughData(f"no run has {lat} (runs from before latency was measured)")
    pts = finite_rows(finished(runs), M.TOP1, lat)
    if pts.empty:
        raise NotEnoughData(f"no finished run with top1 and {lat}")
    pts, slower = _on_one_scale(pts.copy(), batch, series)
    if pts.empty:
        raise NotEnoughData(f"no finished run has both {lat} and {plain_lat}")
    frontier = frontier_rows(pts, lat, series, interval=(_LOW, _HIGH))
    macs_saved = pd.to_numeric(pts[M.FLOPS_MEAN], errors="coerce") < 0.95 * pd.to_numeric(
        pts[M.FLOPS_PLAIN], errors="coerce"
    )
    counted_only = pts[macs_saved & slower]
    # The plain ResNet's median time per (series,) dataset and backbone: the references.
    references = {
        key: float(pd.to_numeric(grp[plain_lat], errors="coerce").median())
        for key, grp in pts.groupby(_timing_groups(series), sort=False)
    }
    with canvas() as (fig, ax):
        handles = _latency_series(ax, pts, frontier, counted_only, references, lat, series)
        ax.scatter(frontier[lat], frontier[M.TOP1], zorder=4, **RING)
        handles += method_handles(pts, series)
        ax.set_xlabel(
            f"Latency per batch of {batch} (ms, median)\neach run over the plain ResNet timed "
            "beside it, times the plain ResNet's median"
        )
        ax.set_ylabel(S.top1_label(pts))
        ax.set_title(
            S.title(
                "Top-1 accuracy vs. measured latency",
                dataset=sorted(pts[M.PARAM_DATASET].dropna().unique()),
                backbones=sorted(pts[M.PARAM_ARCH].dropna().unique()),
                shown=runs_shown(pts, series, "runs", f", batch {batch}"),
            )
        )
        notes = [_LATENCY_NOTE, *([_LATENCY_SERIES_NOTE] if series is not None else [])]
        if len(counted_only):
            names = ", ".join(str(n) for n in counted_only["run_name"].head(6))
            notes.append(
                f"X: MACs below the plain ResNet's but no faster in wall time beyond the noise "
                f"(savings counted, not realised): {names}"
                + (" ..." if len(counted_only) > 6 else "")
            )
        caption(fig, handles, notes)
        files = save(fig, out_stem)
    return LatencyData(pts, frontier, counted_only, files, figure=fig)


def _timing_groups(series: str | None) -> list[str]:
    """The columns whose runs share one latency scale: (series,) dataset and backbone."""
    return [*([series] if series is not None else []), M.PARAM_DATASET, M.PARAM_ARCH]


def _on_one_scale(
    pts: pd.DataFrame, batch: int, series: str | None
) -> tuple[pd.DataFrame, pd.Series]:
    """The runs with a latency on the frontier's scale and its noise interval (``_LOW``,
    ``_HIGH``), and whether each is no faster than the plain ResNet timed beside it."""
    lat, plain_lat = M.latency_ms(batch), M.latency_plain_ms(batch)
    # Each run against the plain ResNet timed beside it, on the median plain time of its
    # dataset and backbone (raw milliseconds of separate processes carry their own load); the
    # same scale as the sweep's latency frontier.
    plain_ms = pd.to_numeric(pts[plain_lat], errors="coerce")

    def column(name: str) -> list[float | None]:
        if name not in pts.columns:  # runs timed before quartiles were kept
            return [None] * len(pts)
        return [None if pd.isna(v) else float(v) for v in pd.to_numeric(pts[name], "coerce")]

    q1, q3 = column(M.speedup_q1(batch)), column(M.speedup_q3(batch))
    # Not faster than the plain ResNet timed beside it, beyond the timing's noise (in the
    # same process, so on the raw times; runs without a speed-up metric: by those alone).
    speed = [
        s if s is not None else r / v
        for s, r, v in zip(column(M.speedup(batch)), plain_ms, pts[lat].astype(float), strict=True)
    ]
    slower = pd.Series([speedup_verdict(*v) == NOT_FASTER for v in zip(speed, q1, q3, strict=True)])
    groups = list(pts[_timing_groups(series)].itertuples(index=False, name=None))
    bounds = latency_intervals(
        pts[lat].astype(float).tolist(), plain_ms.tolist(), groups, list(zip(q1, q3, strict=True))
    )
    pts[lat] = [v for _, v, _ in bounds]
    pts[_LOW], pts[_HIGH] = [lo for lo, _, _ in bounds], [hi for *_, hi in bounds]
    keep = [math.isfinite(v) for v in pts[lat]]
    return pts[keep].reset_index(drop=True), slower[keep].reset_index(drop=True)


def _latency_series(
    ax: Any,
    pts: pd.DataFrame,
    frontier: pd.DataFrame,
    counted_only: pd.DataFrame,
    references: dict[tuple, float],
    lat: str,
    series: str | None,
) -> list[Any]:
    """Each series' runs with their bars (a cross: counted only), its frontier and its
    plain ResNets' reference times; returns their legend entries."""
    handles: list[Any] = []
    for name, colour, linestyle in series_looks(pts, series):
        for method, grp, st, face in method_groups(pts, series, name, colour):
            slow = grp.index.isin(counted_only.index)
            ax.errorbar(grp[lat], grp[M.TOP1], xerr=[grp[lat] - grp[_LOW],
                        grp[_HIGH] - grp[lat]], fmt="none", ecolor=face, alpha=0.5,
                        linewidth=0.8, zorder=2)  # fmt: skip
            scatter_runs(ax, grp[lat][~slow], grp[M.TOP1][~slow], st, face,
                         f"runs:{name}:{method}")  # fmt: skip
            if slow.any():
                ax.scatter(grp[lat][slow], grp[M.TOP1][slow], marker="X", s=44, color=face,
                           zorder=3, gid=f"slow:{name}:{method}")  # fmt: skip
        own = own_runs(frontier, series, name)
        step_line(ax, own, lat, None, color=colour, linestyle=linestyle, linewidth=1.0,
                  gid=f"frontier:{name}")  # fmt: skip
        label = "latency frontier" if series is None else f"{name}: latency frontier"
        handles.append(Line2D([], [], color=colour, linestyle=linestyle, label=label))
        handles += _reference_lines(ax, references, series, name, colour)
    return handles


def _reference_lines(
    ax: Any, references: dict[tuple, float], series: str | None, name: Any, colour: str
) -> list[Line2D]:
    """A series' plain ResNet median times as dotted vertical lines; their legend entries."""
    handles = []
    for key, reference in references.items():
        if series is not None and key[0] != name:
            continue
        dataset, arch = key[-2:]
        if not math.isfinite(reference):
            continue
        if series is not None:
            which = f"{name}: plain {S.backbone_label(arch)}"
        elif len(references) > 1:
            which = f"plain {arch} on {dataset}"
        else:
            which = "plain ResNet"
        line = "0.5" if series is None else colour
        ax.axvline(reference, color=line, linestyle=":", linewidth=1.0)
        label = f"{which}, {reference:.3g} ms"
        handles.append(Line2D([], [], color=line, linestyle=":", label=label))
    return handles
