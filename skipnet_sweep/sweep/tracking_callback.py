"""The driver's MLflow writer: a Tune callback that logs every trial of a sweep to its own
nested run as its reports come, and keeps what a failing tracking store missed for later."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import Job
from skipnet_sweep.models import GATE_DESIGNS
from skipnet_sweep.sweep.plan import MODEL_FILE, Plan
from skipnet_sweep.sweep.report_keys import CACHE_REJECTED, CACHED, STEP, TUNE_KEYS
from skipnet_sweep.sweep.searcher import AGAIN, ERROR
from skipnet_sweep.sweep.trial_checkpoints import _restored, _surviving
from skipnet_sweep.sweep.trial_errors import error_line

if TYPE_CHECKING:  # MLflow only in the driver: a trial process never imports it (~1.6 s)
    from skipnet_sweep.sweep.tracking import Tracker


# What every evaluation logs and what every training-log point logs: a resumed run's last
# logged step is the later of the two.
_CURVES = (M.TOP1, M.TRAIN_LOSS)


def _tune_callback_base():
    from ray.tune import Callback

    return Callback


@dataclass
class _Logged:
    """What the tracker holds of one trial's MLflow run."""

    run_id: str
    step: int  # the last step logged (-1: none)
    done: bool  # finished before this driver started: recorded in full
    job: Job
    keys: set[str]  # the metric keys logged at ``step``


BACKLOG_FILE = "tracking_backlog.json"  # what the callback could not log, for the next run
RETRY_S = 30.0  # how often a store that failed is tried again while the sweep runs


@dataclass
class _Seen:
    """What the callback reads of a Tune trial at one event, kept (as JSON) while the
    tracking store is down and replayed once it answers: it reads like the trial."""

    trial_id: str
    config: dict
    last_result: dict
    checkpoint_uri: str | None = None
    error: str | None = None

    @classmethod
    def of(cls, trial, error: bool = False) -> _Seen:
        ckpt = getattr(trial, "checkpoint", None)
        uri = None
        if ckpt is not None:
            kind = ckpt.filesystem.type_name
            uri = ckpt.path if kind == "local" else f"{kind}://{ckpt.path.lstrip('/')}"
        return cls(
            trial.trial_id,
            _plain(trial.config),
            _plain(getattr(trial, "last_result", None) or {}),
            uri,
            error_line(trial) if error else None,
        )

    @property
    def checkpoint(self):
        if self.checkpoint_uri is None:
            return None
        from ray import tune

        return tune.Checkpoint(self.checkpoint_uri)

    def get_error(self) -> str | None:
        return self.error


def _plain(d: dict) -> dict:
    """The JSON-able entries of a result or config (Tune adds a few objects)."""
    return {
        k: v
        for k, v in d.items()
        if isinstance(v, str | int | float | bool | type(None)) or (k == "sample")
    }


def store_errors() -> tuple[type[BaseException], ...]:
    """What a tracking store that fails raises: a server down or slow, a full disk, a
    locked sqlite file (MLflow wraps some, not all)."""
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    return MlflowException, OSError, requests.RequestException, sqlalchemy.exc.SQLAlchemyError


class TrackingCallback(_tune_callback_base()):
    """Logs every trial of the sweep to its own nested MLflow run: created when the trial
    starts (RUNNING), each report logged as it comes (training curves between evaluations,
    shared jobs' included), marked finished or failed at the end, found again by the
    trial-id tag after a restore.

    Args:
        tracker: the MLflow tracker.
        parent: the sweep's parent run id.
        plan: the sweep plan (maps a trial's config to its job).
    """

    def __init__(self, tracker: Tracker, parent: str, plan: Plan):
        self.tracker = tracker
        self.parent = parent
        self.plan = plan
        self._runs: dict[str, _Logged] = {}  # by Tune trial id
        # Events the store missed, in order ((event, _Seen, result)); saved beside the
        # sweep's state so that the next run logs them if this one cannot.
        self._backlog: list[tuple[str, _Seen, dict | None]] = []
        self._down_since: float | None = None  # when the store last failed
        self._loaded = False

    def __getstate__(self) -> dict:
        return {"tracker": self.tracker, "parent": self.parent, "plan": self.plan}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["tracker"], state["parent"], state["plan"])

    def describe(self, job: Job) -> tuple[dict, dict]:
        """(params, tags) of a job's run."""
        method = self.plan.method(job.method)
        tags = {
            M.TAG_STAGE: job.config.train.phase,
            M.TAG_METHOD: job.curve,
            M.TAG_METHOD_NAME: job.method,
            M.TAG_METHOD_LABEL: method.label or method.name,
            M.TAG_METHOD_MARKER: method.marker,
        }
        if job.cost_weight is not None:
            tags[M.TAG_COST_WEIGHT] = job.cost_weight
        if job.needs:
            needed = self.tracker.find(M.TAG_TRIAL_ID, job.needs, self.parent)
            if needed:
                # What it starts from, by what it is: an SP run's id is also its sp_run_id
                # (an ACT run's start is the plain baseline, not SP).
                tags[M.TAG_INIT_RUN_ID] = needed
                if self.plan.job(job.needs).config.train.phase == "sp":
                    tags[M.TAG_SP_RUN_ID] = needed
        return job_params(job, self.plan), tags

    def note(self, job: Job, tags: dict) -> str:
        """A run's description (Markdown, on its page): what it is, what it starts from and
        what its metrics hold, the split of every accuracy named."""
        method = self.plan.method(job.method)
        what = f"{method.label or method.name} {job.config.train.phase} of {job.backbone}"
        if job.cost_weight is not None:
            what += f", {job.cost_weight} {job.cost_weight_value:g}"
        if M.TAG_INIT_RUN_ID in tags:
            what += f"; starts from run `{tags[M.TAG_INIT_RUN_ID]}` ({job.needs})"
        lines = [what, "", "| metric | what it holds |", "|---|---|"]
        described = M.describe_metrics(self.plan.config_of(job).data.selection_set)
        lines += [f"| `{name}` | {text} |" for name, text in described.items()]
        return "\n".join(lines)

    def _run(self, trial) -> _Logged:
        if trial.trial_id not in self._runs:
            job = self.plan.job_of(trial.config)
            params, tags = self.describe(job)
            run_id, created = self.tracker.get_or_create(
                M.TAG_TRIAL_ID, job.id, job.id, parent=self.parent, params=params, tags=tags
            )
            if created:
                self.tracker.set_description(run_id, self.note(job, tags))
            done = not created and self.tracker.status(run_id) == "FINISHED"
            if not created and not done:
                # A retried or resumed run: running again, and no longer failed.
                self.tracker.clear_error(run_id)
            # A resumed trial re-reports what followed its checkpoint: evaluations and the
            # training logs between them, each logged once.
            last = -1 if created else max(self.tracker.last_step(run_id, k) for k in _CURVES)
            logged = set() if created else self.tracker.metric_keys(run_id)
            self._runs[trial.trial_id] = _Logged(run_id, last, done, job, logged)
        return self._runs[trial.trial_id]

    # --- a store that fails: the sweep goes on, the missed events are logged later -----

    @property
    def backlog_path(self) -> Path:
        return self.plan.store.local_dir(self.plan.sweep_id) / BACKLOG_FILE

    def _event(self, kind: str, seen: _Seen, result: dict | None = None) -> None:
        """Log one event; while the store fails, keep it (and every later one, in order)
        and try the store again every ``RETRY_S`` seconds."""
        if not self._loaded:
            self._loaded = True
            self._backlog = self._saved() + self._backlog
        self._backlog.append((kind, seen, result))
        if self._down_since is not None and time.monotonic() - self._down_since < RETRY_S:
            self._save()
            return
        self.flush()

    def flush(self) -> bool:
        """Log what the store missed; True once nothing is left."""
        missed = len(self._backlog)
        while self._backlog:
            kind, seen, result = self._backlog[0]
            try:
                self._handle(kind, seen, result)
            except store_errors() as err:
                if self._down_since is None:
                    reason = " ".join(str(err).split())[:160] or type(err).__name__
                    print(
                        f"warning: the tracking store {self.tracker.tracking_uri} failed "
                        f"({type(err).__name__}: {reason}); training and checkpoints go on, "
                        "and what it misses is logged once it answers again (or when the "
                        "same command runs next)",
                        flush=True,
                    )
                self._down_since = time.monotonic()
                self._save()
                return False
            self._backlog.pop(0)
        if self._down_since is not None or missed > 1:
            print(
                f"the tracking store {self.tracker.tracking_uri} answers again: logged the "
                f"{missed} events it missed",
                flush=True,
            )
        self._down_since = None
        self._save()
        return True

    def _handle(self, kind: str, seen: _Seen, result: dict | None) -> None:
        if kind == "start":
            self._run(seen)
        elif kind == "result":
            self._on_result(seen, result or {})
        elif kind == "complete":
            self._on_complete(seen)
        else:
            self._on_error(seen)

    def _saved(self) -> list:
        path = self.backlog_path
        if not path.is_file():
            return []
        try:
            items = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        return [(kind, _Seen(**seen), result) for kind, seen, result in items]

    def _save(self) -> None:
        path = self.backlog_path
        try:
            if not self._backlog:
                path.unlink(missing_ok=True)
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            items = [(kind, seen.__dict__, result) for kind, seen, result in self._backlog]
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(items))
            tmp.replace(path)
        except OSError:  # a full disk: kept in memory for this run
            pass

    def catch_up(self) -> bool:
        """Log what an earlier run of this sweep (or this one) could not, quietly if the
        store still fails (its failure was said); True once nothing is left."""
        self._loaded = True
        self._backlog = self._saved() + self._backlog
        if not self._backlog:
            return True
        self._down_since = time.monotonic()
        return self.flush()

    def on_experiment_end(self, trials, **info):
        if self._backlog:
            self.flush()

    # --- Tune's calls ---------------------------------------------------------------------

    def on_trial_start(self, iteration, trials, trial, **info):
        self._event("start", _Seen.of(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._event("result", _Seen.of(trial), _plain(result))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._event("complete", _Seen.of(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._event("error", _Seen.of(trial, error=True))

    def _on_result(self, trial, result: dict) -> None:
        entry = self._run(trial)
        step = result.get(STEP)
        if step is None or ERROR in result or AGAIN in result or entry.done:
            return
        if entry.step < 0 and result.get("node_ip"):
            # Where the trial ran: placement on a cluster is visible from MLflow.
            self.tracker.set_tags(entry.run_id, {"node_ip": str(result["node_ip"])})
        if result.get(CACHED):
            self.tracker.set_tags(entry.run_id, {"cached": "true"})
        if result.get(CACHE_REJECTED):
            self.tracker.set_tags(entry.run_id, {CACHE_REJECTED: str(result[CACHE_REJECTED])[:500]})
        # Tune's bookkeeping (times, pid, iteration counters) is not a metric of the run.
        ours = {k: v for k, v in result.items() if k not in TUNE_KEYS}
        if step > entry.step:
            self.tracker.log_metrics(entry.run_id, ours, step)
            entry.step, entry.keys = step, set(ours)
        elif result.get("final"):
            # The final result repeats the last evaluation: log only what it adds, once
            # (a resumed run's history has no point twice).
            new = {k: v for k, v in ours.items() if k not in entry.keys}
            if step == entry.step and new:
                self.tracker.log_metrics(entry.run_id, new, step)
                entry.keys |= set(new)

    def _on_complete(self, trial) -> None:
        entry = self._run(trial)
        run_id, job = entry.run_id, entry.job
        if entry.done:  # recorded in full by an earlier driver
            return
        result = trial.last_result or {}
        if ERROR in result:
            self.tracker.set_tags(run_id, {M.TAG_ERROR: result[ERROR]})
            self.tracker.finish(run_id, "FAILED")
            return
        if AGAIN in result:
            # Both runs again from the start, as new runs: these are kept, retired.
            why = str(result.get(CACHE_REJECTED, ""))[:400]
            self.retire(run_id, job.id, f"its start was rejected: {why}")
            needed = self.tracker.find(M.TAG_TRIAL_ID, result[AGAIN], self.parent)
            if needed is not None and self.tracker.status(needed) == "FINISHED":
                self.retire(needed, result[AGAIN], f"its cache entry was rejected: {why}")
            self._runs.pop(trial.trial_id, None)
            return
        # Its final checkpoint, which Tune's restored state may name after its deletion.
        ckpt = _surviving(trial.checkpoint) if trial.checkpoint is not None else None
        try:
            with self._artifacts(ckpt, job) as folder:
                if folder is not None:
                    self.tracker.log_artifacts(run_id, folder, M.ARTIFACT_DIR)
        except OSError as err:  # the run finished; its files stay in storage
            self.tracker.set_tags(run_id, {"skipnet.artifacts_error": str(err)[:300]})
        weights = self._weights(ckpt, job)
        if weights is not None:
            self.tracker.set_tags(run_id, {M.TAG_CHECKPOINT: weights})
        self.tracker.finish(run_id, "FINISHED")

    def retire(self, run_id: str, job_id: str, why: str) -> None:
        """Keep a run that will run again from the start but no longer find it by its job
        (its trial-id tag renamed), FAILED with the reason: the rerun is a run of its own."""
        self.tracker.set_tags(
            run_id, {M.TAG_TRIAL_ID: f"{job_id}-retired-{int(time.time())}", M.TAG_ERROR: why}
        )
        self.tracker.finish(run_id, "FAILED")

    def _weights(self, ckpt, job: Job) -> str | None:
        """Where the run's final weights are (the cache for a shared job, the trial's final
        checkpoint ``ckpt`` otherwise): ``train eval --checkpoint`` takes it."""
        if job.shared:
            return str(self.plan.checkpoint(job))
        if ckpt is None:
            return None
        kind = ckpt.filesystem.type_name
        root = ckpt.path.rstrip("/") if kind == "local" else f"{kind}://{ckpt.path.strip('/')}"
        return f"{root}/{MODEL_FILE}"

    @contextlib.contextmanager
    def _artifacts(self, ckpt, job: Job):
        """The run's evaluation files as a local folder (None if it has none): a shared
        job's from its cache entry, a trial's from its final checkpoint ``ckpt``."""
        if job.shared:
            store = self.plan.store
            folder = f"{str(self.plan.checkpoint(job)).rsplit('/', 1)[0]}/{M.ARTIFACT_DIR}"
            if not store.exists(folder):
                yield None
                return
            with store.local_copy(folder) as local:
                yield local
            return
        with _restored(ckpt) as restored:
            local = restored / M.ARTIFACT_DIR if restored is not None else None
            yield local if local is not None and local.is_dir() else None

    def _on_error(self, trial) -> None:
        run_id = self._run(trial).run_id
        msg = trial.get_error() or "trial errored"
        self.tracker.set_tags(run_id, {M.TAG_ERROR: msg[:500]})
        self.tracker.finish(run_id, "FAILED")


def job_params(job: Job, plan: Plan) -> dict:
    """MLflow params of a job: its stage config, its coordinates, its method's own."""
    cfg = plan.config_of(job)
    t = cfg.train
    params = {
        M.PARAM_DATASET: cfg.data.dataset,
        M.PARAM_ARCH: cfg.model.arch,
        # Only a network with gates has a gate design (ACT's halting units and the plain
        # ResNet have none; the method tag says what they are).
        M.PARAM_GATE: cfg.model.gate if cfg.model.gate in GATE_DESIGNS else None,
        M.PARAM_SEED: t.seed,
        M.PARAM_VARIANT: cfg.variant,
        M.SELECTION_SET: cfg.data.selection_set,
        "val_split": cfg.data.val_split,
        "lr": t.lr,
        "iterations": t.iterations,
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        # How many rounds each speed-up's median and quartiles are over.
        "latency_repeats": cfg.latency.repeats if cfg.latency.batch_sizes else None,
        # Where its initial weights are (the run they come from: tag init_run_id).
        "init": _uri(cfg.init) if cfg.init else None,
        M.PARAM_SP_KEY: job.key
        if job.shared
        else (Path(cfg.init).parent.name if cfg.init else None),
    }
    params.update({k: v for k, v in job.coords if k not in ("backbone", "gate")})
    params.update(plan.method(job.method).params(job))
    return params


def _uri(path: str) -> str:
    """A storage path as a URI: ``file://`` for a local one, object storage's as it is."""
    return path if "://" in path else Path(path).resolve().as_uri()
