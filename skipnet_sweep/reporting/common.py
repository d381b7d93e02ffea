"""What every figure function shares apart from its look (that is :mod:`.style`): the
record of what it drew, the error for data that cannot support it, row filters, and
writing the files.

Figures are drawn on :class:`matplotlib.figure.Figure` directly, so no pyplot state or GUI
backend is involved.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from skipnet_sweep import metrics as M

__all__ = [
    "FigureData",
    "NotEnoughData",
    "finished",
    "finite_rows",
    "new_figure",
    "note",
    "plain_by_backbone",
    "save",
    "short_source",
]


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
        figure: the drawn figure (None for tables), for checks of what is on it.
    """

    data: pd.DataFrame
    files: list[Path]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    figure: Figure | None = field(default=None, repr=False)


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished runs (as ``runs.finished``, without importing MLflow: figures work on
    any DataFrame)."""
    if "status" in runs.columns:
        runs = runs[runs["status"] == "FINISHED"]
    return runs.reset_index(drop=True)


def finite_rows(runs: pd.DataFrame, *cols: str) -> pd.DataFrame:
    """The rows whose ``cols`` are all finite numbers."""
    keep = np.ones(len(runs), dtype=bool)
    for c in cols:
        keep &= np.isfinite(pd.to_numeric(runs[c], errors="coerce").to_numpy(dtype=float))
    return runs[keep].reset_index(drop=True)


def plain_by_backbone(runs: pd.DataFrame) -> pd.DataFrame:
    """The most accurate plain-ResNet run (phase ``baseline``) of each (dataset, backbone)."""
    plain = runs[runs[M.TAG_STAGE] == "baseline"]
    plain = finite_rows(plain, M.TOP1, M.FLOPS_MEAN)
    if plain.empty:
        return plain
    plain = plain.sort_values([M.TOP1], ascending=False, kind="stable")
    return plain.drop_duplicates([M.PARAM_DATASET, M.PARAM_ARCH]).reset_index(drop=True)


def short_source(source: str) -> str:
    """A citation up to its first ``;`` (authors, venue)."""
    return str(source).split(";")[0].strip()


def new_figure(**kw: Any) -> Figure:
    """A constrained-layout figure, not attached to pyplot."""
    return Figure(layout="constrained", **kw)


def note(fig: Figure, lines: Sequence[str], width: int = 110) -> None:
    """Print ``lines`` under the axes (kept inside the saved image by the tight bbox)."""
    if not lines:
        return
    text = "\n".join(textwrap.fill(line, width, subsequent_indent="    ") for line in lines)
    fig.text(0.0, 0.0, text, ha="left", va="top", fontsize=7, color="0.25", wrap=False)


def save(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    files = []
    for ext in ("png", "pdf"):
        path = stem.parent / f"{stem.name}.{ext}"
        fig.savefig(path, bbox_inches="tight", pad_inches=0.05)
        files.append(path)
    return files
