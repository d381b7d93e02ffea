"""A sweep's runs, read back from MLflow (the layout in ``docs/mlflow_layout.md``).

``load_runs`` gives one DataFrame row per child run with its tags and params decoded and its
final metrics as columns named by the constants in ``skipnet_sweep.metrics``; the helpers
below fetch a run's ``eval/`` artifacts (per-sample and per-class tables, easy/hard images).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from skipnet_sweep import metrics as M

__all__ = [
    "RUN_COLUMNS",
    "EvalArtifacts",
    "ExperimentNotFoundError",
    "NoRunsError",
    "SweepNotFoundError",
    "download_eval",
    "find_parent_run",
    "finished",
    "load_child_runs",
    "load_eval",
    "load_runs",
    "load_sweep_runs",
    "resolve_tracking_uri",
]

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for nested runs
FINISHED = "FINISHED"

# Columns every frame from load_runs has, before the metric columns.
RUN_COLUMNS = (
    "run_id",
    "run_name",
    "parent",
    M.TAG_STAGE,
    M.TAG_METHOD,
    M.TAG_METHOD_LABEL,
    M.TAG_METHOD_MARKER,
    M.PARAM_DATASET,
    M.PARAM_ARCH,
    M.PARAM_GATE,
    M.PARAM_VARIANT,
    M.PARAM_ALPHA,
    M.PARAM_TAU,
    M.TAG_COST_WEIGHT,
    M.COST_WEIGHT_VALUE,
    M.PARAM_SEED,
    M.SELECTION_SET,
    M.TAG_TRIAL_ID,
    M.TAG_SP_RUN_ID,
    M.TAG_INIT_RUN_ID,
    M.TAG_PARETO,
    "status",
    "error",
    "start_time",
)
_FLOAT_PARAMS = (M.PARAM_ALPHA, M.PARAM_TAU, M.PARAM_SEED)
_PAGE = 1000
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class ExperimentNotFoundError(LookupError):
    """The named experiment is not in the tracking store (the message lists those that are)."""


class NoRunsError(LookupError):
    """The experiment exists but holds no child run of a sweep (nothing to report)."""


class SweepNotFoundError(LookupError):
    """No sweep of that id in the tracking store (the message lists those that are)."""


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The given URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``
    (the sweep's own defaults, minus the space file)."""
    return (
        tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    )


def _client(tracking_uri: str | None) -> tuple[MlflowClient, str]:
    uri = resolve_tracking_uri(tracking_uri)
    # Opening a missing SQLite file would create an empty store; say it is missing instead.
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        # sqlite:///rel.db is relative to the cwd, sqlite:////abs.db absolute.
        path = Path.cwd() / uri.removeprefix("sqlite:///").split("?", 1)[0]
        if not path.exists():
            raise ExperimentNotFoundError(f"no MLflow tracking store at {path} ({uri})")
    return MlflowClient(tracking_uri=uri), uri


def _experiment_id(client: MlflowClient, uri: str, experiment: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments(view_type=ViewType.ALL))
        listed = ", ".join(names) if names else "(none)"
        raise ExperimentNotFoundError(
            f"experiment {experiment!r} not found in {uri}; existing experiments: {listed}"
        )
    return exp.experiment_id


def _all_runs(client: MlflowClient, experiment_id: str, filter_string: str = "") -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=_PAGE,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _float(text: str | None) -> float:
    if text is None:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan  # "None", "" and the like: not set


def _pareto(text: str | None) -> bool | None:
    return None if text is None else text.strip().lower() == "true"


def _row(run: Run) -> dict[str, Any]:
    tags, params = run.data.tags, run.data.params
    phase = tags.get(M.TAG_STAGE)
    gate = params.get(M.PARAM_GATE)
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "parent": tags.get(PARENT_TAG),
        M.TAG_STAGE: phase,
        M.TAG_METHOD: tags.get(M.TAG_METHOD) or M.method_of(phase or "", gate),
        M.TAG_METHOD_LABEL: tags.get(M.TAG_METHOD_LABEL),
        M.TAG_METHOD_MARKER: tags.get(M.TAG_METHOD_MARKER),
        M.PARAM_DATASET: params.get(M.PARAM_DATASET),
        M.PARAM_ARCH: params.get(M.PARAM_ARCH),
        M.PARAM_GATE: gate,
        M.PARAM_VARIANT: params.get(M.PARAM_VARIANT),
        # Runs from before validation splits existed chose on the test set.
        M.SELECTION_SET: params.get(M.SELECTION_SET, M.SELECTION_TEST),
        M.TAG_TRIAL_ID: tags.get(M.TAG_TRIAL_ID),
        M.TAG_SP_RUN_ID: tags.get(M.TAG_SP_RUN_ID),
        # Stores from before init_run_id put what a run starts from under sp_run_id.
        M.TAG_INIT_RUN_ID: tags.get(M.TAG_INIT_RUN_ID, tags.get(M.TAG_SP_RUN_ID)),
        M.TAG_PARETO: _pareto(tags.get(M.TAG_PARETO)),
        "status": run.info.status,
        "error": tags.get(M.TAG_ERROR),
        "start_time": run.info.start_time,
        # Any method's cost weight (alpha, tau, a target rate, a penalty), by the tag naming it.
        M.TAG_COST_WEIGHT: tags.get(M.TAG_COST_WEIGHT),
        M.COST_WEIGHT_VALUE: _float(params.get(tags.get(M.TAG_COST_WEIGHT, ""))),
    }
    row.update({name: _float(params.get(name)) for name in _FLOAT_PARAMS})
    # run.data.metrics holds each metric's last value: the final evaluation.
    row.update(run.data.metrics)
    return row


def load_runs(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The sweep's child runs (phase baseline/sp/hrl/act/sact), one row each.

    Args:
        experiment: the MLflow experiment name (the space's name by default).
        tracking_uri: where to read; see :func:`resolve_tracking_uri`.

    Returns:
        Columns :data:`RUN_COLUMNS` (``alpha``, ``tau``, ``seed`` as floats, NaN when not
        set; ``pareto`` as True/False/None), then every metric logged by any run (final
        values; at least :data:`skipnet_sweep.metrics.EVAL_METRICS`, NaN where missing).
        Ordered by start time; failed and running runs are included (see :func:`finished`).

    Raises:
        ExperimentNotFoundError: the experiment (or the tracking store) does not exist.
    """
    client, uri = _client(tracking_uri)
    exp_id = _experiment_id(client, uri, experiment)
    return _frame(_all_runs(client, exp_id))


def load_sweep_runs(sweep_id: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The child runs of one sweep, found by its id (the parent run's ``skipnet.sweep_id``
    tag, in any experiment of the store): as :func:`load_runs`, for one sweep of an
    experiment that holds several (spaces changed between runs, ``--fresh`` restarts).

    Raises:
        SweepNotFoundError: no parent run has that id (the message lists the ids there are).
    """
    client, uri = _client(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    parents = [
        run
        for exp_id in experiments
        for run in _all_runs(client, exp_id, f"tags.{M.TAG_STAGE} = '{M.SWEEP_STAGE}'")
    ]
    match = [p for p in parents if p.data.tags.get(M.TAG_SWEEP_ID) == sweep_id]
    if not match:
        ids = sorted(
            {p.data.tags[M.TAG_SWEEP_ID] for p in parents if M.TAG_SWEEP_ID in p.data.tags}
        )
        raise SweepNotFoundError(
            f"no sweep {sweep_id!r} in {uri}; sweeps there: {', '.join(ids) or '(none)'}"
        )
    # A fresh start re-tags the old parent, so one parent has the id; the newest if not.
    parent = max(match, key=lambda r: r.info.start_time)
    return _children_frame(client, parent)


def load_child_runs(parent_run_id: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The child runs of the sweep whose parent run is ``parent_run_id``: as
    :func:`load_runs`, for the sweep's driver, which knows its parent run."""
    client, _ = _client(tracking_uri)
    return _children_frame(client, client.get_run(parent_run_id))


def _children_frame(client: MlflowClient, parent: Run) -> pd.DataFrame:
    children = _all_runs(
        client, parent.info.experiment_id, f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"
    )
    return _frame(children)


def _frame(runs: list[Run]) -> pd.DataFrame:
    rows = [
        _row(run)
        for run in runs
        # Every child run of a sweep, of any method (plugins included); not the parents.
        if run.data.tags.get(M.TAG_STAGE) not in (None, M.SWEEP_STAGE)
    ]
    df = pd.DataFrame(rows, columns=None if rows else list(RUN_COLUMNS))
    for name in (*RUN_COLUMNS, *M.EVAL_METRICS):
        if name not in df.columns:
            df[name] = math.nan
    metric_cols = sorted(c for c in df.columns if c not in RUN_COLUMNS)
    df = df[[*RUN_COLUMNS, *metric_cols]]
    df[M.TAG_PARETO] = df[M.TAG_PARETO].astype(object)
    return df.reset_index(drop=True)


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that finished (the only ones the figures draw)."""
    return runs[runs["status"] == FINISHED].reset_index(drop=True)


def find_parent_run(experiment: str, tracking_uri: str | None = None) -> Run | None:
    """The sweep's parent run (tag ``stage=sweep``), the latest started if there are several;
    None when the experiment has none."""
    client, uri = _client(tracking_uri)
    exp_id = _experiment_id(client, uri, experiment)
    parents = _all_runs(client, exp_id, f"tags.{M.TAG_STAGE} = '{M.SWEEP_STAGE}'")
    return parents[-1] if parents else None


def download_eval(run_id: str, dest: str | Path, tracking_uri: str | None = None) -> Path | None:
    """Download a run's ``eval/`` artifacts into ``dest``.

    Returns:
        The local ``eval`` folder, or None when the run logged no ``eval/`` artifacts.
    """
    client, _ = _client(tracking_uri)
    if not client.list_artifacts(run_id, M.ARTIFACT_DIR):
        return None
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    # A few small files per run: MLflow's progress bar would only clutter the report's output.
    saved = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"
    try:
        return Path(client.download_artifacts(run_id, M.ARTIFACT_DIR, str(dest)))
    finally:
        if saved is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = saved


@dataclass
class EvalArtifacts:
    """A run's final-evaluation artifacts; a field is None when the file was not logged.

    Attributes:
        per_sample: ``index,label,pred,skipped,macs``.
        per_class: ``label,name,count,top1,median_skipped,mean_skipped`` (no ``name``
            in runs logged before classes were named).
        easy_hard: the arrays of ``easy_hard.npz`` (see docs/mlflow_layout.md).
    """

    run_id: str
    per_sample: pd.DataFrame | None = None
    per_class: pd.DataFrame | None = None
    easy_hard: dict[str, np.ndarray] | None = None


def read_eval_dir(run_id: str, folder: str | Path | None) -> EvalArtifacts:
    """Read the artifacts of a downloaded ``eval/`` folder (None: nothing there)."""
    out = EvalArtifacts(run_id)
    if folder is None:
        return out
    folder = Path(folder)
    if (folder / M.PER_SAMPLE_CSV).is_file():
        out.per_sample = pd.read_csv(folder / M.PER_SAMPLE_CSV)
    if (folder / M.PER_CLASS_CSV).is_file():
        out.per_class = pd.read_csv(folder / M.PER_CLASS_CSV)
    if (folder / M.EASY_HARD_NPZ).is_file():
        with np.load(folder / M.EASY_HARD_NPZ) as npz:
            out.easy_hard = {k: npz[k] for k in npz.files}
    return out


def load_eval(run_id: str, dest: str | Path, tracking_uri: str | None = None) -> EvalArtifacts:
    """Download (into ``dest``/``run_id``) and read a run's ``eval/`` artifacts."""
    return read_eval_dir(run_id, download_eval(run_id, Path(dest) / run_id, tracking_uri))
