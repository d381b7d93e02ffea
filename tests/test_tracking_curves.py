"""Training curves reach MLflow through the driver's Tune callback without Ray running: the
training logs between evaluations are logged at their steps, and a driver that resumes a
trial logs no step twice."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sweep_helpers import migrated_store, write_space

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep import load_space, make_plan
from skipnet_sweep.sweep.driver import open_parent, tracker_for
from skipnet_sweep.sweep.report_keys import STEP, TOTAL_STEPS
from skipnet_sweep.sweep.searcher import EVALUATION
from skipnet_sweep.sweep.tracking_callback import TrackingCallback


def _log(step: int) -> dict:
    return {M.TRAIN_LOSS: 1.0 / step, M.LR: 0.1, M.IMAGES_PER_S: 100.0, STEP: step,
            TOTAL_STEPS: 6, "training_iteration": step}  # fmt: skip


def _eval(step: int, n: int, **extra) -> dict:
    return {**_log(step), M.TOP1: 50.0 + step, M.FLOPS_MEAN: 1e6, EVALUATION: n, **extra}


def _history(tracker, run_id: str, key: str) -> list[int]:
    return [m.step for m in tracker.client.get_metric_history(run_id, key)]


def test_curves_have_a_point_per_log_and_a_resumed_trial_logs_no_step_twice(tmp_path: Path):
    migrated_store(tmp_path)
    plan = make_plan(load_space(str(write_space(tmp_path))))
    tracker = tracker_for(plan)
    parent = open_parent(plan, tracker, fresh=False)
    job = plan.trials[0]
    trial = SimpleNamespace(trial_id="t0", config={"job": job.id}, last_result={})

    first = TrackingCallback(tracker, parent, plan)
    first.on_trial_start(0, [], trial)
    for result in (_log(1), _log(2), _eval(3, 1), _log(4), _log(5)):
        first.on_trial_result(0, [], trial, result)
    run_id = tracker.find(M.TAG_TRIAL_ID, job.id, parent)
    assert _history(tracker, run_id, M.TRAIN_LOSS) == [1, 2, 3, 4, 5]
    assert _history(tracker, run_id, M.TOP1) == [3]
    # Bookkeeping keys are not metrics of the run.
    assert not {STEP, TOTAL_STEPS, EVALUATION} & tracker.metric_keys(run_id)

    # The driver died; a new one resumes the trial from its step-3 checkpoint: the trial
    # reports that evaluation again, retrains steps 4 and 5, goes on to its end.
    second = TrackingCallback(tracker, parent, plan)
    second.on_trial_start(0, [], trial)
    for result in (_eval(3, 1), _log(4), _log(5), _eval(6, 2),
                   _eval(6, 2, **{M.TEST_TOP1: 40.0, "final": 1})):  # fmt: skip
        second.on_trial_result(0, [], trial, result)
    assert _history(tracker, run_id, M.TRAIN_LOSS) == [1, 2, 3, 4, 5, 6]
    assert _history(tracker, run_id, M.TOP1) == [3, 6]
    assert _history(tracker, run_id, M.TEST_TOP1) == [6]


def test_metrics_are_logged_to_seven_significant_digits(tmp_path: Path):
    """What the MLflow UI shows is what is stored: no float noise in its tables."""
    migrated_store(tmp_path)
    plan = make_plan(load_space(str(write_space(tmp_path))))
    tracker = tracker_for(plan)
    parent = open_parent(plan, tracker, fresh=False)
    tracker.log_metrics(parent, {M.TOP1: 86.35000000000001, M.FLOPS_MEAN: 27406571.4, "n": 3})
    got = tracker.client.get_run(parent).data.metrics
    assert (got[M.TOP1], got[M.FLOPS_MEAN], got["n"]) == (86.35, 27406570.0, 3.0)
