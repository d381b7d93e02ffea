"""SkipNet against its own backbone: the computation reduction of SP and HRL+SP (Fig. 4/5)
and hard vs. soft gating at similar cost (Table 3)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.patches import Patch

from skipnet_sweep import metrics as M
from skipnet_sweep.reporting import style as S
from skipnet_sweep.reporting.common import (
    FigureData,
    NotEnoughData,
    finished,
    finite_rows,
    new_figure,
    note,
    plain_by_backbone,
    save,
)

__all__ = ["RULE_MOST_ACCURATE", "RULE_WITHIN", "hard_soft_table", "reduction_figure",
           "select_hrl_runs"]  # fmt: skip

# Which rule chose a bar's HRL+SP run (column ``rule`` of select_hrl_runs).
RULE_WITHIN = "within_tolerance"
RULE_MOST_ACCURATE = "most_accurate"


def select_hrl_runs(runs: pd.DataFrame, tolerance: float = 0.5) -> pd.DataFrame:
    """For each (backbone, gate): the SP run and the HRL+SP run that Fig. 4/5 compare.

    The SP run is the most accurate finished ``variant=sp`` run (ties: the earliest). The
    HRL+SP run is the one with the largest reduction among those within ``tolerance``
    percentage points of the plain ResNet's top-1 (of the SP run's when no plain run
    finished) -- the paper's "preserving accuracy" -- else the most accurate one.

    Returns:
        One row per (backbone, gate) having both: backbone, gate, method, sp_run_id,
        hrl_run_id, sp_top1, hrl_top1, plain_top1, reference_top1, reference (``plain`` or
        ``sp``: whose top-1 the tolerance is measured from), alpha, sp_reduction,
        hrl_reduction (percent of the plain ResNet's MACs, gate cost included),
        within_tolerance, rule (:data:`RULE_WITHIN` or :data:`RULE_MOST_ACCURATE`).
    """
    runs = finite_rows(finished(runs), M.TOP1, M.FLOPS_MEAN, M.FLOPS_PLAIN)
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
        has_plain = math.isfinite(plain_top1)
        target = plain_top1 if has_plain else sp[M.TOP1]
        ok = hrl[hrl[M.TOP1] >= target - tolerance - 1e-9]
        if len(ok):
            best = ok.sort_values("_reduction", ascending=False, kind="stable").iloc[0]
        else:
            best = hrl.sort_values(M.TOP1, ascending=False, kind="stable").iloc[0]
        rows.append(
            {
                M.PARAM_ARCH: backbone,
                M.PARAM_GATE: gate,
                M.TAG_METHOD: sp[M.TAG_METHOD],
                "sp_run_id": sp.run_id,
                "hrl_run_id": best.run_id,
                "sp_top1": sp[M.TOP1],
                "hrl_top1": best[M.TOP1],
                "plain_top1": plain_top1,
                "reference_top1": target,
                "reference": "plain" if has_plain else "sp",
                M.PARAM_ALPHA: best[M.PARAM_ALPHA],
                "sp_reduction": sp["_reduction"],
                "hrl_reduction": best["_reduction"],
                "within_tolerance": bool(len(ok)),
                "rule": RULE_WITHIN if len(ok) else RULE_MOST_ACCURATE,
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = {b: i for i, b in enumerate(S.backbone_order(out[M.PARAM_ARCH]))}
    return out.sort_values(
        [M.PARAM_ARCH, M.PARAM_GATE], key=lambda s: s.map(order) if s.name == M.PARAM_ARCH else s
    ).reset_index(drop=True)


def selection_notes(data: pd.DataFrame, tolerance: float) -> list[str]:
    """The caption of Fig. 4/5: the rule, and each bar the rule could not serve."""
    lines = [
        f"HRL+SP bar: the run with the largest reduction whose top-1 is within {tolerance:g} "
        "pt of the plain ResNet's (of the SP run's when no plain run finished); if no α "
        "qualifies, the most accurate HRL+SP run (marked * on the bar)."
    ]
    for _, r in data.iterrows():
        name = f"{S.method_style(r[M.TAG_METHOD]).label}, {S.backbone_label(r[M.PARAM_ARCH])}"
        whose = "plain ResNet" if r.reference == "plain" else "SP run (no plain run finished)"
        alpha = f"α={S.fmt_param(r[M.PARAM_ALPHA])}" if math.isfinite(r[M.PARAM_ALPHA]) else "α?"
        if r.rule == RULE_WITHIN:
            lines.append(
                f"{name}: {alpha}, top-1 {r.hrl_top1:.2f}% vs. {whose} "
                f"{r.reference_top1:.2f}% (rule: within {tolerance:g} pt)."
            )
        else:
            lines.append(
                f"{name}: no α within {tolerance:g} pt of the {whose} ({r.reference_top1:.2f}%); "
                f"shown: the most accurate, {alpha} at {r.hrl_top1:.2f}% (rule: fallback)."
            )
    return lines


def reduction_figure(
    runs: pd.DataFrame, out_stem: str | Path, *, tolerance: float = 0.5
) -> FigureData:
    """Computation reduction (percent of the plain ResNet's MACs, gate cost included) of
    SkipNet+SP (hatched) and SkipNet+HRL+SP (solid), grouped by depth, in each method's
    colour (Fig. 4/5). The caption states the selection rule and which rule chose each bar.

    Returns:
        ``data``: :func:`select_hrl_runs` (which HRL+SP run each bar is, and why);
        ``notes``: the caption.
    """
    data = select_hrl_runs(runs, tolerance)
    if data.empty:
        raise NotEnoughData("no backbone and gate with both a finished SP and HRL+SP run")
    backbones = S.backbone_order(data[M.PARAM_ARCH])
    gates = [g for g in ("ff1", "ff2", "rnn") if g in set(data[M.PARAM_GATE])]
    gates += sorted(set(data[M.PARAM_GATE]) - set(gates))
    method_of = dict(zip(data[M.PARAM_GATE], data[M.TAG_METHOD], strict=True))
    colour = {g: S.method_style(method_of[g]).color for g in gates}
    width = 0.8 / (2 * len(gates))
    notes = selection_notes(data, tolerance)
    datasets = finished(runs)[M.PARAM_DATASET].dropna()
    with matplotlib.rc_context(S.RC):
        fig = new_figure(figsize=(max(4.2, 1.5 + 1.3 * len(backbones) * len(gates)), 3.4))
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
                    bar = ax.bar(x0 + k * width, value, width * 0.95, color=colour[gate],
                                 alpha=alpha, hatch=hatch, edgecolor=colour[gate],
                                 linewidth=0.8)  # fmt: skip
                    text = f"{value:.0f}%"
                    if k == 1 and math.isfinite(r[M.PARAM_ALPHA]):
                        text += f"\nα={S.fmt_param(r[M.PARAM_ALPHA])}"
                        text += "*" if r.rule == RULE_MOST_ACCURATE else ""
                    ax.bar_label(bar, [text], fontsize=6.5, padding=2)
        ax.set_xticks(range(len(backbones)), [S.backbone_label(b) for b in backbones])
        ax.set_ylabel("Computation reduction vs. plain (%)")
        chosen = ", ".join(
            f"{S.GATE_LABELS.get(r[M.PARAM_GATE], r[M.PARAM_GATE])} α={S.fmt_param(r[M.PARAM_ALPHA])}"
            for _, r in data.iterrows()
        )
        ax.set_title(
            S.title("Computation reduction of SP and HRL+SP, gate cost included",
                    dataset=datasets, backbones=backbones, shown=f"HRL+SP at {chosen}")
        )  # fmt: skip
        ax.grid(axis="x", visible=False)
        ax.margins(y=0.2)
        handles = []
        for g in gates:
            label = S.method_style(method_of[g]).label
            handles.append(Patch(facecolor=colour[g], alpha=0.45, hatch="///",
                                 edgecolor=colour[g], label=f"{label}, SP"))  # fmt: skip
            handles.append(Patch(facecolor=colour[g], label=f"{label}, HRL+SP"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        note(fig, notes)
        files = save(fig, out_stem)
    return FigureData(data, files, notes=notes, figure=fig)


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
    scale, suffix = S.check_unit(flops_unit)
    runs = finite_rows(finished(runs), M.TOP1, M.FLOPS_MEAN)
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
                    "model": S.skipnet_label(r[M.PARAM_ARCH]),
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
            f"| {S.dataset_label(r[M.PARAM_DATASET])} | {r.model}-{r[M.PARAM_VARIANT].capitalize()} "
            f"| {S.GATE_LABELS.get(r[M.PARAM_GATE], r[M.PARAM_GATE])} | {r[M.PARAM_VARIANT]} "
            f"| {r[M.TOP1]:.2f} | {r[M.FLOPS_MEAN] / scale:.4g} |"
        )
    md_path.write_text(
        "Hard vs. soft gating at similar computation (each soft run paired with the "
        "hard-gated run of the same backbone and gate with the closest mean MACs).\n\n"
        + "\n".join(lines)
        + "\n"
    )
    return FigureData(data, [md_path, csv_path])
