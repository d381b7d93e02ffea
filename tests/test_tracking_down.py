"""A tracking store that fails (a server down, a full disk, a locked sqlite file) while the
sweep runs: the callback says so in one line and lets Tune go on, keeps what the store
missed (in memory and beside the sweep's state) and logs it once the store answers, in this
run or the next, each run once. No Ray: the callback is driven with stand-in trials."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from sweep_helpers import migrated_store, tracking_uri, write_space

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep import load_space, make_plan, tracking_callback
from skipnet_sweep.sweep.report_keys import STEP
from skipnet_sweep.sweep.tracking import Tracker
from skipnet_sweep.sweep.tracking_callback import TrackingCallback


@dataclass
class Trial:  # what the callback reads of a Tune trial
    trial_id: str
    config: dict
    last_result: dict = field(default_factory=dict)
    checkpoint: None = None

    def get_error(self):
        return None


class Down:
    """An MLflow client whose server does not answer."""

    calls = 0

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            Down.calls += 1
            raise requests.ConnectionError("Connection refused")

        return fail


@pytest.fixture
def sweep(tmp_path: Path):
    plan = make_plan(load_space(str(write_space(tmp_path))))
    migrated_store(tmp_path)
    tracker = Tracker(tracking_uri(tmp_path), "tiny")
    parent, _ = tracker.get_or_create(M.TAG_SWEEP_ID, plan.sweep_id, "tiny")
    return plan, tracker, parent


def _run_a_trial(callback: TrackingCallback, job_id: str, trial_id: str = "t1") -> None:
    trial = Trial(trial_id, {"job": job_id})
    callback.on_trial_start(0, [], trial)
    for step in (2, 4):
        result = {M.TOP1: 50.0 + step, M.FLOPS_MEAN: 1e6, STEP: step}
        trial.last_result = result
        callback.on_trial_result(0, [], trial, result)
    trial.last_result = {**result, "final": 1}
    callback.on_trial_result(0, [], trial, trial.last_result)
    callback.on_trial_complete(0, [], trial)


def _runs(tracker: Tracker, parent: str) -> list:
    return [r for r in tracker.children(parent)]


def test_a_store_down_is_said_once_and_the_next_run_logs_what_it_missed(sweep, capsys):
    plan, tracker, parent = sweep
    job = plan.trials[0]
    callback = TrackingCallback(tracker, parent, plan)
    tracker._client, Down.calls = Down(), 0
    _run_a_trial(callback, job.id)  # raises nothing: Tune and the training go on
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(
        f"warning: the tracking store {tracker.tracking_uri} failed (ConnectionError"
    )
    # Tried once, then not again before RETRY_S: no event waits on a dead store.
    assert Down.calls == 1
    saved = json.loads(callback.backlog_path.read_text())
    assert [kind for kind, _, _ in saved] == ["start", "result", "result", "result", "complete"]

    # The next run of the sweep (a new driver), the store back.
    back = Tracker(tracking_uri(plan.storage.parent), "tiny")
    assert TrackingCallback(back, parent, plan).catch_up()
    assert "answers again: logged the 5 events it missed" in capsys.readouterr().out
    (run,) = _runs(back, parent)
    assert run.info.status == "FINISHED" and run.data.tags[M.TAG_TRIAL_ID] == job.id
    history = back.client.get_metric_history(run.info.run_id, M.TOP1)
    assert sorted(m.step for m in history) == [2, 4]
    assert not callback.backlog_path.exists()
    assert TrackingCallback(back, parent, plan).catch_up()  # nothing twice
    assert len(_runs(back, parent)) == 1


def test_a_store_back_within_the_run_gets_what_it_missed_with_the_next_event(
    sweep, capsys, monkeypatch
):
    plan, tracker, parent = sweep
    monkeypatch.setattr(tracking_callback, "RETRY_S", 0.0)
    callback = TrackingCallback(tracker, parent, plan)
    tracker._client = Down()
    _run_a_trial(callback, plan.trials[0].id, "t1")
    tracker._client = None  # the server answers again
    _run_a_trial(callback, plan.trials[1].id, "t2")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "answers again: logged the 6 events" in lines[1]
    runs = _runs(tracker, parent)
    assert sorted(r.data.tags[M.TAG_TRIAL_ID] for r in runs) == sorted(
        j.id for j in plan.trials[:2]
    )
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert not callback.backlog_path.exists()
