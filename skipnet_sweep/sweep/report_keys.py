"""The keys of what a trial reports to Tune beyond its metrics, and Tune's own keys: read by
the trials, the MLflow callback (which logs everything else as metrics) and the progress
lines."""

from __future__ import annotations

from skipnet_sweep.sweep.searcher import AGAIN, EVALUATION

STEP = "step"
TOTAL_STEPS = "total_steps"  # the job's optimiser steps, with its training logs (progress)
CACHED = "cached"  # 1 in the final result of a shared job whose cache entry was reused
CACHE_REJECTED = "cache_rejected"  # why a shared job's cache entry was not reused
TUNE_KEYS = frozenset(
    (
        "training_iteration", "time_total_s", "time_this_iter_s", "timestamp", "pid",
        "time_since_restore", "iterations_since_restore", "timesteps_total", "episodes_total",
        "timesteps_since_restore", "done", "final", "checkpoint_path", "node_ip", "hostname",
        "date", "trial_id", "experiment_tag", "config", CACHED, CACHE_REJECTED, STEP,
        TOTAL_STEPS, EVALUATION, AGAIN,
    )
)  # fmt: skip
