"""MLflow tracking owned by the sweep's driver: one parent run per sweep, nested child runs
for every SP job, baseline and trial, found again by a trial-id tag so a resumed sweep never
duplicates them. (``MLflowLoggerCallback`` makes flat runs and duplicates them on restore.)

Only the driver writes to MLflow (Ray workers report to Tune, Tune calls back here), so a
node of a cluster never needs to reach the tracking store. The layout is documented in
``docs/mlflow_layout.md``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.store.db.db_types import DATABASE_ENGINES
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID as PARENT_TAG
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME as RUN_NAME_TAG
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

import skipnet_sweep
from skipnet_sweep import metrics as M
from skipnet_sweep.sweep.mlflow_ui import artifact_page_url, runs_view_url, sweep_view_tags

if TYPE_CHECKING:
    from skipnet_sweep.sweep.plan import Plan

UI_BASE = "http://127.0.0.1:5000"  # `mlflow ui` as the README starts it
# The code MLflow runs to load a logged network (models from code).
LOGGED_MODEL_CODE = Path(__file__).with_name("logged_model.py")
# The tracking stores MLflow 3.17 opens (the registry in mlflow/tracking/_tracking_service/
# utils.py): a server, Databricks or a database; not its file store (./mlruns), which it now
# refuses, nor Unity Catalog, which holds models, not runs.
TRACKING_SCHEMES = ("http", "https", "databricks", *DATABASE_ENGINES)


def default_tracking_uri(configured: str | None = None) -> str:
    """The space's URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``
    (MLflow 3.13+ refuses the plain ``./mlruns`` file store)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def scheme_problem(uri: str) -> str | None:
    """Why MLflow would not open ``uri`` as a tracking store (its scheme), in one line; None
    when it would. Without this check a wrong scheme surfaces after Ray has started."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    # A database URI may name its driver: postgresql+psycopg2://
    if scheme.split("+", 1)[0] in TRACKING_SCHEMES:
        return None
    shown = f"scheme {scheme}://" if scheme else "a path without a scheme"
    return (
        f"{uri}: {shown} is not a tracking store MLflow opens; allowed: "
        f"{', '.join(TRACKING_SCHEMES)} (e.g. sqlite:///mlflow.db)"
    )


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working folder unless it
    is absolute); None for any other store and for an in-memory one."""
    if not uri.lower().startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a local sqlite store go beside the database file."""
    db = sqlite_file(uri)
    return (db.parent / "mlartifacts").resolve().as_uri() if db else None


class Tracker:
    """Get-or-create access to a sweep's runs in one MLflow experiment.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: experiment name (one per space).
    """

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._client = None
        self._experiment_id: str | None = None

    def __getstate__(self) -> dict:
        # Picklable for Ray (callbacks are saved with the experiment state): drop the client.
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["tracking_uri"], state["experiment"])

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            # A tracking server makes the client print a "View run" link per finished run;
            # the sweep's own lines say what finished.
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                root = _artifact_root(self.tracking_uri)
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=f"{root}/{self.experiment}" if root else None
                )
                tags = {}
            else:
                self._experiment_id, tags = exp.experiment_id, exp.tags
            # The saved view that opens the study in the UI (``ui_url``), once.
            view = sweep_view_tags(int(time.time() * 1000))
            for key, value in view.items():
                if key not in tags:
                    self.client.set_experiment_tag(self._experiment_id, key, value)
        return self._experiment_id

    def ui_url(self) -> str:
        """Where to look at the sweep: the experiment's runs table in MLflow's "Model
        training" view with the saved view "SkipNet sweep" (for a local store, on the
        ``mlflow ui`` that the README starts at 127.0.0.1:5000)."""
        return runs_view_url(self._ui_base, self.experiment_id)

    def artifact_url(self, run_id: str, path: str) -> str:
        """Where the UI shows the artifact ``path`` of ``run_id`` (a figure, drawn)."""
        return artifact_page_url(self._ui_base, self.experiment_id, run_id, path)

    @property
    def _ui_base(self) -> str:
        return self.tracking_uri if self.tracking_uri.startswith("http") else UI_BASE

    def find(self, tag: str, value: str, parent: str | None = None) -> str | None:
        """The id of the newest active run with ``tag == value`` (under ``parent``), if any."""
        flt = f"tags.`{tag}` = '{value}'"
        if parent is not None:
            flt += f" and tags.`{PARENT_TAG}` = '{parent}'"
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=flt,
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return runs[0].info.run_id if runs else None

    def get_or_create(
        self,
        tag: str,
        value: str,
        run_name: str,
        *,
        parent: str | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> tuple[str, bool]:
        """The run tagged ``tag=value`` (under ``parent``), created if missing.

        Returns:
            (run_id, created).
        """
        run_id = self.find(tag, value, parent)
        if run_id is not None:
            if tags:
                self.set_tags(run_id, tags)
            return run_id, False
        all_tags = {tag: value, RUN_NAME_TAG: run_name, **(tags or {})}
        if parent is not None:
            all_tags[PARENT_TAG] = parent
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        run_id = run.info.run_id
        if params:
            self.log_params(run_id, params)
        return run_id, True

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_str(v)) for k, v in params.items() if v is not None]
        if items:
            self.client.log_batch(run_id, params=items)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, Any], step: int = 0) -> None:
        """Log the finite numeric entries of ``metrics`` at ``step``, to 7 significant digits
        (MLflow's tables show a float as stored: 86.35, not 86.3500000001)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(f"{v:.7g}"), now, int(step))
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ]
        for i in range(0, len(items), 900):  # log_batch takes at most 1000 metrics
            self.client.log_batch(run_id, metrics=items[i : i + 900])

    def last_step(self, run_id: str, key: str = M.TOP1) -> int:
        """The last step at which ``key`` was logged (-1 if never): a resumed trial re-reports
        the steps after its checkpoint, and those before are not logged twice."""
        history = self.client.get_metric_history(run_id, key)
        return max((m.step for m in history), default=-1)

    def metric_keys(self, run_id: str) -> set[str]:
        """The names of the metrics a run has."""
        return set(self.client.get_run(run_id).data.metrics)

    def log_artifacts(
        self, run_id: str, local_dir: str | Path, artifact_path: str | None = None
    ) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def log_model(
        self,
        run_id: str,
        weights: Path,
        *,
        input_example: Any,
        registered_name: str,
        metadata: dict[str, Any],
    ) -> str:
        """Log a network to the run as an MLflow model and register it under
        ``registered_name``: ``weights`` (a checkpoint: weights and config, no code) with
        ``logged_model.py``, which rebuilds it when the model is loaded, so loading it
        unpickles nothing. With an input example and ``metadata`` (e.g. its config).

        Returns:
            the registered model version.
        """
        import mlflow
        import mlflow.pyfunc
        import torch

        mlflow.set_tracking_uri(self.tracking_uri)
        before = self.client.get_run(run_id).info
        said = io.StringIO()  # MLflow prints "Registered model ..." lines: to the log file
        with (
            contextlib.redirect_stdout(said),
            contextlib.redirect_stderr(said),
            mlflow.start_run(run_id=run_id),
        ):
            info = mlflow.pyfunc.log_model(
                name="model",
                # Code and weights: a pickled module runs whatever its pickle says when it is
                # loaded, and torch.export cannot trace a SkipNet's sparse path (which
                # depends on the data: how many images run each block).
                python_model=str(LOGGED_MODEL_CODE),
                artifacts={M.MODEL_WEIGHTS: str(weights)},
                input_example=input_example,
                registered_model_name=registered_name,
                metadata=metadata,
                # Named, not inferred (inference imports and scans the whole environment).
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"skipnet_sweep=={skipnet_sweep.__version__}",
                ],
            )
        # As it was before the model was added: its status and its end time.
        self.client.set_terminated(run_id, before.status, end_time=before.end_time)
        if said.getvalue().strip():
            logging.getLogger("mlflow").info(said.getvalue().strip())
        return str(info.registered_model_version)

    def label_model_version(
        self,
        name: str,
        version: str,
        *,
        alias: str,
        description: str,
        tags: dict[str, Any],
        model_description: str,
    ) -> None:
        """Say which point a registered model's version is: its tags, its description and an
        alias (``models:/<name>@<alias>`` loads it), beside the registered model's own
        description."""
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, str(value))
        self.client.update_model_version(name, version, description=description)
        self.client.set_registered_model_alias(name, alias, version)
        self.client.update_registered_model(name, description=model_description)

    def log_dataset(self, run_id: str, name: str, uri: str, digest: str, context: str) -> None:
        """Record the data a run reads (MLflow's dataset inputs: name, where, a digest of
        what selects it, and the context such as ``train``)."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        dataset = MetaDataset(source=resolve_dataset_source(uri), name=name, digest=digest)
        tag = InputTag(MLFLOW_DATASET_CONTEXT, context)
        self.client.log_inputs(run_id, [DatasetInput(dataset._to_mlflow_entity(), [tag])])

    def set_description(self, run_id: str, text: str) -> None:
        """The run's description (Markdown, shown on its page in the MLflow UI)."""
        self.set_tags(run_id, {MLFLOW_RUN_NOTE: text})

    def clear_error(self, run_id: str) -> None:
        """A run that runs again (a retry, a resumed sweep) is RUNNING and carries no error
        of an earlier attempt."""
        run = self.client.get_run(run_id)
        if M.TAG_ERROR in run.data.tags:
            self.client.delete_tag(run_id, M.TAG_ERROR)
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def end_killed(self, parent: str) -> None:
        """Mark ``parent`` and those of its children still RUNNING as KILLED (Ctrl-C)."""
        for run in self.children(parent):
            if run.info.status == "RUNNING":
                self.finish(run.info.run_id, "KILLED")
        self.finish(parent, "KILLED")

    def children(self, parent: str) -> list:
        """All child runs of ``parent`` (any status), paginated."""
        out, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = '{parent}'",
                max_results=500,
                page_token=token,
            )
            out.extend(page)
            token = page.token
            if not token:
                return out


def _param_str(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return ",".join(_param_str(x) for x in v)
    return str(v)


def tracker_for(plan: Plan) -> Tracker:
    mlflow = plan.space.mlflow
    return Tracker(default_tracking_uri(mlflow.tracking_uri), mlflow.experiment or plan.space.name)
