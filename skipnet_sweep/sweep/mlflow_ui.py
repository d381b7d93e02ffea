"""How MLflow's UI (3.17) is pointed at a sweep: the URL of the runs table in the "Model
training" view, and the saved view "SkipNet sweep" (the study's key columns, runs nested under
the sweep run) that the sweep stores as an experiment tag. Checked in a real browser by
``scripts/check_mlflow_ui.py``."""

from __future__ import annotations

import json
import urllib.parse

from skipnet_sweep import metrics as M

# Names read by MLflow's UI (as in MLflow 3.17.2's UI bundle). The workflow type picks the
# "GenAI" / "Model training" switch; from the URL it overrides the browser's stored choice.
WORKFLOW_QUERY_PARAM = "workflowType"
TRAINING_WORKFLOW = "machine_learning"
SAVED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_QUERY_PARAM = "viewStateShareKey"

# The sweep's saved view: its key (part of the URL) and the name shown in the "Views" menu.
SWEEP_VIEW_KEY = "skipnet-sweep"
SWEEP_VIEW_NAME = "SkipNet sweep"
# Columns the study is read by, in table order: what a run is, then what it scored.
VIEW_PARAMS = (M.PARAM_ARCH, M.PARAM_GATE, M.PARAM_VARIANT, M.PARAM_ALPHA, M.PARAM_TAU)
VIEW_METRICS = (M.TOP1, M.TEST_TOP1, M.FLOPS_MEAN)  # top1: the selection set
VIEW_TAGS = (M.TAG_STAGE, M.TAG_METHOD, M.TAG_PARETO)


def runs_view_url(base_url: str, experiment_id: str, view_key: str | None = SWEEP_VIEW_KEY) -> str:
    """The URL that opens an experiment's runs table, with a saved view when one is given.

    Args:
        base_url: the tracking server, e.g. ``http://127.0.0.1:5000``.
        experiment_id: MLflow experiment id.
        view_key: key of a saved view (experiment tag ``mlflow.sharedViewState.<key>``), or
            None for the table with MLflow's default columns.
    Returns:
        e.g. ``http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning&viewStateShareKey=skipnet-sweep``.
    """
    query = {WORKFLOW_QUERY_PARAM: TRAINING_WORKFLOW}
    if view_key:
        query[VIEW_QUERY_PARAM] = view_key
    return (
        f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}"
    )


def run_page_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """The URL of one run's page (overview: metrics, params, tags, parent run)."""
    query = urllib.parse.urlencode({WORKFLOW_QUERY_PARAM: TRAINING_WORKFLOW})
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{query}"


def artifact_page_url(base_url: str, experiment_id: str, run_id: str, path: str) -> str:
    """The URL of a run's artifacts with the file at ``path`` open (a PNG is shown): the
    route ``/experiments/:experimentId/runs/:runUuid/artifactPath/*`` of the UI bundle."""
    quoted = urllib.parse.quote(path)
    return (
        f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}/artifactPath/{quoted}"
    )


def _column(kind: str, key: str) -> str:
    # MLflow names a column "<kind>.`<key>`" (makeCanonicalSortKey in the UI bundle).
    return f"{kind}.`{key}`"


def sweep_view_tags(created_ms: int) -> dict[str, str]:
    """Experiment tags that make the runs table show the study: the saved view "SkipNet sweep"
    (the key params, metrics and tags as columns, children nested under the sweep run).

    Args:
        created_ms: the view's creation time, milliseconds since the epoch.
    Returns:
        tag key -> value, to set with ``MlflowClient.set_experiment_tag``.
    """
    # Run name, Created and Duration are always shown; attributes such as Source are not.
    columns = [_column("params", k) for k in VIEW_PARAMS]
    columns += [_column("metrics", k) for k in VIEW_METRICS]
    columns += [_column("tags", k) for k in VIEW_TAGS]
    state = {
        "selectedColumns": columns,
        # Sorting by creation time is what keeps child runs nested under their parent: the
        # table nests only when ordered by "attributes.start_time" (or unsorted, unfiltered);
        # any other order, e.g. a click on the top1 header, lists all runs flat.
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
    }
    envelope = {
        "name": SWEEP_VIEW_NAME,
        "createdAt": created_ms,
        "updatedAt": created_ms,
        "state": json.dumps(state),
    }
    return {SAVED_VIEW_TAG_PREFIX + SWEEP_VIEW_KEY: json.dumps(envelope)}
