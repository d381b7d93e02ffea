"""A study report's summary: one row per finished run (``summary.csv``, :func:`summary_table`)
and the sections of ``summary.md``: what the runs are and how they were chosen, the table,
the runs not finished, and the figures made and not made."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from skipnet_sweep import metrics as M
from skipnet_sweep.pareto import format_hypervolume, pareto_mask
from skipnet_sweep.reporting import style as S
from skipnet_sweep.reporting.common import finite_rows, plain_by_backbone
from skipnet_sweep.reporting.frontier_macs import ParetoData
from skipnet_sweep.reporting.runs import finished
from skipnet_sweep.routing import NO_SKIP, PRUNES, ROUTES, routing_kind

__all__ = [
    "SUMMARY",
    "figures_section",
    "not_finished_section",
    "overview",
    "runs_section",
    "summary_table",
]

SUMMARY = "summary.md"
# Row order of the summary table: the plain ResNet, SkipNet by gate, then the halting nets;
# variants in the order the paper introduces them.
_METHOD_ORDER = ["plain", "skipnet-ff1", "skipnet-ff2", "skipnet-rnn", "act", "sact"]
_VARIANT_ORDER = ["baseline", "sp", "soft", "hrl+sp", "hrl+s", "rl", "act", "sact"]


def summary_table(runs: pd.DataFrame, flops_unit: str = "M") -> pd.DataFrame:
    """One row per finished run: backbone, method, variant, alpha/tau, top-1, MACs,
    reduction and top-1 change against the plain ResNet of the same dataset and backbone
    (its finished baseline run, else the run's ``flops_plain``), and frontier membership
    (over all finished runs of the dataset)."""
    scale, _ = S.check_unit(flops_unit)
    done = finite_rows(finished(runs), M.TOP1, M.FLOPS_MEAN)
    plain = plain_by_backbone(done).set_index([M.PARAM_DATASET, M.PARAM_ARCH])
    rows = []
    on_front: dict[str, bool] = {}
    for _, grp in done.groupby(M.PARAM_DATASET, dropna=False):
        mask = pareto_mask(grp[[M.FLOPS_MEAN, M.TOP1]].to_numpy(dtype=float))
        on_front.update(zip(grp["run_id"], mask, strict=True))
    for _, r in done.iterrows():
        key = (r[M.PARAM_DATASET], r[M.PARAM_ARCH])
        if key in plain.index:
            ref_macs, ref_top1 = plain.loc[key, M.FLOPS_MEAN], plain.loc[key, M.TOP1]
        else:
            ref_macs, ref_top1 = r.get(M.FLOPS_PLAIN, math.nan), math.nan
        param = ""
        if r[M.TAG_STAGE] in ("act", "sact") and math.isfinite(r[M.PARAM_TAU]):
            param = f"τ={r[M.PARAM_TAU]:g}"
        elif math.isfinite(r[M.PARAM_ALPHA]):
            param = f"α={r[M.PARAM_ALPHA]:g}"
        rows.append(
            {
                "dataset": r[M.PARAM_DATASET],
                "backbone": r[M.PARAM_ARCH],
                "method": r[M.TAG_METHOD],
                # How figures name it (a plugin's label comes from its runs' tags).
                "method_label": S.method_style(r[M.TAG_METHOD], r).label,
                "variant": r[M.PARAM_VARIANT],
                "alpha/tau": param,
                "top1": r[M.TOP1],
                "macs": r[M.FLOPS_MEAN] / scale,
                "reduction_pct": 100.0 * (1.0 - r[M.FLOPS_MEAN] / ref_macs)
                if ref_macs and math.isfinite(ref_macs)
                else math.nan,
                "delta_top1": r[M.TOP1] - ref_top1,
                "pareto": on_front[r["run_id"]],
                # Measured, not counted: the plain ResNet's latency over this run's (batch 1).
                "speedup_b1": r.get(M.speedup(1), math.nan),
                "speedup_q1_b1": r.get(M.speedup_q1(1), math.nan),
                "speedup_q3_b1": r.get(M.speedup_q3(1), math.nan),
                # Per-image routing or static pruning (skipnet_sweep.routing).
                "routing_share": r.get(M.ROUTING_SHARE, math.nan),
                "routing": routing_kind(
                    {
                        k: _number(r.get(k))
                        for k in (M.SKIPPED_MEAN, M.ROUTING_SHARE, M.ROUTED_GATES)
                    }
                ),
                "run_id": r["run_id"],
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    rank = lambda order: lambda s: s.map(lambda v: order.index(v) if v in order else len(order))  # noqa: E731
    keys = {
        "_depth": table["backbone"].map(S.depth_of),
        "_method": rank(_METHOD_ORDER)(table["method"]),
        "_variant": rank(_VARIANT_ORDER)(table["variant"]),
        "_param": done.set_index("run_id")
        .loc[table["run_id"], [M.PARAM_ALPHA, M.PARAM_TAU]]
        .max(axis=1)
        .to_numpy(),
    }
    return (
        table.assign(**keys)
        .sort_values(["dataset", "_depth", "backbone", *list(keys)[1:]], kind="stable")
        .drop(columns=list(keys))
        .reset_index(drop=True)
    )


def _number(value: Any) -> float:
    """A metric as a float, NaN (an old run without it) read as 0."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(value) else value


def _routed(r: pd.Series) -> str:
    if r.routing == NO_SKIP or math.isnan(r.routing_share):
        return ""
    return f"{r.routing_share:.0f}" + (" (pruned)" if r.routing == PRUNES else "")


def _speedup(r: pd.Series) -> str:
    """``1.31 (1.10-1.52)``: the median and the interquartile range of the timed rounds."""
    text = _fmt(r.speedup_b1, ".2f")
    q1, q3 = r.get("speedup_q1_b1", math.nan), r.get("speedup_q3_b1", math.nan)
    if text and math.isfinite(q1) and math.isfinite(q3):
        text += f" ({q1:.2f}-{q3:.2f})"
    return text


def _fmt(value: float, spec: str) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def _markdown(table: pd.DataFrame, flops_unit: str, accuracy: str) -> list[str]:
    unit = S.FLOPS_UNITS[flops_unit][1].strip() or "raw"
    lines = [
        f"| Dataset | Backbone | Method | Variant | α / τ | {accuracy} | Δ top-1 vs plain | "
        f"MACs {unit} | Reduction vs plain (%) | Speed-up at batch 1 (measured, IQR) | "
        "Routed (% of images) "
        "| Pareto | Run |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|:-:|---|",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {S.dataset_label(r.dataset)} | {S.backbone_label(r.backbone)} "
            f"| {r.method_label} | {S.VARIANT_LABELS.get(r.variant, r.variant)} "
            f"| {r['alpha/tau']} | {r.top1:.2f} | {_fmt(r.delta_top1, '+.2f')} "
            f"| {r.macs:.4g} | {_fmt(r.reduction_pct, '.1f')} | {_speedup(r)} "
            f"| {_routed(r)} | {'✓' if r.pareto else ''} "
            f"| `{r.run_id[:8]}` |"
        )
    return lines


def overview(
    uri: str, runs: pd.DataFrame, data: dict[str, Any], baselines: pd.DataFrame | None
) -> list[str]:
    """The bullets under the title: the store, the runs, their datasets, the set the frontier
    was chosen on, each Pareto figure's hypervolume (from ``data``, figure name -> what it
    drew) and the baselines loaded."""
    done = finished(runs)
    lines = [f"- Tracking URI: `{uri}`"]
    lines.append(
        f"- Runs: {len(runs)} ({len(done)} finished"
        + (f", {len(runs) - len(done)} not finished" if len(runs) > len(done) else "")
        + ")"
    )
    lines.append(f"- Datasets: {', '.join(sorted(done[M.PARAM_DATASET].dropna().unique())) or '-'}")
    on_test = int((done[M.SELECTION_SET] == M.SELECTION_TEST).sum()) if len(done) else 0
    lines.append(
        f"- Selection: the frontier was chosen on the test set ({on_test} of {len(done)} runs "
        "had no validation split; set dataset.val_split to choose on held-out training data)"
        if on_test
        else "- Selection: on a validation split held out of the training set; top-1 and "
        "MACs are on it, test_* metrics on the test set"
    )
    for name, drawn in data.items():
        if isinstance(drawn, ParetoData):
            lines.append(
                f"- Hypervolume ({name}): {format_hypervolume(drawn.hypervolume)}, the "
                f"fraction of the plain ResNet's box (top-1 0-100 % × MACs 0-"
                f"{S.fmt_number(drawn.ref_macs)}) the runs dominate; "
                f"{len(drawn.frontier)} runs on the frontier"
            )
    lines.append(
        "- Baselines: "
        + ("none loaded" if baselines is None else f"{len(baselines)} published rows loaded")
    )
    return lines


def runs_section(table: pd.DataFrame, flops_unit: str, accuracy: str) -> list[str]:
    """The table of :func:`summary_table` in Markdown (top-1 headed ``accuracy``), what its
    columns mean, and how many of the runs that skip blocks route per image."""
    if table.empty:
        return ["No finished run with top-1 and MACs."]
    lines = _markdown(table, flops_unit, accuracy)
    lines += [
        "",
        "MACs: mean multiply-adds per image, gates included. Reduction and Δ top-1: "
        "against the plain ResNet of the same backbone (its baseline run, else the "
        "`flops_plain` metric). Speed-up: the plain ResNet's time over the run's, timed "
        "side by side; the median and the interquartile range (IQR) over the timed rounds. "
        "Pareto: non-dominated over all finished runs of the dataset. "
        "Routed: the share of images whose executed blocks differ from the most common "
        "set; (pruned): blocks are skipped, but the same ones for every image, which is a "
        "statically pruned ResNet rather than per-image routing.",
    ]
    skipping = table[table["routing"] != NO_SKIP]
    if len(skipping):
        routes = int((skipping["routing"] == ROUTES).sum())
        lines += [
            "",
            f"Routing: {routes} of the {len(skipping)} runs that skip blocks route per "
            f"image; {len(skipping) - routes} prune statically.",
        ]
    return lines


def not_finished_section(runs: pd.DataFrame) -> list[str]:
    """The runs that did not finish and why (none: no section)."""
    failed = runs[runs["status"] != "FINISHED"]
    if not len(failed):
        return []
    lines = ["", "## Runs not finished", ""]
    for _, r in failed.iterrows():
        why = f": {r['error']}" if isinstance(r["error"], str) and r["error"] else ""
        lines.append(f"- `{r.run_id[:8]}` {r.run_name} ({r.status}){why}")
    return lines


def figures_section(
    figures: dict[str, list[Path]], skipped: dict[str, str], out_dir: Path
) -> list[str]:
    """Links to the figures written to ``out_dir`` (the Pareto plots shown inline), the hard
    vs. soft table (Table 3) when it was made, and the figures not made and why."""
    lines = ["", "## Figures", ""]
    for name, files in figures.items():
        links = ", ".join(f"[{p.name}]({p.name})" for p in files)
        lines.append(f"- {name}: {links}")
        if name.startswith("pareto"):
            lines.append(f"  ![{name}]({name}.png)")
    hard_soft = out_dir / "hard_soft.md"
    if "hard_soft" in figures and hard_soft.is_file():
        lines += ["", "## Hard vs. soft gating (Table 3)", "", hard_soft.read_text().strip()]
    if skipped:
        lines += ["", "## Figures not made", ""]
        lines += [f"- {name}: {why}" for name, why in skipped.items()]
    return lines
