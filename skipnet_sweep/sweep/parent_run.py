"""The sweep's parent run in MLflow, found by its sweep id: its params, the space it ran, the
dataset and the commit of the code."""

from __future__ import annotations

import time
from pathlib import Path

from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from skipnet_sweep import metrics as M
from skipnet_sweep.data import DEFAULT_DOWNLOAD_ROOT, FASHION_MNIST_ROOT
from skipnet_sweep.methods import short_hash
from skipnet_sweep.sweep.plan import Plan
from skipnet_sweep.sweep.space import space_to_yaml
from skipnet_sweep.sweep.tracking import Tracker


def open_parent(plan: Plan, tracker: Tracker, fresh: bool) -> str:
    """The sweep's parent run, found by its sweep id (a fresh start retires the old one)."""
    if fresh:
        old = tracker.find(M.TAG_SWEEP_ID, plan.sweep_id)
        if old is not None:
            tracker.set_tags(old, {M.TAG_SWEEP_ID: f"{plan.sweep_id}-retired-{int(time.time())}"})
    run_id, created = tracker.get_or_create(
        M.TAG_SWEEP_ID,
        plan.sweep_id,
        plan.space.name,
        params={
            M.PARAM_DATASET: plan.space.dataset.name,
            "space_file": plan.space.source,
            "shared_jobs": len(plan.shared_jobs),
            "grid_trials": len(plan.trials),
            "search": plan.space.search.algorithm,
        },
        tags={M.TAG_STAGE: M.SWEEP_STAGE, M.TAG_SPACE: plan.space.name},
    )
    if created:
        tracker.log_text(run_id, space_to_yaml(plan.space), "space.yaml")
        data = plan.data
        default = FASHION_MNIST_ROOT if data.dataset == "fashion_mnist" else DEFAULT_DOWNLOAD_ROOT
        root = Path(data.root) if data.root else default
        tracker.log_dataset(
            run_id,
            data.dataset,
            root.resolve().as_uri(),
            short_hash([data.dataset, data.train_subset, data.test_subset, data.val_split]),
            "train",
        )
        commit = _git_commit()
        if commit:
            tracker.set_tags(run_id, {MLFLOW_GIT_COMMIT: commit})
    return run_id


def _git_commit() -> str | None:
    """The commit of the skipnet_sweep checkout that runs, if it runs from one."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
