"""What the two frontier figures share: the series of a comparison and their looks, the run
points of each method, the frontier as a step line, and the canvas, legend and caption.

The figures themselves: :mod:`.frontier_macs` (top-1 against MACs, with published
baselines: SkipNet's Fig. 7) and :mod:`.frontier_latency` (against measured latency).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from skipnet_sweep import metrics as M
from skipnet_sweep.pareto import interval_front, pareto_front
from skipnet_sweep.reporting import style as S
from skipnet_sweep.reporting.common import new_figure, note

__all__ = [
    "RING",
    "canvas",
    "caption",
    "frontier_rows",
    "method_groups",
    "method_handles",
    "own_runs",
    "runs_shown",
    "scatter_runs",
    "series_looks",
    "series_order",
    "step_line",
]

# The ring around a frontier point.
RING = {"marker": "o", "s": 120, "facecolors": "none", "edgecolors": "0.1", "linewidths": 0.9}


def series_order(pts: pd.DataFrame, series: str | None) -> list[Any]:
    """The series of a comparison in the order their runs come; [None]: all runs are one."""
    return [None] if series is None else list(dict.fromkeys(pts[series]))


def own_runs(pts: pd.DataFrame, series: str | None, name: Any) -> pd.DataFrame:
    """The runs of series ``name`` (all of them when the runs are one study)."""
    return pts if series is None else pts[pts[series] == name]


def series_looks(pts: pd.DataFrame, series: str | None) -> Iterator[tuple[Any, str, str]]:
    """Each series' name, colour and frontier line style (:func:`.style.series_style`); one
    grey dashed frontier when the runs are one study."""
    for i, name in enumerate(series_order(pts, series)):
        colour, linestyle = S.series_style(i) if series is not None else ("0.35", "--")
        yield name, colour, linestyle


def method_groups(
    runs: pd.DataFrame, series: str | None, name: Any, colour: str
) -> Iterator[tuple[str, pd.DataFrame, S.MethodStyle, str]]:
    """A series' runs by method: the method, its runs, its style and the colour they are
    filled with (the method's; in a comparison, the series')."""
    for method, grp in own_runs(runs, series, name).groupby(M.TAG_METHOD, sort=True):
        st = S.method_style(method, grp)
        yield method, grp, st, st.color if series is None else colour


def scatter_runs(ax: Any, x: Any, y: Any, st: S.MethodStyle, face: str, gid: str) -> None:
    """Runs as filled markers of their method."""
    ax.scatter(x, y, marker=st.marker, s=36, color=face, edgecolors="white", linewidths=0.5,
               zorder=3, gid=gid)  # fmt: skip


def method_handles(pts: pd.DataFrame, series: str | None) -> list[Line2D]:
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


def frontier_rows(
    pts: pd.DataFrame, x: str, series: str | None, interval: tuple[str, str] | None = None
) -> pd.DataFrame:
    """Marks each run ``on_frontier`` of its own series (top-1 against ``x``; with
    ``interval``, the columns of ``x``'s low and high ends, beyond their noise:
    ``pareto.interval_front``) and returns those runs, by series and increasing ``x``."""
    pts["on_frontier"] = False
    order = series_order(pts, series)
    for name in order:
        grp = own_runs(pts, series, name)
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


def step_line(ax: Any, frontier: pd.DataFrame, x: str, x_right: float | None, **kw: Any) -> list:
    """A frontier as a step line (on to ``x_right`` at its best top-1); returns its corners."""
    fx, fy = list(frontier[x]), list(frontier[M.TOP1])
    if x_right is not None:
        fx, fy = [*fx, x_right], [*fy, fy[-1]]
    ax.step(fx, fy, where="post", zorder=2, **kw)
    corners = [(fx[0], fy[0])]
    for x1, y0, y1 in zip(fx[1:], fy[:-1], fy[1:], strict=True):
        corners += [(x1, y0), (x1, y1)]
    return corners


@contextmanager
def canvas() -> Iterator[tuple[Figure, Any]]:
    """A frontier figure and its axes, in the style sheet (which saving needs too)."""
    with matplotlib.rc_context(S.RC):
        fig = new_figure(figsize=(7.2, 4.4))
        yield fig, fig.add_subplot()


def caption(fig: Figure, handles: list[Any], notes: list[str]) -> None:
    """The legend to the right of the axes, the notes under them."""
    fig.legend(handles=handles, loc="outside right upper", fontsize=7.5)
    note(fig, notes)


def runs_shown(pts: pd.DataFrame, series: str | None, runs: str, extra: str = "") -> str:
    """How many runs a figure shows, or in a comparison how many studies and runs."""
    if series is None:
        return f"all {len(pts)} finished runs{extra}"
    return f"{len(series_order(pts, series))} studies, {len(pts)} {runs}{extra}"
