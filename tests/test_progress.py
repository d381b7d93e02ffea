"""The sweep's terminal lines without Ray running: what runs first, a line per evaluation
inside a job (and one a minute while it only trains) with its speed and time left, and a
sweep ETA that weighs jobs by their work, checked against a machine of constant speed."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from sweep_helpers import write_space

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep import load_space, make_plan
from skipnet_sweep.sweep import progress as P
from skipnet_sweep.sweep.report_keys import STEP, TOTAL_STEPS
from skipnet_sweep.sweep.searcher import AGAIN, ERROR


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def setup(tmp_path: Path, monkeypatch):
    plan = make_plan(load_space(str(write_space(tmp_path))))
    clock = Clock()
    monkeypatch.setattr(P.time, "monotonic", clock)
    out = io.StringIO()
    callback = P.ProgressCallback(plan, out=out)
    callback.setup()
    return plan, callback, clock, out


def trial(job, trial_id: str | None = None, status: str = "RUNNING", **config) -> SimpleNamespace:
    """A stand-in Tune trial of ``job`` (``config``: more of its config, ``attempt=1``)."""
    return SimpleNamespace(
        trial_id=trial_id or job.id, config={"job": job.id, **config}, last_result={}, status=status
    )


def test_the_first_line_says_what_runs_first(tmp_path: Path) -> None:
    plan = make_plan(load_space(str(write_space(tmp_path))))
    line = P.opening_line(plan)
    assert line.startswith("6 jobs (1 baseline, 1 sp, 4 hrl); runs first: baseline")
    # The tiny space's SP does not start from the baseline: both run first, two at once.
    assert "sp rnn, which 4 others start from" in line


def test_a_running_job_reports_its_evaluations_and_a_line_a_minute(setup) -> None:
    plan, callback, clock, out = setup
    sp = trial(plan.find("sp", "cifar_resnet8", "rnn"))
    callback.on_trial_start(0, [sp], sp)
    clock.t = 10.0
    callback.on_trial_result(0, [], sp, {STEP: 1, TOTAL_STEPS: 6, M.TRAIN_LOSS: 1.5})
    clock.t = 20.0
    callback.on_trial_result(0, [], sp, {STEP: 2, TOTAL_STEPS: 6, M.TRAIN_LOSS: 1.4})
    assert out.getvalue() == ""  # training logs: a line a minute at most
    clock.t = 30.0
    evaluation = {STEP: 3, TOTAL_STEPS: 6, M.TOP1: 61.25, M.IMAGES_PER_S: 1234.5}
    callback.on_trial_result(0, [], sp, evaluation)
    line = out.getvalue()
    # 2 steps in 20 s since its first report: 3 steps left take 30 s.
    assert (
        "sp" in line and "step 3/6 (50 %)  test top-1 61.2 %  1,234 images/s  job ETA 30s" in line
    )
    clock.t = 95.0
    callback.on_trial_result(0, [], sp, {STEP: 4, TOTAL_STEPS: 6, M.TRAIN_LOSS: 1.25})
    assert (
        out.getvalue().splitlines()[-1].endswith("step 4/6 (66 %)  train loss 1.250  job ETA 57s")
    )


def test_the_sweep_eta_weighs_jobs_by_their_work(setup) -> None:
    """On a machine that gets through the same work per second all along, the time left
    is told exactly once a job has finished, whatever the jobs' lengths; counting jobs
    would say the baseline's time per job for every trial."""
    plan, callback, clock, out = setup
    rate = 10.0  # trained images per second
    total = sum(plan.work(j) for j in plan.jobs)
    base = trial(plan.find("baseline", "cifar_resnet8"))
    callback.on_trial_start(0, [base], base)
    clock.t = plan.work(base_job := plan.job(base.config["job"])) / rate
    base.last_result = {M.TOP1: 70.0, M.FLOPS_MEAN: 2e6, M.FLOPS_PLAIN: 2e6, "time_total_s": 1}
    callback.on_trial_complete(0, [base], base)
    line = out.getvalue().strip()
    assert line.startswith("[1/6] baseline") and "test top-1  70.0 %" in line
    left = (total - plan.work(base_job)) / rate
    assert line.endswith(f"sweep ETA {P.duration(left)}")
    assert P.duration(left) != P.duration(clock.t * 5)  # what one ETA per job would say


def test_work_done_before_this_driver_does_not_speed_up_the_eta(setup) -> None:
    """A cached shared job finishes at once and a resumed one had half its steps trained:
    neither counts as this driver's work, so the time left stays exact."""
    plan, callback, clock, out = setup
    rate = 10.0
    sp_job = plan.find("sp", "cifar_resnet8", "rnn")
    base_job = plan.find("baseline", "cifar_resnet8")
    sp, base = trial(sp_job), trial(base_job)
    callback.on_trial_start(0, [sp, base], sp)
    callback.on_trial_start(0, [sp, base], base)
    sp.last_result = {M.TOP1: 70.0, M.FLOPS_MEAN: 1e6, "cached": 1}
    callback.on_trial_complete(0, [sp, base], sp)
    assert "sweep ETA" not in out.getvalue()  # nothing trained yet: no rate to tell
    # The baseline resumed at step 3 of 6: its first report already says half is done.
    callback.on_trial_result(0, [], base, {STEP: 3, TOTAL_STEPS: 6, M.TRAIN_LOSS: 1.0})
    clock.t = plan.work(base_job) / 2 / rate
    base.last_result = {M.TOP1: 70.0, M.FLOPS_MEAN: 2e6, "time_total_s": clock.t}
    callback.on_trial_complete(0, [sp, base], base)
    left = (sum(plan.work(j) for j in plan.trials)) / rate  # the four HRL trials
    assert out.getvalue().splitlines()[-1].endswith(f"sweep ETA {P.duration(left)}")


# The quickstart's jobs as measured on 2 cores (docs/fidelity.md, "The quickstart", the
# 2026-12-07 fresh-clone run; durations from its progress lines): each job's start and end in
# seconds, two at once.
QUICKSTART_TIMELINE = {
    ("baseline",): (0, 95),
    ("sp", "rnn"): (0, 145),
    ("act", None): (95, 113),
    ("sact", None): (113, 133),
    ("hrl", 0.3): (145, 209),
    ("hrl", 0.5): (145, 212),
    ("hrl", 0.8): (209, 275),
}


def test_the_quickstart_eta_is_within_30_percent_once_a_third_is_done(monkeypatch) -> None:
    """The measured timeline replayed: the ETA printed as each job ends, once a third of the
    work is done and before the last job, is within 30 % of the time that was left (counting
    jobs said 1.2-2.9x)."""
    plan = make_plan(load_space("quickstart", check_paths=False))

    def key(job) -> tuple:
        stage = job.config.train.phase
        if stage == "baseline":
            return (stage,)
        if stage == "sp":
            return (stage, job.config.model.gate)
        return (stage, job.coord("alpha"))

    timeline = {job.id: QUICKSTART_TIMELINE[key(job)] for job in plan.jobs}
    end = max(stop for _, stop in timeline.values())
    clock, out = Clock(), io.StringIO()
    monkeypatch.setattr(P.time, "monotonic", clock)
    callback = P.ProgressCallback(plan, out=out)
    callback.setup()
    total = sum(plan.work(j) for j in plan.jobs)
    events = sorted([(t0, 0, j) for j, (t0, _) in timeline.items()]
                    + [(t1, 1, j) for j, (_, t1) in timeline.items()])  # fmt: skip
    done, checked, started, started_trials = 0.0, 0, {}, {}
    for t, ending, job_id in events:
        clock.t = float(t)
        # The running jobs' step reports: their steps advance with their time.
        for other, t0 in started.items():
            t1 = timeline[other][1]
            step = max(1, min(100, int(100 * (t - t0) / (t1 - t0))))
            callback.on_trial_result(0, [], started_trials[other], {STEP: step, TOTAL_STEPS: 100})
        if not ending:
            started[job_id] = t
            started_trials[job_id] = trial(plan.job(job_id))
            callback.on_trial_start(0, [], started_trials[job_id])
            callback.on_trial_result(0, [], started_trials[job_id], {STEP: 1, TOTAL_STEPS: 100})
            continue
        running = started_trials[job_id]
        del started[job_id]
        running.last_result = {M.TOP1: 80.0, M.FLOPS_MEAN: 1e6, "time_total_s": 1}
        callback.on_trial_complete(0, [], running)
        done += plan.work(plan.job(job_id))
        line = out.getvalue().splitlines()[-1]
        if done >= total / 3 and "sweep ETA" in line and t < end - 30:
            said = line.rsplit("sweep ETA ", 1)[1]
            minutes, _, seconds = said.rstrip("s").rpartition("m")
            eta = 60 * int(minutes or 0) + int(seconds)
            assert 0.7 <= eta / (end - t) <= 1.3, (line, end - t)
            checked += 1
    assert checked == 3  # the ends of SP and of two HRL jobs


# --- the count: jobs that finished, each once (issue 24, item 3) -----------------------------


def finish(callback, run, trials=(), **result) -> str:
    """Complete ``run`` with ``result`` (a top-1 and MACs unless given); the line printed."""
    run.last_result = result or {M.TOP1: 70.0, M.FLOPS_MEAN: 1e6, "time_total_s": 1}
    run.status = "TERMINATED"
    callback.on_trial_complete(0, list(trials), run)
    return callback.out.getvalue().splitlines()[-1]


def test_a_failed_job_is_not_done_and_a_job_trained_again_counts_once(setup, tmp_path) -> None:
    plan, callback, _, _ = setup
    base_job, sp_job = plan.shared_jobs
    base, sp = trial(base_job), trial(sp_job)
    hrl = [trial(j) for j in plan.trials if j.needs == sp_job.id]
    for t in (base, sp, *hrl):
        callback.on_trial_start(0, [], t)
    assert finish(callback, base).startswith("[1/6] baseline")
    assert finish(callback, sp).startswith("[2/6] sp")
    # An HRL trial stopped itself (a NaN loss): failed, not done.
    line = finish(callback, hrl[0], **{ERROR: "loss became nan at step 3"})
    assert line.startswith("[2/6, 1 failed] hrl") and "FAILED: loss became nan" in line
    # Another errored (Tune gave up on it): failed too, with its error's last line, read
    # from the driver's copy (Tune syncs it to the storage, where get_error reads, later).
    error_file = tmp_path / "error.txt"
    error_file.write_text(
        "Failure # 1\nTraceback ...\nOSError: [Errno 28] No space left on device\n"
    )
    hrl[1].error_file, hrl[1].get_error = str(error_file), lambda: None
    callback.on_trial_error(0, [], hrl[1])
    line = callback.out.getvalue().splitlines()[-1]
    assert line.startswith("[2/6, 2 failed] hrl") and "No space left on device" in line
    # A third found the SP's cache entry damaged: the SP trains again in a trial of its own,
    # then the HRL job in one of its own. Each job counts once, when it finishes.
    finish(callback, hrl[2], **{AGAIN: sp_job.id, "cache_rejected": "cut short"})
    sp_again = trial(sp_job, "sp-again", attempt=1)
    hrl_again = trial(plan.job(hrl[2].config["job"]), "hrl-again", attempt=1)
    callback.on_trial_start(0, [], sp_again)
    assert finish(callback, sp_again).startswith("[2/6, 2 failed] sp")
    callback.on_trial_start(0, [], hrl_again)
    assert finish(callback, hrl_again).startswith("[3/6, 2 failed] hrl")
    assert finish(callback, hrl[3]).startswith("[4/6, 2 failed] hrl")


def test_a_rerun_counts_earlier_jobs_once_and_its_retried_jobs_when_they_finish(setup) -> None:
    """The driver of a rerun: Tune restored the earlier trials, resuming the errored one
    (``resume_errored``: its status is PENDING again); the job that stopped itself stays
    failed; the one whose start was set aside counts once its trial run again finishes."""
    plan, callback, _, out = setup
    base_job, sp_job = plan.shared_jobs
    hrl_jobs = [j for j in plan.trials if j.needs == sp_job.id]
    ok = {M.TOP1: 70.0, M.FLOPS_MEAN: 1e6}
    earlier = [trial(j, status="TERMINATED") for j in (base_job, sp_job, *hrl_jobs[:2])]
    for t, result in zip(earlier, (ok, ok, {ERROR: "nan"}, {AGAIN: sp_job.id}), strict=True):
        t.last_result = result
    retried = trial(hrl_jobs[2], status="PENDING")
    again = trial(hrl_jobs[1], "h1-again", status="PENDING", attempt=1)
    trials = [*earlier, retried, again]
    callback.on_trial_start(0, trials, retried)
    callback.on_trial_start(0, trials, again)
    assert finish(callback, retried, trials).startswith("[3/6, 1 failed] hrl")
    assert finish(callback, again, trials).startswith("[4/6, 1 failed] hrl")
    last = trial(hrl_jobs[3])
    callback.on_trial_start(0, trials, last)
    assert finish(callback, last, trials).startswith("[5/6, 1 failed] hrl")
