"""Annotating points without overlap: each label goes at the first spot around its point
that covers no other label, marker or frontier segment."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

__all__ = ["place_labels"]

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


def place_labels(
    fig: Figure,
    ax: Any,
    items: Sequence[tuple[float, float, str, dict[str, Any]]],
    polylines: Sequence[Sequence[tuple[float, float]]] = (),
) -> None:
    """Annotate ``(x, y, text, text_kw)`` items, each at the first spot around its point
    that overlaps no other label, no marker and no segment of a line in ``polylines`` (data
    coordinates; the frontiers), else at the least-overlapping spot.

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
    lines = [
        Bbox.from_extents(min(a[0], b[0]) - 1, min(a[1], b[1]) - 1, max(a[0], b[0]) + 1,
                          max(a[1], b[1]) + 1)
        for polyline in polylines
        for a, b in itertools.pairwise([ax.transData.transform(p) for p in polyline])
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
