"""Faults a real cluster meets, each where it lands (issue 24): a trial checks the cache
entry it starts from where it loads it, and a wrong or damaged one is set aside and its
shared job trained again, the trial waiting for it; a job of the sweep that has not finished
is failed in the summary (and the exit code) until a later run finishes it, and a resumed
search hands out the jobs it retries. Without Ray: the trial function is called with Tune's
calls stood in, the summary built from stand-in results."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from ray import tune
from ray.tune.search import SearchGenerator
from sweep_helpers import seed_sp_cache, write_space

from skipnet_sweep.sweep import load_space, make_plan, trials
from skipnet_sweep.sweep.driver import _failures
from skipnet_sweep.sweep.report_keys import CACHE_REJECTED, STEP
from skipnet_sweep.sweep.searcher import AGAIN, ERROR, JobSearch, JobSearcher
from skipnet_sweep.sweep.trials import _run_trial


@pytest.fixture
def seeded(sp_cache, tmp_path, monkeypatch):
    space = write_space(tmp_path, "start", {"baseline": False})
    plan = make_plan(load_space(str(space)))
    seed_sp_cache(sp_cache, plan.storage, space)
    reports, started = [], []

    def run_stage(stage, out, **kw):
        started.append(stage.init)
        return SimpleNamespace(metrics={"top1": 80.0})

    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tune, "report", lambda m, checkpoint=None: reports.append(m))
    monkeypatch.setattr(trials, "run_stage", run_stage)
    monkeypatch.setattr(trials, "_threads", lambda cpus: None)
    return plan, reports, started


def _swap(entry):
    """Another valid checkpoint in its place: a cache entry made for another job."""
    payload = torch.load(entry, weights_only=True)
    payload["cache"]["key"] = "0123456789abcdef"
    torch.save(payload, entry)


def _truncate(entry):
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])


@pytest.mark.parametrize("fault", [_swap, _truncate, lambda entry: entry.unlink()])
def test_a_wrong_or_damaged_start_is_set_aside_and_the_trial_waits_for_it(seeded, fault):
    plan, reports, started = seeded
    sp, hrl = plan.shared_jobs[0], plan.trials[0]
    entry = plan.checkpoint(sp)
    train_run = plan.store.path("train", sp.id)
    train_run.mkdir(parents=True)  # a Ray Train run of the SP would be resumed: not now
    fault(entry)
    _run_trial(hrl, plan)
    assert started == []  # nothing trained from it
    (report,) = reports
    assert report[AGAIN] == sp.id and report[STEP] == 0
    assert f"{sp.id} is trained again, then this job" in report[CACHE_REJECTED]
    assert not entry.exists() and not train_run.exists()
    # The SP's trial finds no entry: it trains (``_run_shared``), and the HRL job runs after.


def test_an_intact_start_is_trained_from(seeded):
    plan, reports, started = seeded
    _run_trial(plan.trials[0], plan)
    assert started == [str(plan.checkpoint(plan.shared_jobs[0]))]
    assert reports[-1]["final"] == 1 and AGAIN not in reports[-1]


def test_two_trials_that_find_it_damaged_set_it_aside_once(seeded):
    plan, reports, _ = seeded
    entry = plan.checkpoint(plan.shared_jobs[0])
    _truncate(entry)
    _run_trial(plan.trials[0], plan)
    _run_trial(plan.trials[1], plan)
    assert [r[AGAIN] for r in reports] == [plan.shared_jobs[0].id] * 2
    assert len(list(entry.parent.parent.glob(f"{entry.parent.name}.rejected-*"))) == 1


# --- failed until they succeed ------------------------------------------------------------


def _result(job_id, metrics=None, error=None):
    return SimpleNamespace(config={"job": job_id}, metrics=metrics or {"top1": 1.0}, error=error)


def test_every_job_that_has_not_finished_is_failed_with_its_reason(tmp_path):
    plan = make_plan(load_space(str(write_space(tmp_path))))
    base, sp = plan.shared_jobs
    hrl = [j for j in plan.trials if j.needs == sp.id]
    # The SP's trial errored (a full disk); the baseline finished; no HRL job ran.
    grid = [_result(base.id), _result(sp.id, error=OSError("[Errno 28] No space left"))]
    failed = _failures(grid, plan)
    assert failed[sp.id] == "[Errno 28] No space left"
    assert all(
        failed[j.id] == f"not run: it starts from {sp.id}, which has not finished" for j in hrl
    )
    assert base.id not in failed
    # A later run finished the SP in a trial of its own (the errored trial stays in Tune's
    # grid) and the HRL jobs: nothing is failed any more.
    grid += [_result(sp.id), *(_result(j.id) for j in hrl)]
    assert _failures(grid, plan) == {}
    # A job that stopped itself, or waits for its start to be trained again, has not finished.
    stopped = [_result(base.id), _result(sp.id), _result(hrl[0].id, {ERROR: "loss became nan"})]
    stopped.append(_result(hrl[1].id, {AGAIN: sp.id}))
    failed = _failures(stopped, plan)
    assert failed[hrl[0].id] == "loss became nan" and "waits for" in failed[hrl[1].id]
    assert failed[hrl[2].id] == "not run"


def test_a_restored_search_asks_the_searcher_again(tmp_path):
    """Tune saves that the search finished; restored as it was, a resumed sweep would never
    hand out the jobs it retries."""
    plan = make_plan(load_space(str(write_space(tmp_path))))
    finished = SearchGenerator(JobSearcher(plan))
    finished.set_finished()
    state = {**finished.get_state(), "total_samples": float("inf")}  # num_samples=-1
    restored = JobSearch(JobSearcher(plan))
    restored.set_state(state)
    assert not restored.is_finished()
    plain = SearchGenerator(JobSearcher(plan))
    plain.set_state(state)
    assert plain.is_finished()  # what Tune alone would do
