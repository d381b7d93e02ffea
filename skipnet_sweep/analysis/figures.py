"""The paper's figures, from a sweep's runs (figures 4-11 and Table 3).

Every function takes data (the DataFrame of :func:`skipnet_sweep.analysis.runs.load_runs`,
an artifact table, arrays) and an output path *stem*, writes ``<stem>.png`` and
``<stem>.pdf`` (tables: ``.md`` and ``.csv``) and returns the data behind the figure, so
tests can check the numbers and not only that a picture exists.

Conventions shared by all figures: colour per backbone and marker per method (gate type,
plain, ACT, SACT) from a colour-blind-safe palette (Okabe & Ito); published results use
the same marker, hollow. MACs are mean multiply-adds per image (gates included), shown in
``flops_unit`` (``raw``, ``K``, ``M``, ``G``). Figures are drawn on
:class:`matplotlib.figure.Figure` directly, so no pyplot state or GUI backend is involved.

A figure the data cannot support raises :class:`NotEnoughData`, whose message says why
(the report lists it under "figures not made").
"""

from __future__ import annotations

import itertools
import math
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from skipnet_sweep import metrics as M
from skipnet_sweep.analysis.baselines import matching
from skipnet_sweep.pareto import hypervolume, pareto_front

__all__ = [
    "FLOPS_UNITS",
    "FigureData",
    "NotEnoughData",
    "ParetoData",
    "alpha_tradeoff_figure",
    "backbone_label",
    "check_unit",
    "class_names",
    "dataset_label",
    "depth_of",
    "easy_hard_grid",
    "finite_rows",
    "hard_soft_table",
    "pareto_figure",
    "per_class_figure",
    "per_class_from_samples",
    "plain_by_backbone",
    "reduction_figure",
    "select_hrl_runs",
    "skip_histogram_figure",
    "skipnet_label",
    "variants_figure",
]

# --------------------------------------------------------------------------- style

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common forms of
# colour blindness. Yellow last: it is faint on white.
PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
METHOD_MARKERS = {
    "plain": "s",
    "skipnet-ff1": "o",
    "skipnet-ff2": "^",
    "skipnet-rnn": "D",
    "act": "v",
    "sact": "P",
    "blockdrop": "X",
    "convnet-aig": "h",
    "dynconv": "*",
}
_SPARE_MARKERS = ("<", ">", "p", "d", "H", "8")
METHOD_LABELS = {
    "plain": "ResNet (no gates)",
    "skipnet-ff1": "SkipNet, FFGate-I",
    "skipnet-ff2": "SkipNet, FFGate-II",
    "skipnet-rnn": "SkipNet, RNNGate",
    "act": "ACT",
    "sact": "SACT",
    "blockdrop": "BlockDrop",
    "convnet-aig": "ConvNet-AIG",
    "dynconv": "DynConv",
}
GATE_LABELS = {"ff1": "FFGate-I", "ff2": "FFGate-II", "rnn": "RNNGate", "none": "no gate"}
VARIANT_LABELS = {
    "baseline": "plain",
    "sp": "SP",
    "soft": "soft",
    "hrl+sp": "HRL+SP",
    "hrl+s": "HRL+S",
    "rl": "RL",
    "act": "ACT",
    "sact": "SACT",
}
DATASET_LABELS = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "svhn": "SVHN",
    "imagenet": "ImageNet",
    "fashion_mnist": "Fashion-MNIST",
    "synthetic": "synthetic",
}
_CLASS_NAMES = {
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
    "fashion_mnist": (
        "T-shirt",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "boot",
    ),
    "svhn": tuple(str(d) for d in range(10)),
}
# name -> (divisor, axis suffix)
FLOPS_UNITS = {
    "raw": (1.0, ""),
    "K": (1e3, " (thousands)"),
    "M": (1e6, " (millions)"),
    "G": (1e9, " (billions)"),
}
_UNIT_PREFIX = {"raw": "", "K": "K ", "M": "M ", "G": "G "}
_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9.5,
    "legend.fontsize": 8,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
    "ps.fonttype": 42,
    "savefig.dpi": 200,
}


class NotEnoughData(ValueError):
    """The runs cannot support this figure; the message says what is missing."""


@dataclass
class FigureData:
    """What a figure function wrote and the numbers it drew.

    Attributes:
        data: one row per drawn element (point, bar, table row).
        files: the files written.
        notes: text printed on the figure (e.g. why something is not drawn).
        extra: figure-specific values (named in each function's docstring).
    """

    data: pd.DataFrame
    files: list[Path]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParetoData:
    """Data behind :func:`pareto_figure`.

    Attributes:
        points: every drawn run, with a boolean ``on_frontier`` column.
        frontier: the frontier runs by increasing MACs (also written as ``<stem>.csv``).
        hypervolume: area dominated by the runs, in MACs x percent (raw MACs).
        ref_macs: the reference MACs of the hypervolume (the plain ResNet's ``flops_plain``).
        baselines_plotted: published rows drawn (dataset and backbone match, MACs given).
        baselines_listed: matching published rows without MACs (listed in the note).
        notes: the note under the plot.
        files: PNG, PDF, CSV.
    """

    points: pd.DataFrame
    frontier: pd.DataFrame
    hypervolume: float
    ref_macs: float
    baselines_plotted: pd.DataFrame
    baselines_listed: pd.DataFrame
    notes: list[str]
    files: list[Path]


# --------------------------------------------------------------------------- helpers


def depth_of(backbone: str) -> int:
    """The depth in an architecture name (``cifar_resnet110`` -> 110; 0 when none)."""
    m = re.search(r"(\d+)$", str(backbone))
    return int(m.group(1)) if m else 0


def _backbone_order(backbones: Iterable[str]) -> list[str]:
    return sorted(set(backbones), key=lambda b: (depth_of(b), b))


def backbone_label(backbone: str) -> str:
    """``cifar_resnet110`` -> ``ResNet-110``; ``preact_resnet101`` -> ``PreAct ResNet-101``."""
    m = re.fullmatch(r"(preact_)?(cifar_)?resnet(\d+)", str(backbone))
    if not m:
        return str(backbone)
    return f"{'PreAct ' if m.group(1) else ''}ResNet-{m.group(3)}"


def skipnet_label(backbone: str) -> str:
    """The paper's model name: ``cifar_resnet38`` -> ``SkipNet-38``."""
    d = depth_of(backbone)
    return f"SkipNet-{d}" if d else f"SkipNet ({backbone})"


def dataset_label(dataset: str) -> str:
    """The printed name of a dataset (``cifar10`` -> ``CIFAR-10``)."""
    return DATASET_LABELS.get(dataset, dataset)


def class_names(dataset: str | None, labels: Iterable[int]) -> dict[int, str]:
    """Readable class names where the dataset has well-known ones, else the label number."""
    names = _CLASS_NAMES.get(dataset or "", ())
    return {int(c): names[int(c)] if 0 <= int(c) < len(names) else str(c) for c in labels}


def _colours(backbones: Iterable[str]) -> dict[str, str]:
    return {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(_backbone_order(backbones))}


def _markers(methods: Iterable[str]) -> dict[str, str]:
    out, spare = {}, iter(_SPARE_MARKERS * 4)
    for m in sorted(set(methods)):
        out[m] = METHOD_MARKERS.get(m) or next(spare)
    return out


def check_unit(flops_unit: str) -> tuple[float, str]:
    """``(divisor, axis-label suffix)`` of a MACs unit; ValueError on an unknown one."""
    if flops_unit not in FLOPS_UNITS:
        raise ValueError(f"flops_unit must be one of {', '.join(FLOPS_UNITS)}, got {flops_unit!r}")
    return FLOPS_UNITS[flops_unit]


def _macs_label(flops_unit: str, what: str = "Mean MACs per image") -> str:
    return what + check_unit(flops_unit)[1]


def _finished(runs: pd.DataFrame) -> pd.DataFrame:
    # As runs.finished, without importing MLflow: figures work on any DataFrame.
    if "status" in runs.columns:
        runs = runs[runs["status"] == "FINISHED"]
    return runs.reset_index(drop=True)


def finite_rows(runs: pd.DataFrame, *cols: str) -> pd.DataFrame:
    """The rows whose ``cols`` are all finite numbers."""
    keep = np.ones(len(runs), dtype=bool)
    for c in cols:
        keep &= np.isfinite(pd.to_numeric(runs[c], errors="coerce").to_numpy(dtype=float))
    return runs[keep].reset_index(drop=True)


def _fmt_number(value: float) -> str:
    """Whole numbers with thousands separators from 1,000 to 10^12, else 4 significant
    digits."""
    if abs(value) >= 1000 and abs(value) < 1e12:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _fmt_param(value: float) -> str:
    return f"{value:g}"


def _point_label(row: Mapping[str, Any]) -> str:
    """Text next to a point: alpha for HRL runs, tau for ACT/SACT, the variant otherwise."""
    variant = row.get(M.PARAM_VARIANT)
    alpha, tau = row.get(M.PARAM_ALPHA), row.get(M.PARAM_TAU)
    has = lambda v: v is not None and not (isinstance(v, float) and math.isnan(v))  # noqa: E731
    if row.get(M.TAG_STAGE) in ("act", "sact") and has(tau):
        return f"τ={_fmt_param(tau)}"
    if variant == "hrl+sp" and has(alpha):
        return f"α={_fmt_param(alpha)}"
    if variant in ("hrl+s", "rl") and has(alpha):
        return f"{VARIANT_LABELS[variant]} α={_fmt_param(alpha)}"
    if variant in ("sp", "soft"):
        return VARIANT_LABELS[variant]
    return ""


def _save(fig: Figure, stem: str | Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    files = []
    for ext in ("png", "pdf"):
        path = stem.parent / f"{stem.name}.{ext}"
        fig.savefig(path, bbox_inches="tight", pad_inches=0.05)
        files.append(path)
    return files


def _figure(**kw) -> Figure:
    return Figure(layout="constrained", **kw)


def _note(fig: Figure, lines: Sequence[str], width: int = 110) -> None:
    """Print ``lines`` under the axes (kept inside the saved image by the tight bbox)."""
    if not lines:
        return
    text = "\n".join(textwrap.fill(line, width, subsequent_indent="    ") for line in lines)
    fig.text(0.0, 0.0, text, ha="left", va="top", fontsize=7, color="0.25", wrap=False)


def plain_by_backbone(runs: pd.DataFrame) -> pd.DataFrame:
    """The most accurate plain-ResNet run (stage ``baseline``) of each (dataset, backbone)."""
    plain = runs[runs[M.TAG_STAGE] == "baseline"]
    plain = finite_rows(plain, M.TOP1, M.FLOPS_MEAN)
    if plain.empty:
        return plain
    plain = plain.sort_values([M.TOP1], ascending=False, kind="stable")
    return plain.drop_duplicates([M.PARAM_DATASET, M.PARAM_ARCH]).reset_index(drop=True)


def _short_source(source: str) -> str:
    return str(source).split(";")[0].strip()


# --------------------------------------------------------------------------- labels

# Where a label may go relative to its point: (dx, dy) in points, horizontal, vertical
# alignment. Tried in order; the first that overlaps nothing already placed wins.
_LABEL_SPOTS = (
    (4, 3, "left", "bottom"),
    (4, -3, "left", "top"),
    (-4, 3, "right", "bottom"),
    (-4, -3, "right", "top"),
    (0, 6, "center", "bottom"),
    (0, -6, "center", "top"),
    (7, 0, "left", "center"),
    (-7, 0, "right", "center"),
)


def _place_labels(
    fig: Figure,
    ax: Any,
    items: Sequence[tuple[float, float, str, dict[str, Any]]],
    polyline: Sequence[tuple[float, float]] = (),
) -> None:
    """Annotate ``(x, y, text, text_kw)`` items, each at the first spot around its point
    that overlaps no other label, no marker and no segment of ``polyline`` (data
    coordinates; the frontier), else at the least-overlapping spot.

    Positions are measured after a layout pass, so this is the last thing drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    if not items:
        return
    FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    r = 3.5 * fig.dpi / 72  # half a marker, in pixels
    centres = [ax.transData.transform((x, y)) for x, y, _, _ in items]
    obstacles = [Bbox.from_extents(cx - r, cy - r, cx + r, cy + r) for cx, cy in centres]
    ends = [ax.transData.transform(p) for p in polyline]
    lines = [
        Bbox.from_extents(min(a[0], b[0]) - 1, min(a[1], b[1]) - 1, max(a[0], b[0]) + 1,
                          max(a[1], b[1]) + 1)
        for a, b in itertools.pairwise(ends)
    ]  # fmt: skip
    frame = ax.get_window_extent(renderer)

    def overlap(a: Any, b: Any) -> float:
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        return w * h if w > 0 and h > 0 else 0.0

    placed: list[Any] = []
    for i, (x, y, text, kw) in enumerate(items):
        best = None
        for dx, dy, ha, va in _LABEL_SPOTS:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                              ha=ha, va=va, **kw)  # fmt: skip
            box = ann.get_window_extent(renderer)
            others = placed + lines + [o for j, o in enumerate(obstacles) if j != i]
            cost = sum(overlap(box, o) for o in others)
            cost += box.width * box.height - overlap(box, frame)  # outside the axes
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann, box)
            else:
                ann.remove()
            if cost == 0:
                break
        placed.append(best[2])


# --------------------------------------------------------------------------- Pareto


def pareto_figure(
    runs: pd.DataFrame,
    out_stem: str | Path,
    *,
    baselines: pd.DataFrame | None = None,
    flops_unit: str = "M",
    ref_macs: float | None = None,
    top1_range: float | None = 30.0,
    title: str | None = None,
) -> ParetoData:
    """Top-1 against mean MACs per image for every finished run of one dataset.

    One marker per method, one colour per backbone; alpha beside each HRL point, tau
    beside ACT/SACT, "SP"/"soft" beside SP runs. The frontier over all runs is a step line
    and its hypervolume is in the legend. Published rows of the same dataset *and* backbone
    are overlaid as hollow markers (a method with several rows as a dotted curve); matching
    rows without MACs (e.g. SkipNet's published block percentages) are listed in a note.

    Args:
        runs: from ``load_runs`` (unfinished runs are ignored).
        out_stem: writes ``<stem>.png``, ``<stem>.pdf`` and the frontier as ``<stem>.csv``.
        baselines: from ``load_baselines``; None draws none and says so.
        flops_unit: ``raw``, ``K``, ``M`` or ``G``.
        ref_macs: the hypervolume's reference MACs; default the largest ``flops_plain``
            of the runs (the plain ResNet; the largest one when backbones differ).
        top1_range: show top-1 down to this many points below the best run; runs below
            (e.g. a collapsed RL run at 10%) are listed in the note instead, as the paper
            does in Fig. 9. They still count in the frontier and hypervolume. None: all.
        title: default "<dataset>: top-1 accuracy vs. computation".
    """
    scale, _ = check_unit(flops_unit)
    pts = finite_rows(_finished(runs), M.TOP1, M.FLOPS_MEAN)
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
    front_idx = pareto_front(xy)
    pts["on_frontier"] = False
    pts.loc[front_idx, "on_frontier"] = True
    hv = hypervolume(xy, ref_macs)
    frontier = pts.loc[front_idx].reset_index(drop=True)

    backbones = _backbone_order(pts[M.PARAM_ARCH].dropna())
    colours = _colours(backbones)
    published = pd.DataFrame(columns=["method", "backbone", "macs", "top1", "source", "setting"])
    if baselines is not None:
        published = matching(baselines, dataset, backbones)
    plotted = published[published["macs"].notna()].reset_index(drop=True)
    listed = published[published["macs"].isna()].reset_index(drop=True)
    markers = _markers(list(pts[M.TAG_METHOD].dropna()) + list(plotted["method"]))

    floor = -math.inf
    if top1_range is not None:
        floor = float(pts[M.TOP1].max()) - top1_range
    hidden = pts[pts[M.TOP1] < floor]
    shown = pts[pts[M.TOP1] >= floor]

    notes: list[str] = []
    for _, r in hidden.iterrows():
        label = _point_label(r)
        notes.append(
            f"Below the plotted range: {METHOD_LABELS.get(r[M.TAG_METHOD], r[M.TAG_METHOD])} "
            f"{backbone_label(r[M.PARAM_ARCH])}{' ' + label if label else ''}, top-1 "
            f"{r[M.TOP1]:.2f}% at {r[M.FLOPS_MEAN] / scale:.4g} {_UNIT_PREFIX[flops_unit]}MACs."
        )
    if baselines is None:
        notes.append("Published baselines: none loaded.")
    elif published.empty:
        notes.append(
            f"Published baselines: none for {dataset_label(dataset)} with "
            f"{', '.join(backbone_label(b) for b in backbones)} in the baseline files."
        )
    for _, r in listed.iterrows():
        notes.append(
            f"Not plotted (no MACs): {METHOD_LABELS.get(r.method, r.method)} "
            f"{backbone_label(r.backbone)}, top-1 {r.top1:g}%"
            + (f", {r.setting}" if r.setting else "")
            + f" [{_short_source(r.source)}]."
        )

    labels: list[tuple[float, float, str, dict[str, Any]]] = []
    with matplotlib.rc_context(_RC):
        fig = _figure(figsize=(7.2, 4.2))
        ax = fig.add_subplot()
        for (backbone, method), grp in shown.groupby([M.PARAM_ARCH, M.TAG_METHOD], sort=True):
            ax.scatter(
                grp[M.FLOPS_MEAN] / scale,
                grp[M.TOP1],
                marker=markers[method],
                s=36,
                color=colours[backbone],
                edgecolors="white",
                linewidths=0.5,
                zorder=3,
            )
            for _, row in grp.iterrows():
                text = _point_label(row)
                if text:
                    kw = {"fontsize": 6.5, "color": "0.15"}
                    labels.append((row[M.FLOPS_MEAN] / scale, row[M.TOP1], text, kw))
        fx = list(frontier[M.FLOPS_MEAN] / scale)
        fy = list(frontier[M.TOP1])
        x_right = max(ref_macs, float(pts[M.FLOPS_MEAN].max())) / scale
        ax.step([*fx, x_right], [*fy, fy[-1]], where="post", color="0.35", linestyle="--",
                linewidth=1.0, zorder=2)  # fmt: skip
        # The corners of that step line, for label placement.
        corners = [(fx[0], fy[0])]
        for x, y0, y1 in zip([*fx[1:], x_right], fy, [*fy[1:], fy[-1]], strict=True):
            corners += [(x, y0), (x, y1)]

        hv_label = (
            f"Pareto frontier\nhypervolume {_fmt_number(hv / scale)}\n"
            f"({_UNIT_PREFIX[flops_unit]}MACs × %)"
        )
        handles: list[Any] = [
            Line2D([], [], color="0.35", linestyle="--", linewidth=1.0, label=hv_label)
        ]
        handles += [
            Line2D([], [], linestyle="none", marker=markers[m], color="0.3", markersize=6,
                   label=METHOD_LABELS.get(m, m))
            for m in sorted(pts[M.TAG_METHOD].dropna().unique(), key=lambda m: (m != "plain", m))
        ]  # fmt: skip
        if len(backbones) > 1:
            handles += [Patch(color=colours[b], label=backbone_label(b)) for b in backbones]

        for (method, source, backbone), grp in plotted.groupby(
            ["method", "source", "backbone"], sort=True
        ):
            grp = grp.sort_values("macs")
            colour = colours[backbone]
            ax.scatter(grp["macs"] / scale, grp["top1"], marker=markers[method], s=44,
                       facecolors="none", edgecolors=colour, linewidths=1.2, zorder=3)  # fmt: skip
            if len(grp) > 1:
                ax.plot(grp["macs"] / scale, grp["top1"], ":", color=colour, linewidth=1.0)
            name = METHOD_LABELS.get(method, method)
            # Beside each point: the method (the plain ResNet's marker says that already,
            # so its authors instead, to tell sources apart), and the setting on a curve.
            tag = str(source).split(",")[0] if method == "plain" else name
            for _, r in grp.iterrows():
                text = f"{tag}, {r.setting}" if len(grp) > 1 and r.setting else tag
                kw = {"fontsize": 6.5, "color": colour, "style": "italic"}
                labels.append((r.macs / scale, r.top1, text, kw))
            legend_label = f"{name}, published\n{_short_source(source)}"
            if legend_label not in {h.get_label() for h in handles}:
                handles.append(
                    Line2D([], [], linestyle="none", marker=markers[method],
                           markerfacecolor="none", markeredgecolor="0.3", markersize=6,
                           label=legend_label)
                )  # fmt: skip

        ax.set_xlabel(_macs_label(flops_unit))
        ax.set_ylabel("Top-1 accuracy (%)")
        if len(hidden):
            low = float(shown[M.TOP1].min())
            if len(plotted):
                low = min(low, float(plotted["top1"].min()))
            span = float(pts[M.TOP1].max()) - low
            ax.set_ylim(low - max(0.08 * span, 0.2), None)
        subtitle = "" if len(backbones) > 1 else f", {backbone_label(backbones[0])}"
        ax.set_title(title or f"{dataset_label(dataset)}{subtitle}: top-1 accuracy vs. computation")
        fig.legend(handles=handles, loc="outside right upper", fontsize=7.5)
        _note(fig, notes)
        _place_labels(fig, ax, labels, corners)
        files = _save(fig, out_stem)

    csv_path = Path(out_stem).parent / f"{Path(out_stem).name}.csv"
    cols = [
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
    )


# --------------------------------------------------------------------------- alpha


def alpha_tradeoff_figure(
    runs: pd.DataFrame, out_stem: str | Path, *, flops_unit: str = "M"
) -> FigureData:
    """Top-1 and MACs against alpha for HRL+SP runs, one line per (backbone, gate)
    (paper Fig. 6 and 8). The plain ResNet's accuracy and cost are dashed references.

    Returns:
        ``data``: backbone, gate, alpha, top1, flops_mean, run_id, sorted by alpha.
    """
    scale, _ = check_unit(flops_unit)
    runs = _finished(runs)
    hrl = finite_rows(runs[runs[M.PARAM_VARIANT] == "hrl+sp"], M.PARAM_ALPHA, M.TOP1, M.FLOPS_MEAN)
    if hrl.empty:
        raise NotEnoughData("no finished HRL+SP run with alpha, top1 and flops_mean")
    data = hrl[["run_id", M.PARAM_ARCH, M.PARAM_GATE, M.TAG_METHOD, M.PARAM_ALPHA, M.TOP1,
                M.FLOPS_MEAN]].sort_values([M.PARAM_ARCH, M.PARAM_GATE, M.PARAM_ALPHA])  # fmt: skip
    data = data.reset_index(drop=True)
    plain = plain_by_backbone(runs)
    colours = _colours(data[M.PARAM_ARCH])
    markers = _markers(data[M.TAG_METHOD])
    with matplotlib.rc_context(_RC):
        fig = _figure(figsize=(6.4, 3.0))
        ax_acc, ax_cost = fig.subplots(1, 2, sharex=True)
        for (backbone, gate), grp in data.groupby([M.PARAM_ARCH, M.PARAM_GATE], sort=True):
            style = dict(
                color=colours[backbone],
                marker=markers[grp[M.TAG_METHOD].iloc[0]],
                markersize=5,
                linewidth=1.3,
                label=f"{backbone_label(backbone)}, {GATE_LABELS.get(gate, gate)}",
            )
            ax_acc.plot(grp[M.PARAM_ALPHA], grp[M.TOP1], **style)
            ax_cost.plot(grp[M.PARAM_ALPHA], grp[M.FLOPS_MEAN] / scale, **style)
        for _, p in plain[plain[M.PARAM_ARCH].isin(colours)].iterrows():
            ref = dict(color=colours[p[M.PARAM_ARCH]], linestyle="--", linewidth=0.9, alpha=0.8)
            ax_acc.axhline(p[M.TOP1], **ref)
            ax_cost.axhline(p[M.FLOPS_MEAN] / scale, **ref)
        ax_acc.set_ylabel("Top-1 accuracy (%)")
        ax_cost.set_ylabel(_macs_label(flops_unit))
        for ax in (ax_acc, ax_cost):
            ax.set_xlabel("Cost weight α")
        ax_acc.set_title("Accuracy")
        ax_cost.set_title("Computation")
        handles, labels = ax_acc.get_legend_handles_labels()
        if len(plain):
            handles.append(Line2D([], [], color="0.3", linestyle="--", linewidth=0.9))
            labels.append("plain ResNet")
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)))
        files = _save(fig, out_stem)
    return FigureData(data, files)


# --------------------------------------------------------------------------- reduction


def select_hrl_runs(runs: pd.DataFrame, tolerance: float = 0.5) -> pd.DataFrame:
    """For each (backbone, gate): the SP run and the HRL+SP run that Fig. 4/5 compare.

    The SP run is the most accurate finished ``variant=sp`` run (ties: the earliest). The
    HRL+SP run is the one with the largest reduction among those within ``tolerance``
    percentage points of the plain ResNet's top-1 (of the SP run's when no plain run
    finished) -- the paper's "preserving accuracy" -- else the most accurate one.

    Returns:
        One row per (backbone, gate) having both: backbone, gate, sp_run_id, hrl_run_id,
        sp_top1, hrl_top1, plain_top1, reference_top1, alpha, sp_reduction, hrl_reduction
        (percent of the plain ResNet's MACs, gate cost included), within_tolerance.
    """
    runs = finite_rows(_finished(runs), M.TOP1, M.FLOPS_MEAN, M.FLOPS_PLAIN)
    runs = runs.assign(_reduction=100.0 - 100.0 * runs[M.FLOPS_MEAN] / runs[M.FLOPS_PLAIN])
    plain = plain_by_backbone(runs).set_index(M.PARAM_ARCH)[M.TOP1].to_dict()
    rows = []
    for (backbone, gate), grp in runs.groupby([M.PARAM_ARCH, M.PARAM_GATE], sort=False):
        sp = grp[grp[M.PARAM_VARIANT] == "sp"].sort_values(M.TOP1, ascending=False, kind="stable")
        hrl = grp[grp[M.PARAM_VARIANT] == "hrl+sp"]
        if sp.empty or hrl.empty:
            continue
        sp = sp.iloc[0]
        plain_top1 = plain.get(backbone, math.nan)
        target = plain_top1 if math.isfinite(plain_top1) else sp[M.TOP1]
        ok = hrl[hrl[M.TOP1] >= target - tolerance - 1e-9]
        if len(ok):
            best = ok.sort_values("_reduction", ascending=False, kind="stable").iloc[0]
        else:
            best = hrl.sort_values(M.TOP1, ascending=False, kind="stable").iloc[0]
        rows.append(
            {
                M.PARAM_ARCH: backbone,
                M.PARAM_GATE: gate,
                "sp_run_id": sp.run_id,
                "hrl_run_id": best.run_id,
                "sp_top1": sp[M.TOP1],
                "hrl_top1": best[M.TOP1],
                "plain_top1": plain_top1,
                "reference_top1": target,
                M.PARAM_ALPHA: best[M.PARAM_ALPHA],
                "sp_reduction": sp["_reduction"],
                "hrl_reduction": best["_reduction"],
                "within_tolerance": bool(len(ok)),
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = {b: i for i, b in enumerate(_backbone_order(out[M.PARAM_ARCH]))}
    return out.sort_values(
        [M.PARAM_ARCH, M.PARAM_GATE], key=lambda s: s.map(order) if s.name == M.PARAM_ARCH else s
    ).reset_index(drop=True)


def reduction_figure(
    runs: pd.DataFrame, out_stem: str | Path, *, tolerance: float = 0.5
) -> FigureData:
    """Computation reduction (percent of the plain ResNet's MACs, gate cost included) of
    SkipNet+SP and SkipNet+HRL+SP, grouped by depth, one colour per gate (Fig. 4/5).

    Returns:
        ``data``: :func:`select_hrl_runs` (which HRL+SP run each bar is, and why).
    """
    data = select_hrl_runs(runs, tolerance)
    if data.empty:
        raise NotEnoughData("no backbone and gate with both a finished SP and HRL+SP run")
    backbones = _backbone_order(data[M.PARAM_ARCH])
    gates = [g for g in ("ff1", "ff2", "rnn") if g in set(data[M.PARAM_GATE])]
    gates += sorted(set(data[M.PARAM_GATE]) - set(gates))
    gate_colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(gates)}
    width = 0.8 / (2 * len(gates))
    with matplotlib.rc_context(_RC):
        fig = _figure(figsize=(max(3.6, 1.5 + 1.3 * len(backbones) * len(gates)), 3.2))
        ax = fig.add_subplot()
        ax.axhline(0.0, color="0.2", linewidth=0.8)
        for i, backbone in enumerate(backbones):
            for j, gate in enumerate(gates):
                sel = data[(data[M.PARAM_ARCH] == backbone) & (data[M.PARAM_GATE] == gate)]
                if sel.empty:
                    continue
                r = sel.iloc[0]
                x0 = i - 0.4 + (2 * j) * width + width / 2
                for k, (value, hatch, alpha) in enumerate(
                    ((r.sp_reduction, "///", 0.45), (r.hrl_reduction, None, 1.0))
                ):
                    bar = ax.bar(
                        x0 + k * width,
                        value,
                        width * 0.95,
                        color=gate_colour[gate],
                        alpha=alpha,
                        hatch=hatch,
                        edgecolor=gate_colour[gate],
                        linewidth=0.8,
                    )
                    text = f"{value:.0f}%"
                    if k == 1 and math.isfinite(r[M.PARAM_ALPHA]):
                        text += f"\nα={_fmt_param(r[M.PARAM_ALPHA])}"
                    ax.bar_label(bar, [text], fontsize=6.5, padding=2)
        ax.set_xticks(range(len(backbones)), [backbone_label(b) for b in backbones])
        ax.set_ylabel("Computation reduction vs. plain (%)")
        ax.set_title("Computation reduction, gate cost included")
        ax.grid(axis="x", visible=False)
        ax.margins(y=0.2)
        handles = []
        for g in gates:
            label = GATE_LABELS.get(g, g)
            handles.append(
                Patch(facecolor=gate_colour[g], alpha=0.45, hatch="///",
                      edgecolor=gate_colour[g], label=f"{label} SP")
            )  # fmt: skip
            handles.append(Patch(facecolor=gate_colour[g], label=f"{label} HRL+SP"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        files = _save(fig, out_stem)
    return FigureData(data, files)


# --------------------------------------------------------------------------- Table 3


def hard_soft_table(
    runs: pd.DataFrame, out_stem: str | Path, *, flops_unit: str = "M"
) -> FigureData:
    """Hard vs. soft gating at similar cost (Table 3).

    Each finished soft run (``variant=soft``) is paired with the hard-gated run
    (``variant`` sp or hrl+sp) of the same dataset and backbone -- the same gate when one
    exists -- whose mean MACs are closest.

    Returns:
        ``data``: two rows per pair (hard first): dataset, model, gate, variant
        (``hard``/``soft``), top1, flops_mean, run_id, pair. Files: ``<stem>.md``,
        ``<stem>.csv``.
    """
    scale, suffix = check_unit(flops_unit)
    runs = finite_rows(_finished(runs), M.TOP1, M.FLOPS_MEAN)
    soft = runs[runs[M.PARAM_VARIANT] == "soft"]
    if soft.empty:
        raise NotEnoughData("no soft-gating runs (variant=soft)")
    hard_all = runs[runs[M.PARAM_VARIANT].isin(["sp", "hrl+sp"])]
    rows = []
    for pair, (_, s) in enumerate(soft.iterrows()):
        same = hard_all[
            (hard_all[M.PARAM_DATASET] == s[M.PARAM_DATASET])
            & (hard_all[M.PARAM_ARCH] == s[M.PARAM_ARCH])
        ]
        if (same[M.PARAM_GATE] == s[M.PARAM_GATE]).any():
            same = same[same[M.PARAM_GATE] == s[M.PARAM_GATE]]
        if same.empty:
            continue
        distance = (same[M.FLOPS_MEAN] - s[M.FLOPS_MEAN]).abs()
        h = same.loc[distance.sort_values(kind="stable").index[0]]
        for kind, r in (("hard", h), ("soft", s)):
            rows.append(
                {
                    M.PARAM_DATASET: r[M.PARAM_DATASET],
                    "model": skipnet_label(r[M.PARAM_ARCH]),
                    M.PARAM_GATE: r[M.PARAM_GATE],
                    M.PARAM_VARIANT: kind,
                    M.TOP1: r[M.TOP1],
                    M.FLOPS_MEAN: r[M.FLOPS_MEAN],
                    "run_id": r["run_id"],
                    "pair": pair,
                }
            )
    if not rows:
        raise NotEnoughData("no hard-gated run (sp or hrl+sp) on the backbone of a soft run")
    data = pd.DataFrame(rows)
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = stem.parent / f"{stem.name}.csv", stem.parent / f"{stem.name}.md"
    data.to_csv(csv_path, index=False)
    macs_head = f"MACs{suffix}" if suffix else "MACs"
    lines = [
        "| Data | Model | Gate | Gating | Top-1 (%) | " + macs_head + " |",
        "|---|---|---|---|---:|---:|",
    ]
    for _, r in data.iterrows():
        lines.append(
            f"| {dataset_label(r[M.PARAM_DATASET])} | {r.model}-{r[M.PARAM_VARIANT].capitalize()} "
            f"| {GATE_LABELS.get(r[M.PARAM_GATE], r[M.PARAM_GATE])} | {r[M.PARAM_VARIANT]} "
            f"| {r[M.TOP1]:.2f} | {r[M.FLOPS_MEAN] / scale:.4g} |"
        )
    md_path.write_text(
        "Hard vs. soft gating at similar computation (each soft run paired with the "
        "hard-gated run of the same backbone and gate with the closest mean MACs).\n\n"
        + "\n".join(lines)
        + "\n"
    )
    return FigureData(data, [md_path, csv_path])


# --------------------------------------------------------------------------- Fig. 9


def variants_figure(runs: pd.DataFrame, out_stem: str | Path) -> FigureData:
    """Top-1 against alpha of HRL+SP, HRL+S and RL (Fig. 9): one panel per backbone, one
    colour per variant, one marker per gate; the plain ResNet dashed.

    Returns:
        ``data``: backbone, gate, variant, alpha, top1, run_id.
    """
    variants = ("hrl+sp", "hrl+s", "rl")
    runs = _finished(runs)
    sel = finite_rows(runs[runs[M.PARAM_VARIANT].isin(variants)], M.PARAM_ALPHA, M.TOP1)
    present = set(sel[M.PARAM_VARIANT])
    if not present & {"hrl+s", "rl"}:
        raise NotEnoughData("no HRL+S or RL runs to compare with HRL+SP")
    data = sel[
        ["run_id", M.PARAM_ARCH, M.PARAM_GATE, M.TAG_METHOD, M.PARAM_VARIANT, M.PARAM_ALPHA, M.TOP1]
    ].sort_values(  # fmt: skip
        [M.PARAM_ARCH, M.PARAM_VARIANT, M.PARAM_GATE, M.PARAM_ALPHA]
    )
    data = data.reset_index(drop=True)
    backbones = _backbone_order(data[M.PARAM_ARCH])
    colour = {v: PALETTE[i] for i, v in enumerate(variants)}
    markers = _markers(data[M.TAG_METHOD])
    plain = plain_by_backbone(runs).set_index(M.PARAM_ARCH)[M.TOP1].to_dict()
    with matplotlib.rc_context(_RC):
        fig = _figure(figsize=(3.4 * len(backbones) + 0.6, 3.0))
        axes = np.atleast_1d(fig.subplots(1, len(backbones), sharey=True, squeeze=False)[0])
        for ax, backbone in zip(axes, backbones, strict=True):
            sub = data[data[M.PARAM_ARCH] == backbone]
            for (variant, gate), grp in sub.groupby([M.PARAM_VARIANT, M.PARAM_GATE], sort=False):
                ax.plot(
                    grp[M.PARAM_ALPHA],
                    grp[M.TOP1],
                    color=colour[variant],
                    marker=markers[grp[M.TAG_METHOD].iloc[0]],
                    markersize=5,
                    linewidth=1.3,
                    label=f"{VARIANT_LABELS[variant]}, {GATE_LABELS.get(gate, gate)}",
                )
            if backbone in plain:
                ax.axhline(plain[backbone], color="0.3", linestyle="--", linewidth=0.9,
                           label="plain ResNet")  # fmt: skip
            ax.set_title(skipnet_label(backbone))
            ax.set_xlabel("Cost weight α")
        axes[0].set_ylabel("Top-1 accuracy (%)")
        seen: dict[str, Any] = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                seen.setdefault(lab, h)
        fig.legend(list(seen.values()), list(seen), loc="outside right upper")
        files = _save(fig, out_stem)
    return FigureData(data, files)


# --------------------------------------------------------------------------- Fig. 11


def per_class_from_samples(per_sample: pd.DataFrame) -> pd.DataFrame:
    """``per_class.csv`` rebuilt from ``per_sample.csv``: label, count, top1 (percent),
    median_skipped, mean_skipped."""
    g = per_sample.assign(_hit=(per_sample["pred"] == per_sample["label"]) * 100.0)
    out = g.groupby("label").agg(
        count=("label", "size"),
        top1=("_hit", "mean"),
        median_skipped=("skipped", "median"),
        mean_skipped=("skipped", "mean"),
    )
    return out.reset_index()


def per_class_figure(
    sp_per_class: pd.DataFrame,
    hrl_per_class: pd.DataFrame,
    out_stem: str | Path,
    *,
    dataset: str | None = None,
    labels: tuple[str, str] = ("SkipNet+SP", "SkipNet+HRL+SP"),
    title: str | None = None,
) -> FigureData:
    """Median skipped blocks per class, SP vs. HRL+SP (Fig. 11a); classes ordered by the
    HRL+SP model's accuracy, which is printed under each class name.

    Args:
        sp_per_class, hrl_per_class: ``per_class.csv`` tables of the two runs.
        dataset: for class names (CIFAR-10, SVHN, Fashion-MNIST), else label numbers.

    Returns:
        ``data``: label, name, sp_median, hrl_median, top1 (HRL+SP), in drawing order.
    """
    merged = hrl_per_class[["label", "top1", "median_skipped"]].merge(
        sp_per_class[["label", "median_skipped"]], on="label", suffixes=("_hrl", "_sp")
    )
    if merged.empty:
        raise NotEnoughData("the SP and HRL+SP per-class tables share no class")
    names = class_names(dataset, merged["label"])
    data = pd.DataFrame(
        {
            "label": merged["label"].astype(int),
            "name": [names[int(c)] for c in merged["label"]],
            "sp_median": merged["median_skipped_sp"].astype(float),
            "hrl_median": merged["median_skipped_hrl"].astype(float),
            "top1": merged["top1"].astype(float),
        }
    )
    data = data.sort_values(["top1", "label"], kind="stable").reset_index(drop=True)
    x = np.arange(len(data))
    with matplotlib.rc_context(_RC):
        fig = _figure(figsize=(max(4.0, 0.55 * len(data) + 1.5), 3.0))
        ax = fig.add_subplot()
        ax.bar(x - 0.2, data["sp_median"], 0.38, color=PALETTE[5], label=labels[0])
        ax.bar(x + 0.2, data["hrl_median"], 0.38, color=PALETTE[0], label=labels[1])
        ticks = [f"{n}\n{a:.0f}%" for n, a in zip(data["name"], data["top1"], strict=True)]
        ax.set_xticks(x, ticks, fontsize=7 if len(data) > 8 else 8)
        ax.set_xlabel("Class (top-1 accuracy of HRL+SP), easiest on the right")
        ax.set_ylabel("Median skipped blocks")
        ax.set_title(title or "Skipped blocks per class")
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper left")
        files = _save(fig, out_stem)
    return FigureData(data, files)


def skip_histogram_figure(
    per_sample: pd.DataFrame,
    out_stem: str | Path,
    *,
    dataset: str | None = None,
    title: str | None = None,
) -> FigureData:
    """Distribution of skipped blocks of the easiest and the hardest class, by accuracy
    (Fig. 11b), each normalised to its class size.

    Returns:
        ``data``: bin_left, bin_right, easy (fraction), hard (fraction);
        ``extra``: easy_label, hard_label, easy_name, hard_name, easy_top1, hard_top1.
    """
    if per_sample.empty:
        raise NotEnoughData("empty per_sample table")
    acc = per_class_from_samples(per_sample).sort_values(["top1", "label"], kind="stable")
    if len(acc) < 2:
        raise NotEnoughData("fewer than two classes in per_sample.csv")
    hard, easy = acc.iloc[0], acc.iloc[-1]
    skipped = per_sample["skipped"].to_numpy(dtype=float)
    if np.allclose(skipped, np.round(skipped)):
        lo, hi = int(skipped.min()), int(skipped.max())
        bins = np.arange(lo - 0.5, hi + 1.5)
    else:  # fractional (halting networks)
        bins = np.histogram_bin_edges(skipped, bins="auto")
    names = class_names(dataset, [easy.label, hard.label])
    counts = {}
    for key, row in (("easy", easy), ("hard", hard)):
        values = per_sample.loc[per_sample["label"] == row.label, "skipped"].to_numpy(float)
        counts[key] = np.histogram(values, bins)[0] / max(len(values), 1)
    data = pd.DataFrame(
        {"bin_left": bins[:-1], "bin_right": bins[1:], "easy": counts["easy"],
         "hard": counts["hard"]}
    )  # fmt: skip
    extra = {
        "easy_label": int(easy.label),
        "hard_label": int(hard.label),
        "easy_name": names[int(easy.label)],
        "hard_name": names[int(hard.label)],
        "easy_top1": float(easy.top1),
        "hard_top1": float(hard.top1),
    }
    centres = (bins[:-1] + bins[1:]) / 2
    w = np.diff(bins) * 0.42
    with matplotlib.rc_context(_RC):
        fig = _figure(figsize=(4.6, 3.0))
        ax = fig.add_subplot()
        ax.bar(centres - w / 2, counts["hard"], w, color=PALETTE[1],
               label=f"hardest: {extra['hard_name']} ({extra['hard_top1']:.0f}%)")  # fmt: skip
        ax.bar(centres + w / 2, counts["easy"], w, color=PALETTE[0],
               label=f"easiest: {extra['easy_name']} ({extra['easy_top1']:.0f}%)")  # fmt: skip
        ax.set_xlabel("Skipped blocks per image")
        ax.set_ylabel("Fraction of the class's images")
        ax.set_title(title or "Skipped blocks, easiest vs. hardest class")
        ax.grid(axis="x", visible=False)
        ax.legend(loc="best")
        files = _save(fig, out_stem)
    return FigureData(data, files, extra=extra)


# --------------------------------------------------------------------------- Fig. 10


def _unnormalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(N, C, H, W) normalised -> (N, H, W, C) in [0, 1]."""
    c = images.shape[1]
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float32).reshape(-1), (c,))
    std = np.broadcast_to(np.asarray(std, dtype=np.float32).reshape(-1), (c,))
    out = images * std[None, :, None, None] + mean[None, :, None, None]
    return np.clip(out, 0.0, 1.0).transpose(0, 2, 3, 1)


def easy_hard_grid(
    easy_hard: Mapping[str, np.ndarray] | str | Path,
    out_stem: str | Path,
    *,
    dataset: str | None = None,
    per_row: int = 8,
    rows_each: int = 2,
    title: str | None = None,
) -> FigureData:
    """Images the network skipped most of (easy) and least of (hard), Fig. 10.

    Args:
        easy_hard: the arrays of ``easy_hard.npz`` (or its path).
        per_row, rows_each: grid shape; at most ``per_row * rows_each`` images of each kind.

    Returns:
        ``data``: kind, position, label, skipped of each drawn image;
        ``extra``: ``easy``/``hard``, the drawn (N, H, W, C) images in [0, 1].
    """
    if not isinstance(easy_hard, Mapping):
        with np.load(easy_hard) as npz:
            easy_hard = {k: npz[k] for k in npz.files}
    cap = per_row * rows_each
    kinds = {}
    for kind in ("easy", "hard"):
        images = np.asarray(easy_hard[f"{kind}_images"], dtype=np.float32)[:cap]
        if images.ndim != 4 or not len(images):
            raise NotEnoughData(f"easy_hard.npz has no {kind} images")
        kinds[kind] = (
            _unnormalise(images, easy_hard["mean"], easy_hard["std"]),
            np.asarray(easy_hard[f"{kind}_labels"])[:cap],
            np.asarray(easy_hard[f"{kind}_skipped"], dtype=float)[:cap],
        )
    names = class_names(dataset, np.concatenate([k[1] for k in kinds.values()]))
    per_row = min(per_row, max(len(k[0]) for k in kinds.values()))
    n_rows = sum(math.ceil(len(k[0]) / per_row) for k in kinds.values())
    rows = []
    with matplotlib.rc_context({**_RC, "axes.grid": False}):
        fig = _figure(figsize=(max(per_row, 3) * 0.95, n_rows * 1.1 + 0.45))
        grid = fig.add_gridspec(n_rows, per_row)
        r0 = 0
        for kind, (images, labels, skipped) in kinds.items():
            for i, img in enumerate(images):
                ax = fig.add_subplot(grid[r0 + i // per_row, i % per_row])
                if img.shape[-1] == 1:
                    ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
                else:
                    ax.imshow(img)
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(True)
                    spine.set_color(PALETTE[0] if kind == "easy" else PALETTE[1])
                    spine.set_linewidth(1.5)
                ax.set_title(f"{names[int(labels[i])]} · {skipped[i]:g}", fontsize=6, pad=2)
                if i == 0:
                    ax.set_ylabel(kind, fontsize=9, rotation=90)
                rows.append(
                    {"kind": kind, "position": i, "label": int(labels[i]), "skipped": skipped[i]}
                )
            r0 += math.ceil(len(images) / per_row)
        fig.suptitle(
            title
            or "Easy (most blocks skipped) and hard (fewest skipped) images\n"
            "above each: class · skipped blocks",
            fontsize=8,
        )
        files = _save(fig, out_stem)
    return FigureData(pd.DataFrame(rows), files, extra={k: v[0] for k, v in kinds.items()})
