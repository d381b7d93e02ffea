"""The Pareto figure: top-1 against MACs of every run, the frontier, its normalised
hypervolume, and published baselines (SkipNet's Fig. 7 when the runs are ImageNet
ResNet-101 and the baselines ACT/SACT)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from skipnet_sweep import metrics as M
from skipnet_sweep.pareto import (
    NOT_FASTER,
    format_hypervolume,
    interval_front,
    latency_intervals,
    normalised_hypervolume,
    pareto_front,
    speedup_verdict,
)
from skipnet_sweep.reporting import style as S
from skipnet_sweep.reporting.baselines import RELATED, matching
from skipnet_sweep.reporting.common import (
    NotEnoughData,
    finished,
    finite_rows,
    new_figure,
    note,
    save,
    short_source,
)
from skipnet_sweep.reporting.labels import place_labels

__all__ = ["LatencyData", "ParetoData", "latency_figure", "pareto_figure"]

# The ring around a frontier point, and how faint a related-backbone published point is.
_RING = {"marker": "o", "s": 120, "facecolors": "none", "edgecolors": "0.1", "linewidths": 0.9}
_RELATED_ALPHA = 0.6
# The columns of a latency point's noise interval (``pareto.latency_intervals``).
_LOW, _HIGH = "latency_low_ms", "latency_high_ms"


@dataclass
class ParetoData:
    """Data behind :func:`pareto_figure`.

    Attributes:
        points: every drawn run, with a boolean ``on_frontier`` column (of its series').
        frontier: the frontier runs by increasing MACs (also written as ``<stem>.csv``); in
            a comparison, each series' frontier in turn.
        hypervolume: :func:`skipnet_sweep.pareto.normalised_hypervolume` of all the runs, a
            fraction in [0, 1] of the box top-1 [0, 100] x MACs [0, ``ref_macs``].
        ref_macs: the plain ResNet's MACs bounding that box (``flops_plain``).
        baselines_plotted: published rows drawn, with ``match`` (``exact``: the runs'
            backbone, drawn hollow; ``related``: a related backbone, drawn hollow and
            faint, named in the caption) and ``run_backbone``.
        baselines_listed: matching published rows without MACs (listed in the note).
        notes: the caption under the plot.
        files: PNG, PDF, CSV.
        figure: the drawn figure.
        series_hypervolume: in a comparison, each series' own hypervolume in the same box.
    """

    points: pd.DataFrame
    frontier: pd.DataFrame
    hypervolume: float
    ref_macs: float
    baselines_plotted: pd.DataFrame
    baselines_listed: pd.DataFrame
    notes: list[str]
    files: list[Path]
    figure: Figure | None = field(default=None, repr=False)
    series_hypervolume: dict[str, float] = field(default_factory=dict)


def _method_handles(pts: pd.DataFrame, series: str | None) -> list[Line2D]:
    """One legend entry per method drawn (plain first); grey when colour marks the series."""
    methods = sorted(pts[M.TAG_METHOD].dropna().unique(), key=lambda m: (m != "plain", m))
    handles = []
    for m in methods:
        st = S.method_style(m, pts)
        handles.append(
            Line2D([], [], linestyle="none", marker=st.marker,
                   color=st.color if series is None else "0.35", markeredgecolor="white",
                   markersize=6, label=st.label)
        )  # fmt: skip
    return handles


def _published_notes(published: pd.DataFrame, listed: pd.DataFrame) -> list[str]:
    notes = []
    related = published[published["match"] == RELATED]
    for (backbone, run_backbone), grp in related.groupby(["backbone", "run_backbone"]):
        methods = ", ".join(sorted({S.method_style(m).label for m in grp["method"]}))
        sources = "; ".join(sorted({short_source(s) for s in grp["source"]}))
        notes.append(
            f"Hollow, faint: published {methods} on {S.backbone_label(backbone)}, a backbone "
            f"related to the runs' {S.backbone_label(run_backbone)} (same dataset and depth, "
            f"pre-activation blocks) [{sources}]. Filled: this platform's runs on "
            f"{S.backbone_label(run_backbone)}. Compare trends, not exact values."
        )
    for _, r in listed.iterrows():
        notes.append(
            f"Not plotted (no MACs): {S.method_style(r.method).label} "
            f"{S.backbone_label(r.backbone)}, top-1 {r.top1:g}%"
            + (f", {r.setting}" if r.setting else "")
            + f" [{short_source(r.source)}]."
        )
    return notes


def _series_order(pts: pd.DataFrame, series: str | None) -> list[Any]:
    """The series of a comparison in the order their runs come; [None]: all runs are one."""
    return [None] if series is None else list(dict.fromkeys(pts[series]))


def _own(pts: pd.DataFrame, series: str | None, name: Any) -> pd.DataFrame:
    return pts if series is None else pts[pts[series] == name]


def _frontier_rows(
    pts: pd.DataFrame, x: str, series: str | None, interval: tuple[str, str] | None = None
) -> pd.DataFrame:
    """Marks each run ``on_frontier`` of its own series (top-1 against ``x``; with
    ``interval``, the columns of ``x``'s low and high ends, beyond their noise:
    ``pareto.interval_front``) and returns those runs, by series and increasing ``x``."""
    pts["on_frontier"] = False
    order = _series_order(pts, series)
    for name in order:
        grp = _own(pts, series, name)
        if interval is None:
            front = pareto_front(grp[[x, M.TOP1]].to_numpy(dtype=float))
        else:
            bounds = grp[list(interval)].to_numpy(dtype=float).tolist()
            front = interval_front(bounds, grp[M.TOP1].astype(float).tolist())
        pts.loc[grp.index[front], "on_frontier"] = True
    rank = 0 if series is None else pts[series].map({n: i for i, n in enumerate(order)})
    # Stable, so ties keep pareto_front's order (duplicates by index).
    return (
        pts[pts["on_frontier"]]
        .assign(_rank=rank)
        .sort_values(["_rank", x], kind="stable")
        .drop(columns="_rank")
        .reset_index(drop=True)
    )


def _step(ax: Any, frontier: pd.DataFrame, x: str, x_right: float | None, **kw: Any) -> list:
    """A frontier as a step line (on to ``x_right`` at its best top-1); returns its corners."""
    fx, fy = list(frontier[x]), list(frontier[M.TOP1])
    if x_right is not None:
        fx, fy = [*fx, x_right], [*fy, fy[-1]]
    ax.step(fx, fy, where="post", zorder=2, **kw)
    corners = [(fx[0], fy[0])]
    for x1, y0, y1 in zip(fx[1:], fy[:-1], fy[1:], strict=True):
        corners += [(x1, y0), (x1, y1)]
    return corners


_SERIES_NOTE = (
    "Colour: the sweep or experiment, its frontier the line of that colour (HV: the share of "
    "the largest plain ResNet's box its runs dominate); marker: the method."
)


def pareto_figure(
    runs: pd.DataFrame,
    out_stem: str | Path,
    *,
    baselines: pd.DataFrame | None = None,
    flops_unit: str = "M",
    ref_macs: float | None = None,
    top1_range: float | None = 30.0,
    title: str | None = None,
    series: str | None = None,
) -> ParetoData:
    """Top-1 against mean MACs per image for every finished run of one dataset.

    One colour and marker per method (:func:`.style.method_style`), filled; a ring around
    each frontier point; alpha beside each HRL point, tau beside ACT/SACT, "SP"/"soft"
    beside SP runs (and the backbone when there are several). The frontier over all runs is
    a step line, its normalised hypervolume in the legend. Published rows of the same
    dataset and backbone are overlaid hollow in their method's colour (a method with several
    rows as a dotted curve); rows on a *related* backbone (pre-activation ResNet of the same
    depth, as in SkipNet's Fig. 7) hollow and faint, with a caption naming both backbones;
    matching rows without MACs are listed in the caption.

    With ``series`` (a comparison of sweeps or experiments), each series has its own
    frontier and hypervolume, drawn in the series' colour (:func:`.style.series_style`),
    its runs in that colour with their method's marker, labelled on the frontier only.

    Args:
        runs: from ``load_runs`` (unfinished runs are ignored).
        out_stem: writes ``<stem>.png``, ``<stem>.pdf`` and the frontier as ``<stem>.csv``.
        baselines: from ``load_baselines``; None draws none and says so.
        flops_unit: ``raw``, ``K``, ``M`` or ``G``.
        ref_macs: the plain MACs bounding the hypervolume box; default the largest
            ``flops_plain`` of the runs (the plain ResNet; the largest when backbones differ).
        top1_range: show top-1 down to this many points below the best run; runs below
            (e.g. a collapsed RL run at 10%) are listed in the caption instead, as the
            paper does in Fig. 9. They still count in the frontier and hypervolume. None: all.
        title: default "<what>\\n<dataset>, <backbones>: all finished runs".
        series: the column naming each run's series, in the order the runs come; None:
            the runs are one study.
    """
    scale, _ = S.check_unit(flops_unit)
    pts = finite_rows(finished(runs), M.TOP1, M.FLOPS_MEAN)
    if pts.empty:
        raise NotEnoughData("no finished run with top1 and flops_mean")
    datasets = sorted(pts[M.PARAM_DATASET].dropna().unique())
    if len(datasets) > 1:
        raise ValueError(f"runs of several datasets ({', '.join(datasets)}); draw one at a time")
    dataset = datasets[0] if datasets else ""
    if ref_macs is None:
        plain = pd.to_numeric(pts[M.FLOPS_PLAIN], errors="coerce")
        ref_macs = float(plain.max()) if plain.notna().any() else float(pts[M.FLOPS_MEAN].max())
    xy = pts[[M.FLOPS_MEAN, M.TOP1]].to_numpy(dtype=float)
    hv = normalised_hypervolume(xy, ref_macs)
    frontier = _frontier_rows(pts, M.FLOPS_MEAN, series)
    order = _series_order(pts, series)
    series_hv = {}
    if series is not None:
        for name in order:
            own_xy = _own(pts, series, name)[[M.FLOPS_MEAN, M.TOP1]].to_numpy(dtype=float)
            series_hv[name] = normalised_hypervolume(own_xy, ref_macs)

    backbones = S.backbone_order(pts[M.PARAM_ARCH].dropna())
    published = pd.DataFrame(
        columns=["method", "backbone", "macs", "top1", "source", "setting", "match",
                 "run_backbone"]
    )  # fmt: skip
    if baselines is not None:
        published = matching(baselines, dataset, backbones, include_related=True)
    plotted = published[published["macs"].notna()].reset_index(drop=True)
    listed = published[published["macs"].isna()].reset_index(drop=True)

    floor = -math.inf if top1_range is None else float(pts[M.TOP1].max()) - top1_range
    hidden = pts[pts[M.TOP1] < floor]
    shown = pts[pts[M.TOP1] >= floor]
    several = len(backbones) > 1

    def text_of(row: pd.Series) -> str:
        label = S.point_label(row)
        if several:
            label = f"{S.backbone_label(row[M.PARAM_ARCH])} {label}".strip()
        return label

    notes: list[str] = [_SERIES_NOTE] if series is not None else []
    for _, r in hidden.iterrows():
        label = f"{S.backbone_label(r[M.PARAM_ARCH])} {S.point_label(r)}".strip()
        of = f" ({r[series]})" if series is not None else ""
        notes.append(
            f"Below the plotted range: {S.method_style(r[M.TAG_METHOD], r).label} "
            f"{label}{of}, top-1 {r[M.TOP1]:.2f}% at {r[M.FLOPS_MEAN] / scale:.4g} "
            f"{S.unit_prefix(flops_unit)}MACs."
        )
    if baselines is None:
        notes.append("Published baselines: none loaded.")
    elif published.empty:
        notes.append(
            f"Published baselines: none for {S.dataset_label(dataset)} with "
            f"{', '.join(S.backbone_label(b) for b in backbones)} (or a related backbone) "
            "in the baseline files."
        )
    notes += _published_notes(published, listed)

    labels: list[tuple[float, float, str, dict[str, Any]]] = []
    lines: list[list[tuple[float, float]]] = []
    x_right = max(ref_macs, float(pts[M.FLOPS_MEAN].max())) / scale
    with matplotlib.rc_context(S.RC):
        fig = new_figure(figsize=(7.2, 4.4))
        ax = fig.add_subplot()
        handles: list[Any] = []
        for i, name in enumerate(order):
            colour, linestyle = S.series_style(i) if series is not None else ("0.35", "--")
            for method, grp in _own(shown, series, name).groupby(M.TAG_METHOD, sort=True):
                st = S.method_style(method, grp)
                ax.scatter(grp[M.FLOPS_MEAN] / scale, grp[M.TOP1], marker=st.marker, s=36,
                           color=st.color if series is None else colour, edgecolors="white",
                           linewidths=0.5, zorder=3, gid=f"runs:{name}:{method}")  # fmt: skip
                for _, row in grp.iterrows():
                    text = text_of(row)
                    if text and (series is None or row["on_frontier"]):
                        kw = {"fontsize": 6.5, "color": "0.15"}
                        labels.append((row[M.FLOPS_MEAN] / scale, row[M.TOP1], text, kw))
            own = _own(frontier, series, name)
            own = own.assign(**{M.FLOPS_MEAN: own[M.FLOPS_MEAN] / scale})
            lines.append(
                _step(ax, own, M.FLOPS_MEAN, x_right, color=colour, linestyle=linestyle,
                      linewidth=1.0 if series is None else 1.3, gid=f"frontier:{name}")
            )  # fmt: skip
            if series is None:
                handles.append(
                    Line2D([], [], color=colour, linestyle=linestyle, linewidth=1.0,
                           label=f"Pareto frontier, {format_hypervolume(hv)}")
                )  # fmt: skip
            else:
                n_runs = len(_own(pts, series, name))
                handles.append(
                    Line2D([], [], color=colour, linestyle=linestyle, linewidth=1.3,
                           label=f"{name}: {format_hypervolume(series_hv[name])}, "
                           f"{len(own)} of {n_runs} runs on its frontier")
                )  # fmt: skip
        ring = frontier[frontier[M.TOP1] >= floor]
        ax.scatter(ring[M.FLOPS_MEAN] / scale, ring[M.TOP1], zorder=4, **_RING)
        handles.append(
            Line2D([], [], linestyle="none", marker="o", markersize=9, markerfacecolor="none",
                   markeredgecolor="0.1", label="on the frontier")
        )  # fmt: skip
        handles += _method_handles(pts, series)

        groups = plotted.groupby(["method", "source", "backbone", "match"], sort=True)
        for (method, source, backbone, match), grp in groups:
            grp = grp.sort_values("macs")
            st = S.method_style(method)
            faint = _RELATED_ALPHA if match == RELATED else 1.0
            ax.scatter(grp["macs"] / scale, grp["top1"], marker=st.marker, s=44,
                       facecolors="none", edgecolors=st.color, linewidths=1.2, alpha=faint,
                       zorder=3, gid=f"published:{method}")  # fmt: skip
            if len(grp) > 1:
                ax.plot(grp["macs"] / scale, grp["top1"], ":", color=st.color, linewidth=1.0,
                        alpha=faint)  # fmt: skip
            # Beside each point: the method (the plain ResNet's marker says that already,
            # so its authors instead, to tell sources apart), and the setting on a curve.
            tag = str(source).split(",")[0] if method == "plain" else st.label
            for _, r in grp.iterrows():
                text = f"{tag}, {r.setting}" if len(grp) > 1 and r.setting else tag
                kw = {"fontsize": 6.5, "color": st.color, "style": "italic", "alpha": faint}
                labels.append((r.macs / scale, r.top1, text, kw))
            on = f" on {S.backbone_label(backbone)}" if match == RELATED else ""
            legend_label = f"{st.label}, published{on}\n{short_source(source)}"
            if legend_label not in {h.get_label() for h in handles}:
                handles.append(
                    Line2D([], [], linestyle="none", marker=st.marker, markerfacecolor="none",
                           markeredgecolor=st.color, alpha=faint, markersize=6,
                           label=legend_label)
                )  # fmt: skip

        ax.set_xlabel(S.macs_label(flops_unit))
        ax.set_ylabel(S.top1_label(pts))
        if len(hidden):
            low = float(shown[M.TOP1].min())
            if len(plotted):
                low = min(low, float(plotted["top1"].min()))
            span = float(pts[M.TOP1].max()) - low
            ax.set_ylim(low - max(0.08 * span, 0.2), None)
        what = f"all {len(pts)} finished runs"
        if series is not None:
            what = f"{len(order)} studies, {len(pts)} finished runs"
        ax.set_title(
            title
            or S.title(
                "Top-1 accuracy vs. computation", dataset=dataset, backbones=backbones, shown=what
            )
        )
        fig.legend(handles=handles, loc="outside right upper", fontsize=7.5)
        note(fig, notes)
        place_labels(fig, ax, labels, lines)
        files = save(fig, out_stem)

    csv_path = Path(out_stem).parent / f"{Path(out_stem).name}.csv"
    cols = [
        *([series] if series is not None else []),
        "run_id", "run_name", M.TAG_STAGE, M.TAG_METHOD, M.PARAM_ARCH, M.PARAM_GATE,
        M.PARAM_VARIANT, M.PARAM_ALPHA, M.PARAM_TAU, M.FLOPS_MEAN, M.TOP1,
    ]  # fmt: skip
    frontier[[c for c in cols if c in frontier.columns]].to_csv(csv_path, index=False)
    files.append(csv_path)
    return ParetoData(
        points=pts,
        frontier=frontier,
        hypervolume=hv,
        ref_macs=ref_macs,
        baselines_plotted=plotted,
        baselines_listed=listed,
        notes=notes,
        files=files,
        figure=fig,
        series_hypervolume=series_hv,
    )


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


def latency_figure(
    runs: pd.DataFrame, out_stem: str | Path, *, batch: int = 1, series: str | None = None
) -> LatencyData:
    """Top-1 against measured latency at ``batch`` images per call: the frontier a user who
    deploys the networks sees, beside the MACs frontier of :func:`pareto_figure`. Each run's
    latency is put on one scale, its time over the plain ResNet timed beside it in its own
    process times the median plain time of its dataset and backbone
    (``pareto.comparable_latency``, as the sweep's latency frontier); those medians are the
    dashed references. Each run's bar is the interquartile range of its round-by-round
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
    pts = pts.copy()
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
    keys = [*([series] if series is not None else []), M.PARAM_DATASET, M.PARAM_ARCH]
    groups = list(pts[keys].itertuples(index=False, name=None))
    bounds = latency_intervals(
        pts[lat].astype(float).tolist(), plain_ms.tolist(), groups, list(zip(q1, q3, strict=True))
    )
    pts[lat] = [v for _, v, _ in bounds]
    pts[_LOW], pts[_HIGH] = [lo for lo, _, _ in bounds], [hi for *_, hi in bounds]
    keep = [math.isfinite(v) for v in pts[lat]]
    pts, slower = pts[keep].reset_index(drop=True), slower[keep].reset_index(drop=True)
    if pts.empty:
        raise NotEnoughData(f"no finished run has both {lat} and {plain_lat}")
    frontier = _frontier_rows(pts, lat, series, interval=(_LOW, _HIGH))
    macs_saved = pd.to_numeric(pts[M.FLOPS_MEAN], errors="coerce") < 0.95 * pd.to_numeric(
        pts[M.FLOPS_PLAIN], errors="coerce"
    )
    counted_only = pts[macs_saved & slower]
    # The plain ResNet's median time per (series,) dataset and backbone: the references.
    references = {
        key: float(pd.to_numeric(grp[plain_lat], errors="coerce").median())
        for key, grp in pts.groupby(keys, sort=False)
    }
    datasets = sorted(pts[M.PARAM_DATASET].dropna().unique())
    backbones = sorted(pts[M.PARAM_ARCH].dropna().unique())
    order = _series_order(pts, series)
    with matplotlib.rc_context(S.RC):
        fig = new_figure(figsize=(7.2, 4.4))
        ax = fig.add_subplot()
        handles: list[Any] = []
        for i, name in enumerate(order):
            colour, linestyle = S.series_style(i) if series is not None else ("0.35", "--")
            for method, grp in _own(pts, series, name).groupby(M.TAG_METHOD, sort=True):
                st = S.method_style(method, grp)
                slow = grp.index.isin(counted_only.index)
                face = st.color if series is None else colour
                ax.errorbar(grp[lat], grp[M.TOP1], xerr=[grp[lat] - grp[_LOW],
                            grp[_HIGH] - grp[lat]], fmt="none", ecolor=face, alpha=0.5,
                            linewidth=0.8, zorder=2)  # fmt: skip
                ax.scatter(grp[lat][~slow], grp[M.TOP1][~slow], marker=st.marker, s=36,
                           color=face, edgecolors="white", linewidths=0.5, zorder=3,
                           gid=f"runs:{name}:{method}")  # fmt: skip
                if slow.any():
                    ax.scatter(grp[lat][slow], grp[M.TOP1][slow], marker="X", s=44, color=face,
                               zorder=3, gid=f"slow:{name}:{method}")  # fmt: skip
            own = _own(frontier, series, name)
            _step(ax, own, lat, None, color=colour, linestyle=linestyle, linewidth=1.0,
                  gid=f"frontier:{name}")  # fmt: skip
            label = "latency frontier" if series is None else f"{name}: latency frontier"
            handles.append(Line2D([], [], color=colour, linestyle=linestyle, label=label))
            for key, reference in references.items():
                if series is not None and key[0] != name:
                    continue
                dataset, arch = key[-2:]
                if math.isfinite(reference):
                    if series is not None:
                        which = f"{name}: plain {S.backbone_label(arch)}"
                    elif len(references) > 1:
                        which = f"plain {arch} on {dataset}"
                    else:
                        which = "plain ResNet"
                    ax.axvline(reference, color="0.5" if series is None else colour,
                               linestyle=":", linewidth=1.0)  # fmt: skip
                    handles.append(
                        Line2D([], [], color="0.5" if series is None else colour,
                               linestyle=":", label=f"{which}, {reference:.3g} ms")
                    )  # fmt: skip
        ax.scatter(frontier[lat], frontier[M.TOP1], zorder=4, **_RING)
        handles += _method_handles(pts, series)
        ax.set_xlabel(
            f"Latency per batch of {batch} (ms, median)\neach run over the plain ResNet timed "
            "beside it, times the plain ResNet's median"
        )
        ax.set_ylabel(S.top1_label(pts))
        what = f"all {len(pts)} finished runs, batch {batch}"
        if series is not None:
            what = f"{len(order)} studies, {len(pts)} runs, batch {batch}"
        ax.set_title(
            S.title(
                "Top-1 accuracy vs. measured latency",
                dataset=datasets,
                backbones=backbones,
                shown=what,
            )
        )
        fig.legend(handles=handles, loc="outside right upper", fontsize=7.5)
        notes = [
            "Latency measured after each run's final evaluation, as deployed (thresholded "
            "gates, blocks skipped for real; ACT halting; SACT as it runs), beside the plain "
            "ResNet timed in the same process. Bars: the interquartile range of its "
            "round-by-round speed-up; a run leaves the frontier only for one at least as "
            "accurate and faster beyond both bars."
        ]
        if series is not None:
            notes.append(
                "Colour: the sweep or experiment, each on its own plain ResNet's scale (its "
                "timings are of its own hardware), its frontier the line of that colour; "
                "marker: the method. Published baselines report MACs, not times: see the "
                "MACs axis."
            )
        if len(counted_only):
            names = ", ".join(str(n) for n in counted_only["run_name"].head(6))
            notes.append(
                f"X: MACs below the plain ResNet's but no faster in wall time beyond the noise "
                f"(savings counted, not realised): {names}"
                + (" ..." if len(counted_only) > 6 else "")
            )
        note(fig, notes)
        files = save(fig, out_stem)
    return LatencyData(pts, frontier, counted_only, files, figure=fig)
