"""A sweep's report: every figure its runs support and a summary table; and the comparison
of several sweeps or experiments on one trade-off figure (``analysis/plot_pareto.py``).

``make_report`` reads the experiment's child runs from MLflow, draws what the runs support
(the Pareto plot per dataset, alpha trade-off, computation reduction, hard vs. soft table,
training variants, per-class skipping, easy/hard images) and writes ``summary.md``
(:mod:`.summary`: one row per run, then the figures made and those not made with the
reason), all in the folder it is given; only when asked does it also log that folder to the sweep's parent run under
``report/`` (a store's artifact paths are absolute: logging from a copy of a store would
write into the original's). ``make_comparison`` draws the studies' runs with the report's
own Pareto and latency figures, one frontier per study.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from skipnet_sweep import metrics as M
from skipnet_sweep.reporting import figures as F
from skipnet_sweep.reporting import style as S
from skipnet_sweep.reporting import summary
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
    evals = _EvalRuns(done, uri, scratch)
    pairs = F.select_hrl_runs(done)
    pairs = pairs.iloc[::-1] if len(pairs) else pairs  # deepest backbone first
    chosen = _per_class_figure(result, evals, pairs, out)
    # Fig. 11b and Fig. 10: the chosen HRL+SP run, else the first run that has the file.
    order = ([chosen.hrl_run_id] if chosen is not None else []) + list(done["run_id"])
    hist_run = _one_run_figure(
        result, evals, order, "skip_histogram", "per_sample", F.skip_histogram_figure, out
    )
    grid_run = _one_run_figure(
        result, evals, order, "easy_hard", "easy_hard", F.easy_hard_grid, out
    )
    result.data["eval_runs"] = {
        "per_class": None if chosen is None else (chosen.sp_run_id, chosen.hrl_run_id),
        "skip_histogram": hist_run,
        "easy_hard": grid_run,
    }


class _EvalRuns:
    """The eval/ artifacts of a report's finished runs, each downloaded once into
    ``scratch``, and what a figure of one run is titled with."""

    def __init__(self, done: pd.DataFrame, uri: str, scratch: Path) -> None:
        self.by_id, self.uri, self.scratch = done.set_index("run_id"), uri, scratch
        self.cache: dict[str, EvalArtifacts] = {}

    def artifacts(self, run_id: str) -> EvalArtifacts:
        if run_id not in self.cache:
            self.cache[run_id] = load_eval(run_id, self.scratch, self.uri)
        return self.cache[run_id]

    def per_class(self, run_id: str) -> pd.DataFrame | None:
        """The run's per-class table, logged or rebuilt from its per-sample one."""
        a = self.artifacts(run_id)
        if a.per_class is not None:
            return a.per_class
        return F.per_class_from_samples(a.per_sample) if a.per_sample is not None else None

    def about(self, run_id: str) -> dict[str, Any]:
        """The dataset, backbone and description a figure of this run is titled with."""
        row = self.by_id.loc[run_id]
        return {
            "dataset": row[M.PARAM_DATASET],
            "backbone": row[M.PARAM_ARCH],
            "shown": S.describe_run({**row.to_dict(), "run_id": run_id}),
        }


def _per_class_figure(
    result: ReportResult, evals: _EvalRuns, pairs: pd.DataFrame, out: Path
) -> pd.Series | None:
    """Fig. 11a: per-class medians of the first matched SP and HRL+SP run that both have
    them; returns that pair (None: none has, and ``result`` says why)."""
    for _, p in pairs.iterrows():
        sp, hrl = evals.per_class(p.sp_run_id), evals.per_class(p.hrl_run_id)
        if sp is None or hrl is None:
            continue
        about = evals.about(p.hrl_run_id)
        about["shown"] += f" vs. its SP run (run {p.sp_run_id[:8]})"
        draw = partial(F.per_class_figure, sp, hrl, out / "per_class", method=p[M.TAG_METHOD])
        _attempt(result, "per_class", partial(draw, **about))
        return p
    result.skipped["per_class"] = (
        "no SP and HRL+SP run of one backbone and gate both logged eval/per_class.csv"
        if len(pairs)
        else "no backbone and gate with both a finished SP and HRL+SP run"
    )
    return None


# The file each one-run figure needs, as the report names it when no run logged it.
_EVAL_FILES = {"per_sample": M.PER_SAMPLE_CSV, "easy_hard": M.EASY_HARD_NPZ}


def _one_run_figure(
    result: ReportResult,
    evals: _EvalRuns,
    order: list[str],
    name: str,
    artifact: str,
    draw: Callable[..., Any],
    out: Path,
) -> str | None:
    """Draw figure ``name`` of the first run in ``order`` that logged ``artifact`` (an
    :class:`EvalArtifacts` field); returns that run (None: none did, and ``result`` says so)."""
    run = next((r for r in order if getattr(evals.artifacts(r), artifact) is not None), None)
    if run is None:
        result.skipped[name] = f"no run logged {M.ARTIFACT_DIR}/{_EVAL_FILES[artifact]}"
        return None
    data = getattr(evals.artifacts(run), artifact)
    _attempt(result, name, lambda: draw(data, out / name, **evals.about(run)))
    return run


def _write_summary(
    result: ReportResult,
    experiment: str,
    uri: str,
    runs: pd.DataFrame,
    table: pd.DataFrame,
    baselines: pd.DataFrame | None,
    flops_unit: str,
) -> Path:
    """``summary.md`` in the report folder (:mod:`.summary` writes each section)."""
    lines = [f"# Sweep report: {experiment}", ""]
    lines += summary.overview(uri, runs, result.data, baselines)
    lines += ["", "## Runs", ""]
    lines += summary.runs_section(table, flops_unit, S.top1_label(finished(runs)))
    lines += summary.not_finished_section(runs)
    lines += summary.figures_section(result.figures, result.skipped, result.out_dir)
    path = result.out_dir / summary.SUMMARY
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
    rows = summary.summary_table(runs, flops_unit)
    rows.to_csv(out / "summary.csv", index=False)
    result.summary = _write_summary(result, experiment, uri, runs, rows, table, flops_unit)
    if log:
        written = [p for paths in result.figures.values() for p in paths]
        _log_to_parent(result, experiment, uri, [*written, out / "summary.csv", result.summary])
    return result
