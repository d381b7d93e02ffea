"""A sweep's report: every figure its runs support and a summary table; and the comparison
of several sweeps or experiments on one trade-off figure (``analysis/plot_pareto.py``).

``make_report`` reads the experiment's child runs from MLflow, draws what the runs support
(the Pareto plot per dataset, alpha trade-off, computation reduction, hard vs. soft table,
training variants, per-class skipping, easy/hard images) and writes ``summary.md`` (one row
per run, then the figures made and those not made with the reason), all in the folder it is
given; only when asked does it also log that folder to the sweep's parent run under
``report/`` (a store's artifact paths are absolute: logging from a copy of a store would
write into the original's). ``make_comparison`` draws the studies' runs with the report's
own Pareto and latency figures, one frontier per study.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from skipnet_sweep import metrics as M
from skipnet_sweep.pareto import format_hypervolume, pareto_mask
from skipnet_sweep.reporting import figures as F
from skipnet_sweep.reporting import style as S
from skipnet_sweep.reporting.baselines import default_baselines_dir, load_baselines
from skipnet_sweep.reporting.cli import X_AXES
from skipnet_sweep.reporting.runs import (
    EvalArtifacts,
    NoRunsError,
    find_parent_run,
    finished,
    load_eval,
    load_runs,
    load_sweep_runs,
    resolve_tracking_uri,
)
from skipnet_sweep.routing import NO_SKIP, PRUNES, ROUTES, routing_kind

__all__ = [
    "REPORT_ARTIFACT_PATH",
    "STUDY_LOADERS",
    "ReportResult",
    "frontier_figures",
    "load_baseline_table",
    "make_comparison",
    "make_report",
]

REPORT_ARTIFACT_PATH = "report"  # where the folder goes in the parent run (docs/mlflow_layout.md)
SUMMARY = "summary.md"
# Row order of the summary table: the plain ResNet, SkipNet by gate, then the halting nets;
# variants in the order the paper introduces them.
_METHOD_ORDER = ["plain", "skipnet-ff1", "skipnet-ff2", "skipnet-rnn", "act", "sact"]
_VARIANT_ORDER = ["baseline", "sp", "soft", "hrl+sp", "hrl+s", "rl", "act", "sact"]


@dataclass
class ReportResult:
    """What a report wrote.

    Attributes:
        out_dir: the report folder.
        summary: ``summary.md`` (None for :func:`make_comparison`).
        figures: figure name -> files written.
        skipped: figure name -> why it was not made.
        data: figure name -> the data behind it (``ParetoData`` / ``FigureData``).
        parent_run_id: the sweep run the folder was logged to, None when not logged.
        logged_to: where the logged files are (the run's artifact URI and ``report``).
    """

    out_dir: Path
    summary: Path | None = None
    figures: dict[str, list[Path]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str | None = None
    logged_to: str | None = None


def load_baseline_table(
    baselines: str | Path | Iterable[str | Path] | None,
) -> pd.DataFrame | None:
    """The published rows of ``baselines`` (CSV files or folders), by default the bundled
    ones; None when there are none."""
    if baselines is None:
        baselines = default_baselines_dir()
        if baselines is None:
            return None
    return load_baselines(baselines)


def _attempt(result: ReportResult, name: str, make: Callable[[], Any]) -> Any:
    """Run one figure function; a NotEnoughData becomes a line under "figures not made"."""
    try:
        data = make()
    except F.NotEnoughData as err:
        result.skipped[name] = str(err)
        return None
    result.data[name] = data
    result.figures[name] = list(data.files)
    return data


def frontier_figures(
    result: ReportResult, done: pd.DataFrame, out: Path, table: pd.DataFrame | None, unit: str
) -> None:
    """The trade-off figures into ``out``: top-1 against MACs per dataset (``pareto``, with
    the published ``table``) and against measured latency (``pareto_latency``). The part of
    a report that takes seconds: the sweep logs it to its parent run when it ends
    (:mod:`.sweep_figures`)."""
    _pareto_all(result, done, out, table, unit)
    _attempt(result, "pareto_latency", lambda: F.latency_figure(done, out / "pareto_latency"))


def _pareto_all(
    result: ReportResult, done: pd.DataFrame, out: Path, table: pd.DataFrame | None, unit: str
) -> None:
    datasets = sorted(done[M.PARAM_DATASET].dropna().unique()) or [None]
    for ds in datasets:
        name = "pareto" if len(datasets) == 1 else f"pareto_{ds}"
        runs = done if ds is None else done[done[M.PARAM_DATASET] == ds]
        _attempt(
            result,
            name,
            lambda runs=runs, name=name: F.pareto_figure(
                runs, out / name, baselines=table, flops_unit=unit
            ),
        )


def _load_inputs(
    experiment: str,
    uri: str,
    baselines: str | Path | Iterable[str | Path] | None,
    flops_unit: str,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Everything a report reads, read before anything is written: a missing experiment,
    an experiment without runs, a bad baseline file or unit leaves no folder behind."""
    S.check_unit(flops_unit)
    runs = load_runs(experiment, uri)
    if runs.empty:
        raise NoRunsError(f"experiment {experiment!r} in {uri} has no sweep runs to report on")
    return runs, load_baseline_table(baselines)


def _log_to_parent(result: ReportResult, experiment: str, uri: str, files: list[Path]) -> None:
    parent = find_parent_run(experiment, uri)
    if parent is None:
        return
    client = MlflowClient(tracking_uri=uri)
    for path in files:
        client.log_artifact(parent.info.run_id, str(path), REPORT_ARTIFACT_PATH)
    result.parent_run_id = parent.info.run_id
    result.logged_to = f"{parent.info.artifact_uri.rstrip('/')}/{REPORT_ARTIFACT_PATH}"


# A comparison's runs carry the study they come from in this column.
SERIES = "series"
# Where the runs of a study are found: an experiment (every sweep in it) or one sweep.
STUDY_LOADERS: dict[str, Callable[[str, str], pd.DataFrame]] = {
    "experiment": load_runs,
    "sweep": load_sweep_runs,
}


def make_comparison(
    studies: Sequence[tuple[str, str]],
    out_dir: str | Path,
    *,
    tracking_uri: str | None = None,
    x: str = "macs",
    baselines: str | Path | Iterable[str | Path] | None = None,
    flops_unit: str = "M",
    batch: int = 1,
    name: str = "pareto",
) -> ReportResult:
    """Several experiments or sweeps on one trade-off figure per dataset (their runs'
    top-1 against MACs or measured latency, each study's own frontier), written to
    ``out_dir`` as ``<name>.png`` and ``.pdf`` (MACs: and the frontiers as ``<name>.csv``;
    ``<name>_<dataset>`` when the studies span several datasets). Nothing is logged.

    Args:
        studies: ``(kind, name)`` pairs, kind a key of :data:`STUDY_LOADERS`; drawn in
            this order, each named by ``name``.
        out_dir: the folder (created).
        tracking_uri: see :func:`skipnet_sweep.reporting.runs.resolve_tracking_uri`.
        x: ``macs`` (:func:`.frontier_macs.pareto_figure`) or ``latency``
            (:func:`.frontier_latency.latency_figure`).
        baselines: published baseline CSVs or folders, drawn on the MACs axis; default the
            bundled ones.
        flops_unit: ``raw``, ``K``, ``M`` or ``G`` (MACs axis).
        batch: the batch size whose latency is drawn (latency axis).
        name: the files' stem.

    Raises:
        ExperimentNotFoundError, SweepNotFoundError: a study is not in the store.
        NoRunsError: a study has no sweep runs.
        BaselineError: a bad baseline file.
        ValueError: no study, one given twice, an unknown kind or axis, or baselines for
            the latency axis (published results have no latency on this hardware).
        (In every case nothing is written: ``out_dir`` is not created.)
    """
    uri = resolve_tracking_uri(tracking_uri)
    S.check_unit(flops_unit)
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    if x == "latency" and baselines is not None:
        raise ValueError("published baselines are drawn against MACs only, not latency")
    names = [study for _, study in studies]
    if not names or len(set(names)) < len(names):
        raise ValueError(f"give each study once, at least one; got {names}")
    frames = []
    for kind, study in studies:
        if kind not in STUDY_LOADERS:
            raise ValueError(f"unknown kind of study {kind!r}; one of {', '.join(STUDY_LOADERS)}")
        runs = STUDY_LOADERS[kind](study, uri)
        if runs.empty:
            raise NoRunsError(f"{kind} {study!r} in {uri} has no sweep runs to draw")
        frames.append(runs.assign(**{SERIES: study}))
    table = load_baseline_table(baselines) if x == "macs" else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out)
    done = finished(pd.concat(frames, ignore_index=True))
    datasets = sorted(done[M.PARAM_DATASET].dropna().unique()) or [None]
    for ds in datasets:
        stem = name if len(datasets) == 1 else f"{name}_{ds}"
        runs = done if ds is None else done[done[M.PARAM_DATASET] == ds]
        if x == "macs":
            make = partial(F.pareto_figure, baselines=table, flops_unit=flops_unit)
        else:
            make = partial(F.latency_figure, batch=batch)
        _attempt(result, stem, partial(make, runs, out / stem, series=SERIES))
    return result


# --------------------------------------------------------------------------- artifacts


def _eval_figures(
    result: ReportResult, done: pd.DataFrame, out: Path, uri: str, scratch: Path
) -> None:
    """Fig. 10 and 11 need eval/ artifacts: use the SP / HRL+SP pair of Fig. 4 when there is
    one (the deepest backbone first), else any run that logged them."""
    cache: dict[str, EvalArtifacts] = {}

    def artifacts(run_id: str) -> EvalArtifacts:
        if run_id not in cache:
            cache[run_id] = load_eval(run_id, scratch, uri)
        return cache[run_id]

    by_id = done.set_index("run_id")

    def about(run_id: str) -> dict[str, Any]:
        """The dataset, backbone and description a figure of this run is titled with."""
        row = by_id.loc[run_id]
        return {
            "dataset": row[M.PARAM_DATASET],
            "backbone": row[M.PARAM_ARCH],
            "shown": S.describe_run({**row.to_dict(), "run_id": run_id}),
        }

    pairs = F.select_hrl_runs(done)
    pairs = pairs.iloc[::-1] if len(pairs) else pairs  # deepest backbone first

    def per_class(a: EvalArtifacts) -> pd.DataFrame | None:
        if a.per_class is not None:
            return a.per_class
        return F.per_class_from_samples(a.per_sample) if a.per_sample is not None else None

    # Fig. 11a: per-class medians of a matched SP and HRL+SP run.
    chosen = None
    for _, p in pairs.iterrows():
        sp, hrl = per_class(artifacts(p.sp_run_id)), per_class(artifacts(p.hrl_run_id))
        if sp is not None and hrl is not None:
            chosen = p
            _attempt(
                result,
                "per_class",
                lambda sp=sp, hrl=hrl, p=p: F.per_class_figure(
                    sp,
                    hrl,
                    out / "per_class",
                    method=p[M.TAG_METHOD],
                    **{
                        **about(p.hrl_run_id),
                        "shown": f"{about(p.hrl_run_id)['shown']} vs. its SP run "
                        f"(run {p.sp_run_id[:8]})",
                    },
                ),
            )
            break
    if chosen is None:
        result.skipped["per_class"] = (
            "no SP and HRL+SP run of one backbone and gate both logged eval/per_class.csv"
            if len(pairs)
            else "no backbone and gate with both a finished SP and HRL+SP run"
        )

    # Fig. 11b and Fig. 10: the chosen HRL+SP run, else the first run that has the file.
    order = ([chosen.hrl_run_id] if chosen is not None else []) + list(done["run_id"])
    hist_run = next((r for r in order if artifacts(r).per_sample is not None), None)
    if hist_run is None:
        result.skipped["skip_histogram"] = "no run logged eval/per_sample.csv"
    else:
        _attempt(
            result,
            "skip_histogram",
            lambda: F.skip_histogram_figure(
                artifacts(hist_run).per_sample, out / "skip_histogram", **about(hist_run)
            ),
        )
    grid_run = next((r for r in order if artifacts(r).easy_hard is not None), None)
    if grid_run is None:
        result.skipped["easy_hard"] = "no run logged eval/easy_hard.npz"
    else:
        _attempt(
            result,
            "easy_hard",
            lambda: F.easy_hard_grid(
                artifacts(grid_run).easy_hard, out / "easy_hard", **about(grid_run)
            ),
        )
    result.data["eval_runs"] = {
        "per_class": None if chosen is None else (chosen.sp_run_id, chosen.hrl_run_id),
        "skip_histogram": hist_run,
        "easy_hard": grid_run,
    }


# --------------------------------------------------------------------------- summary


def summary_table(runs: pd.DataFrame, flops_unit: str = "M") -> pd.DataFrame:
    """One row per finished run: backbone, method, variant, alpha/tau, top-1, MACs,
    reduction and top-1 change against the plain ResNet of the same dataset and backbone
    (its finished baseline run, else the run's ``flops_plain``), and frontier membership
    (over all finished runs of the dataset)."""
    scale, _ = S.check_unit(flops_unit)
    done = F.finite_rows(finished(runs), M.TOP1, M.FLOPS_MEAN)
    plain = F.plain_by_backbone(done).set_index([M.PARAM_DATASET, M.PARAM_ARCH])
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


def _write_summary(
    result: ReportResult,
    experiment: str,
    uri: str,
    runs: pd.DataFrame,
    table: pd.DataFrame,
    baselines: pd.DataFrame | None,
    flops_unit: str,
) -> Path:
    done = finished(runs)
    lines = [f"# Sweep report: {experiment}", ""]
    lines.append(f"- Tracking URI: `{uri}`")
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
    for name, data in result.data.items():
        if isinstance(data, F.ParetoData):
            lines.append(
                f"- Hypervolume ({name}): {format_hypervolume(data.hypervolume)}, the "
                f"fraction of the plain ResNet's box (top-1 0-100 % × MACs 0-"
                f"{S.fmt_number(data.ref_macs)}) the runs dominate; "
                f"{len(data.frontier)} runs on the frontier"
            )
    lines.append(
        "- Baselines: "
        + ("none loaded" if baselines is None else f"{len(baselines)} published rows loaded")
    )
    lines += ["", "## Runs", ""]
    if table.empty:
        lines.append("No finished run with top-1 and MACs.")
    else:
        lines += _markdown(table, flops_unit, S.top1_label(done))
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
    failed = runs[runs["status"] != "FINISHED"]
    if len(failed):
        lines += ["", "## Runs not finished", ""]
        for _, r in failed.iterrows():
            why = f": {r['error']}" if isinstance(r["error"], str) and r["error"] else ""
            lines.append(f"- `{r.run_id[:8]}` {r.run_name} ({r.status}){why}")
    lines += ["", "## Figures", ""]
    for name, files in result.figures.items():
        links = ", ".join(f"[{p.name}]({p.name})" for p in files)
        lines.append(f"- {name}: {links}")
        if name.startswith("pareto"):
            lines.append(f"  ![{name}]({name}.png)")
    hard_soft = result.out_dir / "hard_soft.md"
    if "hard_soft" in result.figures and hard_soft.is_file():
        lines += ["", "## Hard vs. soft gating (Table 3)", "", hard_soft.read_text().strip()]
    if result.skipped:
        lines += ["", "## Figures not made", ""]
        lines += [f"- {name}: {why}" for name, why in result.skipped.items()]
    path = result.out_dir / SUMMARY
    path.write_text("\n".join(lines) + "\n")
    return path


def make_report(
    experiment: str,
    out_dir: str | Path,
    tracking_uri: str | None = None,
    baselines_dir: str | Path | Iterable[str | Path] | None = None,
    flops_unit: str = "M",
    *,
    log: bool = False,
) -> ReportResult:
    """Write every figure the runs support and ``summary.md`` to ``out_dir`` and nowhere
    else; with ``log``, also log them to the sweep's parent run (artifact path ``report``)
    when there is one.

    Args:
        experiment: the MLflow experiment (the space's name by default).
        out_dir: the report folder (created).
        tracking_uri: see :func:`skipnet_sweep.reporting.runs.resolve_tracking_uri`.
        baselines_dir: baseline CSV files/folders; default the bundled ``skipnet_sweep/reporting/baselines``.
        flops_unit: ``raw``, ``K``, ``M`` or ``G``.
        log: log the written files to the parent run (in the store's artifact location).

    Raises:
        ExperimentNotFoundError: no such experiment (the message lists those that exist).
        NoRunsError: the experiment has no sweep runs.
        BaselineError: a bad baseline file.
        (In all three cases nothing is written: ``out_dir`` is not created.)
    """
    uri = resolve_tracking_uri(tracking_uri)
    runs, table = _load_inputs(experiment, uri, baselines_dir, flops_unit)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out)
    done = finished(runs)
    if done.empty:
        result.skipped["all figures"] = "no finished runs"
    else:
        frontier_figures(result, done, out, table, flops_unit)
        _attempt(
            result,
            "alpha_tradeoff",
            lambda: F.alpha_tradeoff_figure(done, out / "alpha_tradeoff", flops_unit=flops_unit),
        )
        _attempt(result, "reduction", lambda: F.reduction_figure(done, out / "reduction"))
        _attempt(result, "variants", lambda: F.variants_figure(done, out / "variants"))
        _attempt(
            result,
            "hard_soft",
            lambda: F.hard_soft_table(done, out / "hard_soft", flops_unit=flops_unit),
        )
        with tempfile.TemporaryDirectory(prefix="skipnet-report-") as scratch:
            _eval_figures(result, done, out, uri, Path(scratch))
    summary = summary_table(runs, flops_unit)
    summary.to_csv(out / "summary.csv", index=False)
    result.summary = _write_summary(result, experiment, uri, runs, summary, table, flops_unit)
    if log:
        written = [p for paths in result.figures.values() for p in paths]
        _log_to_parent(result, experiment, uri, [*written, out / "summary.csv", result.summary])
    return result
