"""The study's trade-off in its MLflow parent run: when ``run`` ends, the report's frontier
figures (top-1 against MACs with the published baselines, and against measured latency) are
drawn from the sweep's runs and logged to the parent run under ``report/``, where
``python -m skipnet_sweep.report --log`` puts the full set. Drawing them takes seconds
(``docs/mlflow_layout.md``); re-logging replaces the files of the same name, so a resumed
sweep has each figure once. A figure that fails to draw or log never fails the sweep that
ran: the result says why, and the report can still draw it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LoggedFigures", "log_frontier_figures"]


@dataclass
class LoggedFigures:
    """What :func:`log_frontier_figures` logged.

    Attributes:
        files: the logged files, as paths in the run's artifacts (``report/pareto.png``).
        artifact_uri: where they are stored (the run's artifact URI and ``report``); None
            when nothing was logged.
        skipped: figure name -> why the runs cannot support it (e.g. no latency measured).
        error: why nothing was logged, in one line; None when logging worked.
        seconds: how long drawing and logging took.
        data: figure name -> the data behind it (``ParetoData``, ``LatencyData``).
    """

    files: list[str] = field(default_factory=list)
    artifact_uri: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> list[str]:
        """The logged PNG files, the ones a browser shows."""
        return [f for f in self.files if f.endswith(".png")]


def log_frontier_figures(
    parent_run_id: str, tracking_uri: str | None = None, *, flops_unit: str = "M"
) -> LoggedFigures:
    """Draw the frontier figures of the sweep under ``parent_run_id`` and log them to it.

    Args:
        parent_run_id: the sweep's parent run.
        tracking_uri: see :func:`skipnet_sweep.reporting.runs.resolve_tracking_uri`.
        flops_unit: ``raw``, ``K``, ``M`` or ``G`` (the MACs axis).

    Returns:
        What was logged; never raises for a figure or a store that fails (``error`` says
        why): the sweep's results are in MLflow already.
    """
    start = time.perf_counter()
    logged = LoggedFigures()
    try:
        _draw_and_log(logged, parent_run_id, tracking_uri, flops_unit)
    except Exception as err:  # a figure must not fail a sweep whose results are logged
        text = " ".join(str(err).split())
        logged.error = f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__
    logged.seconds = time.perf_counter() - start
    return logged


def _draw_and_log(
    logged: LoggedFigures, parent_run_id: str, tracking_uri: str | None, flops_unit: str
) -> None:
    # Imported here: matplotlib and pandas load only when a sweep ends, and a broken
    # install is one line of the summary.
    from mlflow.tracking import MlflowClient

    from skipnet_sweep.reporting.runs import finished, load_child_runs, resolve_tracking_uri
    from skipnet_sweep.reporting.study import (
        REPORT_ARTIFACT_PATH,
        ReportResult,
        frontier_figures,
        load_baseline_table,
    )

    uri = resolve_tracking_uri(tracking_uri)
    done = finished(load_child_runs(parent_run_id, uri))
    if done.empty:
        raise ValueError("no finished run to draw")
    table = load_baseline_table(None)
    with tempfile.TemporaryDirectory(prefix="skipnet-figures-") as tmp:
        result = ReportResult(Path(tmp))
        frontier_figures(result, done, Path(tmp), table, flops_unit)
        logged.skipped, logged.data = result.skipped, result.data
        if not result.figures:
            raise ValueError("; ".join(f"{k}: {v}" for k, v in result.skipped.items()))
        client = MlflowClient(tracking_uri=uri)
        for paths in result.figures.values():
            for path in paths:
                client.log_artifact(parent_run_id, str(path), REPORT_ARTIFACT_PATH)
                logged.files.append(f"{REPORT_ARTIFACT_PATH}/{path.name}")
    run = client.get_run(parent_run_id)
    logged.artifact_uri = f"{run.info.artifact_uri.rstrip('/')}/{REPORT_ARTIFACT_PATH}"
