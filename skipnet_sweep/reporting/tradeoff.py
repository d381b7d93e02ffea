"""Figures over the cost weight alpha: top-1 and MACs of HRL+SP (Fig. 6/8), and the
training variants HRL+SP, HRL+S and RL (Fig. 9).

Colour and marker are the method's (the gate design); the backbone is the line style in
Fig. 6/8 and the panel in Fig. 9; the variant is the line style in Fig. 9.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from skipnet_sweep import metrics as M
from skipnet_sweep.reporting import style as S
from skipnet_sweep.reporting.common import (
    FigureData,
    NotEnoughData,
    finished,
    finite_rows,
    new_figure,
    plain_by_backbone,
    save,
)

__all__ = ["alpha_tradeoff_figure", "variants_figure"]

_BACKBONE_LINES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
VARIANT_LINES = {"hrl+sp": "-", "hrl+s": "--", "rl": ":"}
_PLAIN_LINE = (0, (6, 2, 1, 2))  # the plain ResNet's reference, unlike any variant's line


def _alpha_range(alphas: pd.Series) -> str:
    lo, hi = float(alphas.min()), float(alphas.max())
    span = S.fmt_param(lo) if lo == hi else f"{S.fmt_param(lo)} to {S.fmt_param(hi)}"
    return f"α = {span}, {len(alphas)} runs"


def alpha_tradeoff_figure(
    runs: pd.DataFrame, out_stem: str | Path, *, flops_unit: str = "M"
) -> FigureData:
    """Top-1 and MACs against alpha for HRL+SP runs, one line per (backbone, gate)
    (paper Fig. 6 and 8). The plain ResNet's accuracy and cost are references in the plain
    ResNet's colour, in the backbone's line style.

    Returns:
        ``data``: backbone, gate, method, alpha, top1, flops_mean, run_id, sorted by alpha.
    """
    scale, _ = S.check_unit(flops_unit)
    runs = finished(runs)
    hrl = finite_rows(runs[runs[M.PARAM_VARIANT] == "hrl+sp"], M.PARAM_ALPHA, M.TOP1, M.FLOPS_MEAN)
    if hrl.empty:
        raise NotEnoughData("no finished HRL+SP run with alpha, top1 and flops_mean")
    data = hrl[["run_id", M.PARAM_DATASET, M.PARAM_ARCH, M.PARAM_GATE, M.TAG_METHOD,
                M.PARAM_ALPHA, M.TOP1, M.FLOPS_MEAN]]  # fmt: skip
    data = data.sort_values([M.PARAM_ARCH, M.PARAM_GATE, M.PARAM_ALPHA]).reset_index(drop=True)
    backbones = S.backbone_order(data[M.PARAM_ARCH])
    line = {b: _BACKBONE_LINES[i % len(_BACKBONE_LINES)] for i, b in enumerate(backbones)}
    plain = plain_by_backbone(runs)
    plain = plain[plain[M.PARAM_ARCH].isin(backbones)]
    plain_style = S.method_style("plain")
    with matplotlib.rc_context(S.RC):
        fig = new_figure(figsize=(6.4, 3.3))
        ax_acc, ax_cost = fig.subplots(1, 2, sharex=True)
        for (backbone, method), grp in data.groupby([M.PARAM_ARCH, M.TAG_METHOD], sort=True):
            st = S.method_style(method)
            label = st.label + (f", {S.backbone_label(backbone)}" if len(backbones) > 1 else "")
            kw = dict(color=st.color, marker=st.marker, markersize=5, linewidth=1.3,
                      linestyle=line[backbone], label=label)  # fmt: skip
            ax_acc.plot(grp[M.PARAM_ALPHA], grp[M.TOP1], **kw)
            ax_cost.plot(grp[M.PARAM_ALPHA], grp[M.FLOPS_MEAN] / scale, **kw)
        for _, p in plain.iterrows():
            ref = dict(color=plain_style.color, linestyle=line[p[M.PARAM_ARCH]], linewidth=0.8,
                       alpha=0.7)  # fmt: skip
            ax_acc.axhline(p[M.TOP1], **ref)
            ax_cost.axhline(p[M.FLOPS_MEAN] / scale, **ref)
        ax_acc.set_ylabel(S.top1_label(hrl))
        ax_cost.set_ylabel(S.macs_label(flops_unit))
        for ax in (ax_acc, ax_cost):
            ax.set_xlabel("Cost weight α")
        ax_acc.set_title("Accuracy")
        ax_cost.set_title("Computation")
        fig.suptitle(
            S.title(
                "HRL+SP: accuracy and computation vs. α",
                dataset=data[M.PARAM_DATASET].dropna(),
                backbones=backbones,
                shown=_alpha_range(data[M.PARAM_ALPHA]),
            ),
            fontsize=9.5,
        )
        handles, labels = ax_acc.get_legend_handles_labels()
        for _, p in plain.iterrows():
            handles.append(Line2D([], [], color=plain_style.color, linewidth=0.8, alpha=0.7,
                                  linestyle=line[p[M.PARAM_ARCH]]))  # fmt: skip
            labels.append(f"plain {S.backbone_label(p[M.PARAM_ARCH])}")
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)))
        files = save(fig, out_stem)
    return FigureData(data, files, figure=fig)


def variants_figure(runs: pd.DataFrame, out_stem: str | Path) -> FigureData:
    """Top-1 against alpha of HRL+SP, HRL+S and RL (Fig. 9): one panel per backbone, the
    method's colour and marker, one line style per variant; the plain ResNet as a
    reference line.

    Returns:
        ``data``: backbone, gate, method, variant, alpha, top1, run_id.
    """
    variants = tuple(VARIANT_LINES)
    runs = finished(runs)
    sel = finite_rows(runs[runs[M.PARAM_VARIANT].isin(variants)], M.PARAM_ALPHA, M.TOP1)
    present = set(sel[M.PARAM_VARIANT])
    if not present & {"hrl+s", "rl"}:
        raise NotEnoughData("no HRL+S or RL runs to compare with HRL+SP")
    data = sel[["run_id", M.PARAM_DATASET, M.PARAM_ARCH, M.PARAM_GATE, M.TAG_METHOD,
                M.PARAM_VARIANT, M.PARAM_ALPHA, M.TOP1]]  # fmt: skip
    data = data.sort_values([M.PARAM_ARCH, M.PARAM_VARIANT, M.PARAM_GATE, M.PARAM_ALPHA])
    data = data.reset_index(drop=True)
    backbones = S.backbone_order(data[M.PARAM_ARCH])
    plain = plain_by_backbone(runs).set_index(M.PARAM_ARCH)[M.TOP1].to_dict()
    plain_style = S.method_style("plain")
    with matplotlib.rc_context(S.RC):
        fig = new_figure(figsize=(3.4 * len(backbones) + 0.6, 3.3))
        axes = np.atleast_1d(fig.subplots(1, len(backbones), sharey=True, squeeze=False)[0])
        for ax, backbone in zip(axes, backbones, strict=True):
            sub = data[data[M.PARAM_ARCH] == backbone]
            for (variant, method), grp in sub.groupby([M.PARAM_VARIANT, M.TAG_METHOD], sort=False):
                st = S.method_style(method)
                ax.plot(grp[M.PARAM_ALPHA], grp[M.TOP1], color=st.color, marker=st.marker,
                        markersize=5, linewidth=1.3, linestyle=VARIANT_LINES[variant],
                        label=f"{st.label}, {S.VARIANT_LABELS[variant]}")  # fmt: skip
            if backbone in plain:
                ax.axhline(plain[backbone], color=plain_style.color, linestyle=_PLAIN_LINE,
                           linewidth=0.9, label="plain ResNet")  # fmt: skip
            ax.set_title(S.skipnet_label(backbone))
            ax.set_xlabel("Cost weight α")
        axes[0].set_ylabel(S.top1_label(sel))
        fig.suptitle(
            S.title(
                "Training variants: HRL+SP, HRL+S, RL",
                dataset=data[M.PARAM_DATASET].dropna(),
                backbones=backbones,
                shown=_alpha_range(data[M.PARAM_ALPHA]),
            ),
            fontsize=9.5,
        )
        seen: dict[str, Any] = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                seen.setdefault(lab, h)
        fig.legend(list(seen.values()), list(seen), loc="outside right upper")
        files = save(fig, out_stem)
    return FigureData(data, files, figure=fig)
