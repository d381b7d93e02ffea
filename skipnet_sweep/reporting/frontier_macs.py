"""The Pareto figure: top-1 against MACs of every run, the frontier, its normalised
hypervolume, and published baselines (SkipNet's Fig. 7 when the runs are ImageNet
ResNet-101 and the baselines ACT/SACT)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from skipnet_sweep import metrics as M
from skipnet_sweep.pareto import format_hypervolume, normalised_hypervolume
from skipnet_sweep.reporting import style as S
from skipnet_sweep.reporting.baselines import RELATED, matching
from skipnet_sweep.reporting.common import (
    NotEnoughData,
    finished,
    finite_rows,
    save,
    short_source,
)
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
    series_order,
    step_line,
)
from skipnet_sweep.reporting.labels import place_labels

__all__ = ["ParetoData", "pareto_figure"]

# How faint a published point on a related backbone is.
_RELATED_ALPHA = 0.6


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


_SERIES_NOTE = (
    "Colour: the sweep or experiment, its frontier the line of that colour (HV: the share of "
    "the largest plain ResNet's box its runs dominate); marker: the method."
)
_PUBLISHED_COLUMNS = ["method", "backbone", "macs", "top1", "source", "setting", "match",
                      "run_backbone"]  # fmt: skip


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
    dataset = _the_dataset(pts)
    if ref_macs is None:
        plain = pd.to_numeric(pts[M.FLOPS_PLAIN], errors="coerce")
        ref_macs = float(plain.max()) if plain.notna().any() else float(pts[M.FLOPS_MEAN].max())
    hv = _hypervolume(pts, ref_macs)
    frontier = frontier_rows(pts, M.FLOPS_MEAN, series)
    series_hv = {}
    if series is not None:
        order = series_order(pts, series)
        series_hv = {n: _hypervolume(own_runs(pts, series, n), ref_macs) for n in order}
    backbones = S.backbone_order(pts[M.PARAM_ARCH].dropna())
    published = pd.DataFrame(columns=_PUBLISHED_COLUMNS)
    if baselines is not None:
        published = matching(baselines, dataset, backbones, include_related=True)
    plotted = published[published["macs"].notna()].reset_index(drop=True)
    listed = published[published["macs"].isna()].reset_index(drop=True)
    floor = -math.inf if top1_range is None else float(pts[M.TOP1].max()) - top1_range
    hidden = pts[pts[M.TOP1] < floor]
    notes: list[str] = [_SERIES_NOTE] if series is not None else []
    notes += _below_range_notes(hidden, series, flops_unit)
    notes += _published_notes(baselines, published, listed, dataset, backbones)
    data = ParetoData(pts, frontier, hv, ref_macs, plotted, listed, notes, [],
                      series_hypervolume=series_hv)  # fmt: skip
    data.figure, data.files = _draw_pareto(data, out_stem, floor, scale, flops_unit, title, series)
    data.files.append(_write_frontier(frontier, out_stem, series))
    return data


def _the_dataset(pts: pd.DataFrame) -> str:
    """The runs' one dataset ("" when none is named); refuses several."""
    datasets = sorted(pts[M.PARAM_DATASET].dropna().unique())
    if len(datasets) > 1:
        raise ValueError(f"runs of several datasets ({', '.join(datasets)}); draw one at a time")
    return datasets[0] if datasets else ""


def _hypervolume(pts: pd.DataFrame, ref_macs: float) -> float:
    return normalised_hypervolume(pts[[M.FLOPS_MEAN, M.TOP1]].to_numpy(dtype=float), ref_macs)


def _below_range_notes(hidden: pd.DataFrame, series: str | None, flops_unit: str) -> list[str]:
    """A caption line for each run below the plotted top-1 range."""
    scale, _ = S.check_unit(flops_unit)
    notes = []
    for _, r in hidden.iterrows():
        label = f"{S.backbone_label(r[M.PARAM_ARCH])} {S.point_label(r)}".strip()
        of = f" ({r[series]})" if series is not None else ""
        notes.append(
            f"Below the plotted range: {S.method_style(r[M.TAG_METHOD], r).label} "
            f"{label}{of}, top-1 {r[M.TOP1]:.2f}% at {r[M.FLOPS_MEAN] / scale:.4g} "
            f"{S.unit_prefix(flops_unit)}MACs."
        )
    return notes


def _published_notes(
    baselines: pd.DataFrame | None,
    published: pd.DataFrame,
    listed: pd.DataFrame,
    dataset: str,
    backbones: list[str],
) -> list[str]:
    """The caption on published baselines: none loaded or none matching, the related
    backbones drawn faint, and the matching rows without MACs."""
    notes = []
    if baselines is None:
        notes.append("Published baselines: none loaded.")
    elif published.empty:
        notes.append(
            f"Published baselines: none for {S.dataset_label(dataset)} with "
            f"{', '.join(S.backbone_label(b) for b in backbones)} (or a related backbone) "
            "in the baseline files."
        )
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


# A label beside a point: (x, y, text, text keywords), placed by ``labels.place_labels``.
_Label = tuple[float, float, str, dict[str, Any]]


def _draw_pareto(
    data: ParetoData,
    out_stem: str | Path,
    floor: float,
    scale: float,
    flops_unit: str,
    title: str | None,
    series: str | None,
) -> tuple[Figure, list[Path]]:
    """Draws and saves the figure of ``data``: runs at or above ``floor``, frontiers,
    published points, legend and caption, then the points' labels."""
    pts, frontier, plotted = data.points, data.frontier, data.baselines_plotted
    shown = pts[pts[M.TOP1] >= floor]
    x_right = max(data.ref_macs, float(pts[M.FLOPS_MEAN].max())) / scale
    with canvas() as (fig, ax):
        handles, labels, lines = _pareto_series(ax, data, shown, scale, x_right, series)
        ring = frontier[frontier[M.TOP1] >= floor]
        ax.scatter(ring[M.FLOPS_MEAN] / scale, ring[M.TOP1], zorder=4, **RING)
        handles.append(
            Line2D([], [], linestyle="none", marker="o", markersize=9, markerfacecolor="none",
                   markeredgecolor="0.1", label="on the frontier")
        )  # fmt: skip
        handles += method_handles(pts, series)
        labels += _draw_published(ax, plotted, scale, handles)
        ax.set_xlabel(S.macs_label(flops_unit))
        ax.set_ylabel(S.top1_label(pts))
        if len(shown) < len(pts):  # runs below the range: start just under the lowest drawn
            low = float(shown[M.TOP1].min())
            if len(plotted):
                low = min(low, float(plotted["top1"].min()))
            span = float(pts[M.TOP1].max()) - low
            ax.set_ylim(low - max(0.08 * span, 0.2), None)
        if not title:
            title = S.title(
                "Top-1 accuracy vs. computation",
                dataset=_the_dataset(pts),
                backbones=S.backbone_order(pts[M.PARAM_ARCH].dropna()),
                shown=runs_shown(pts, series, "finished runs"),
            )
        ax.set_title(title)
        caption(fig, handles, data.notes)
        place_labels(fig, ax, labels, lines)
        return fig, save(fig, out_stem)


def _pareto_series(
    ax: Any, data: ParetoData, shown: pd.DataFrame, scale: float, x_right: float, series: str | None
) -> tuple[list[Any], list[_Label], list[list[tuple[float, float]]]]:
    """Each series' runs, its frontier and the frontier's legend entry; returns the
    entries, the labels of the runs (of frontier runs only in a comparison) and the
    frontiers' corners."""
    pts, frontier = data.points, data.frontier
    several = len(S.backbone_order(pts[M.PARAM_ARCH].dropna())) > 1
    handles: list[Any] = []
    labels: list[_Label] = []
    lines = []
    for name, colour, linestyle in series_looks(pts, series):
        for method, grp, st, face in method_groups(shown, series, name, colour):
            x = grp[M.FLOPS_MEAN] / scale
            scatter_runs(ax, x, grp[M.TOP1], st, face, f"runs:{name}:{method}")
            for _, row in grp.iterrows():
                text = _point_text(row, several)
                if text and (series is None or row["on_frontier"]):
                    kw = {"fontsize": 6.5, "color": "0.15"}
                    labels.append((row[M.FLOPS_MEAN] / scale, row[M.TOP1], text, kw))
        own = own_runs(frontier, series, name)
        own = own.assign(**{M.FLOPS_MEAN: own[M.FLOPS_MEAN] / scale})
        width = 1.0 if series is None else 1.3
        lines.append(
            step_line(ax, own, M.FLOPS_MEAN, x_right, color=colour, linestyle=linestyle,
                      linewidth=width, gid=f"frontier:{name}")
        )  # fmt: skip
        if series is None:
            label = f"Pareto frontier, {format_hypervolume(data.hypervolume)}"
        else:
            label = (
                f"{name}: {format_hypervolume(data.series_hypervolume[name])}, "
                f"{len(own)} of {len(own_runs(pts, series, name))} runs on its frontier"
            )
        handles.append(Line2D([], [], color=colour, linestyle=linestyle, linewidth=width,
                              label=label))  # fmt: skip
    return handles, labels, lines


def _point_text(row: pd.Series, several: bool) -> str:
    """The label beside a run's point, with its backbone when the figure has several."""
    label = S.point_label(row)
    if several:
        label = f"{S.backbone_label(row[M.PARAM_ARCH])} {label}".strip()
    return label


def _draw_published(
    ax: Any, plotted: pd.DataFrame, scale: float, handles: list[Any]
) -> list[_Label]:
    """Published points, hollow (faint on a related backbone), a method's rows of one source
    joined by a dotted curve; adds a legend entry per method and source to ``handles`` and
    returns the points' labels."""
    labels: list[_Label] = []
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
                       markeredgecolor=st.color, alpha=faint, markersize=6, label=legend_label)
            )  # fmt: skip
    return labels


def _write_frontier(frontier: pd.DataFrame, out_stem: str | Path, series: str | None) -> Path:
    """The frontier runs as ``<stem>.csv``."""
    path = Path(out_stem).parent / f"{Path(out_stem).name}.csv"
    cols = [
        *([series] if series is not None else []),
        "run_id", "run_name", M.TAG_STAGE, M.TAG_METHOD, M.PARAM_ARCH, M.PARAM_GATE,
        M.PARAM_VARIANT, M.PARAM_ALPHA, M.PARAM_TAU, M.FLOPS_MEAN, M.TOP1,
    ]  # fmt: skip
    frontier[[c for c in cols if c in frontier.columns]].to_csv(path, index=False)
    return path
