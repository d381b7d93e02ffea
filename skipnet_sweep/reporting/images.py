"""The images a network skipped most and least of (Fig. 10)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from skipnet_sweep.reporting import style as S
from skipnet_sweep.reporting.common import FigureData, NotEnoughData, new_figure, save

__all__ = ["easy_hard_grid"]


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
    backbone: str | None = None,
    shown: str | None = None,
    per_row: int = 8,
    rows_each: int = 2,
    title: str | None = None,
) -> FigureData:
    """Images the network skipped most of (easy) and least of (hard), Fig. 10.

    Args:
        easy_hard: the arrays of ``easy_hard.npz`` (or its path).
        dataset, backbone: of the run (class names, title).
        shown: the run, for the title (:func:`.style.describe_run`).
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
    names = S.class_names(dataset, np.concatenate([k[1] for k in kinds.values()]))
    per_row = min(per_row, max(len(k[0]) for k in kinds.values()))
    n_rows = sum(math.ceil(len(k[0]) / per_row) for k in kinds.values())
    rows = []
    with matplotlib.rc_context({**S.RC, "axes.grid": False}):
        fig = new_figure(figsize=(max(per_row, 3) * 0.95, n_rows * 1.1 + 0.45))
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
                    spine.set_color(S.KIND_COLOURS[kind])
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
            or S.title(
                "Easy (most blocks skipped) and hard (fewest skipped) images; "
                "above each: class · skipped blocks",
                dataset=dataset,
                backbones=backbone,
                shown=shown,
            ),
            fontsize=8,
        )
        files = save(fig, out_stem)
    extra = {k: v[0] for k, v in kinds.items()}
    return FigureData(pd.DataFrame(rows), files, extra=extra, figure=fig)
