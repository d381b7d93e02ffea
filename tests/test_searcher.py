"""The sweep's searcher without Ray running: jobs are released as soon as what they start
from is done, a failure blocks only what needs it, concurrency is respected, and the Optuna
study is persistent and told about failures as failures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import optuna
import pytest
from ray.tune.search import Searcher
from sweep_helpers import write_space

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep import load_space, make_plan
from skipnet_sweep.sweep.report_keys import STEP
from skipnet_sweep.sweep.searcher import AGAIN, ERROR, JobSearcher

RESULT = {M.TOP1: 50.0, M.FLOPS_MEAN: 1e6}


def _plan(folder: Path, **changes):
    return make_plan(load_space(str(write_space(folder, changes=changes))))


def _drain(searcher: JobSearcher, prefix: str = "t") -> list:
    """Ask until the searcher has nothing more now; returns (trial id, config) pairs."""
    out = []
    while True:
        tid = f"{prefix}{len(out)}"
        config = searcher.suggest(tid)
        if config is None or config == Searcher.FINISHED:
            return out
        out.append((tid, config))


def test_trials_wait_for_the_shared_job_they_start_from(tmp_path: Path) -> None:
    plan = _plan(tmp_path, **{"baselines": {"act": {"tau": [0.1], "iterations": 2}}})
    searcher = JobSearcher(plan)
    first = _drain(searcher)
    # Only the shared jobs (baseline, SP) can start: every trial needs one of them.
    assert [c["job"] for _, c in first] == [j.id for j in plan.shared_jobs]
    base_trial = next(t for t, c in first if c["job"].startswith("baseline"))
    searcher.on_trial_complete(base_trial, RESULT)
    # ACT starts from the baseline: released while SP still runs.
    released = _drain(searcher, "u")
    assert [plan.job(c["job"]).method for _, c in released] == ["act"]
    sp_trial = next(t for t, c in first if c["job"].startswith("sp"))
    searcher.on_trial_complete(sp_trial, RESULT)
    hrl = _drain(searcher, "v")
    assert {plan.job(c["job"]).config.train.phase for _, c in hrl} == {"hrl"}
    assert len(hrl) == 4
    assert searcher.suggest("w") == Searcher.FINISHED


def test_a_failed_shared_job_blocks_only_its_trials(tmp_path: Path) -> None:
    plan = _plan(tmp_path, **{"baselines": {"act": {"tau": [0.1], "iterations": 2}}})
    searcher = JobSearcher(plan)
    first = dict((c["job"].split("-")[0], t) for t, c in _drain(searcher))
    searcher.on_trial_complete(first["sp"], {ERROR: "loss became nan at step 3"})
    searcher.on_trial_complete(first["baseline"], RESULT)
    released = _drain(searcher, "u")
    assert [plan.job(c["job"]).method for _, c in released] == ["act"]
    assert searcher.suggest("x") == Searcher.FINISHED
    blocked = searcher.blocked()
    assert len(blocked) == 4 and all("which failed" in why for why in blocked.values())


def test_at_most_max_concurrent_trials_at_once(tmp_path: Path) -> None:
    plan = _plan(tmp_path, baseline=False)
    searcher = JobSearcher(plan, max_concurrent=2)
    (sp,) = _drain(searcher)
    searcher.on_trial_complete(sp[0], RESULT)
    assert len(_drain(searcher, "u")) == 2  # 4 HRL trials wait, 2 at a time


def test_state_survives_save_and_restore(tmp_path: Path) -> None:
    plan = _plan(tmp_path, baseline=False)
    searcher = JobSearcher(plan)
    (sp,) = _drain(searcher)
    searcher.save(str(tmp_path / "state.pkl"))
    restored = JobSearcher(plan)
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored.suggest("again") is None  # SP is running: nothing handed out twice
    restored.on_trial_complete(sp[0], RESULT)
    assert len(_drain(restored, "u")) == 4


@pytest.fixture
def optuna_plan(tmp_path: Path):
    return _plan(
        tmp_path,
        baseline=False,
        alpha={"distribution": "loguniform", "low": 0.01, "high": 4.0},
        search={"algorithm": "optuna", "sampler": "tpe", "num_samples": 3},
    )


def test_optuna_study_is_persistent_and_told_failures_as_failures(optuna_plan) -> None:
    searcher = JobSearcher(optuna_plan)
    (sp,) = _drain(searcher)
    assert "sample" not in sp[1]  # no sample before the SP job it starts from is done
    searcher.on_trial_complete(sp[0], RESULT)
    samples = _drain(searcher, "s")
    assert len(samples) == 3
    for _, config in samples:
        assert 0.01 <= config["sample"]["alpha"] <= 4.0
        assert optuna_plan.job_of(config).config.train.alpha == config["sample"]["alpha"]
    (a, _), (b, _), (c, _) = samples
    searcher.on_trial_complete(a, RESULT)
    searcher.on_trial_complete(b, {**RESULT, ERROR: "loss became nan at step 2"})
    searcher.on_trial_complete(c, None, error=True)
    assert searcher.suggest("z") == Searcher.FINISHED
    # The study is in an RDB file beside the sweep's state and outlives the searcher; the
    # lines `run` prints name that file, the study, and a command that opens it.
    where, browse = optuna_plan.optuna_lines()
    url = browse.split("optuna-dashboard ")[1].split()[0]
    assert url == f"sqlite:///{optuna_plan.storage}/optuna/{optuna_plan.sweep_id}.db"
    assert where == f"Optuna study '{optuna_plan.sweep_id}-optuna': {url[len('sqlite:///') :]}"
    assert Path(url.removeprefix("sqlite:///")).is_file()
    study = optuna.load_study(study_name=f"{optuna_plan.sweep_id}-optuna", storage=url)
    states = [t.state for t in study.trials]
    assert states == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.FAIL,
    ]
    assert study.trials[0].values == [RESULT[M.TOP1], RESULT[M.FLOPS_MEAN]]
    assert searcher.study.sampler._constant_liar  # concurrent TPE samples spread out


def test_the_printed_optuna_dashboard_command_is_installed(tmp_path: Path) -> None:
    # It comes with the package (a dependency), beside this interpreter's own scripts.
    assert (Path(sys.executable).parent / "optuna-dashboard").is_file()
    grid = _plan(tmp_path, baseline=False)
    assert grid.optuna_lines() == []  # a grid sweep has no study to point at


@pytest.mark.parametrize(
    ("sp", "shared_ask"),
    [
        # One worker trains in the shared job's trial: the trial holds the worker's CPUs.
        ({"workers": 1, "cpu": 2}, {"cpu": 2, "gpu": 0}),
        # Data-parallel: the trial only drives its TorchTrainer, whose workers hold the CPUs.
        ({"workers": 2, "cpu": 1}, {"cpu": 0, "memory": 2**20}),
    ],
)
def test_what_each_trial_reserves(tmp_path: Path, sp: dict, shared_ask: dict) -> None:
    from skipnet_sweep.sweep.trials import trial_resources

    space = write_space(tmp_path, changes={"resources": {"sp": sp, "trial": {"cpu": 1}}})
    plan = make_plan(load_space(str(space)))
    for job in plan.jobs:
        want = shared_ask if job.shared else {"cpu": 1, "gpu": 0}
        assert trial_resources({"job": job.id}, plan) == want, job.id


@pytest.mark.parametrize(
    ("storage", "period"),
    [
        # Local storage: Tune saves its state every second (cheap: a local copy).
        (None, "1"),
        # Object storage: every save uploads the experiment folder; Tune's own period.
        ("s3://bucket/runs", "auto"),
    ],
)
def test_tune_settings_per_storage_and_none_outlives_its_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: str | None, period: str
) -> None:
    from skipnet_sweep.sweep.driver import _env_defaults, tune_settings

    changes = {"max_concurrent_trials": 3} | ({"storage_path": storage} if storage else {})
    settings = tune_settings(_plan(tmp_path, **changes))
    assert settings == {"TUNE_MAX_PENDING_TRIALS_PG": "3", "TUNE_GLOBAL_CHECKPOINT_S": period}
    monkeypatch.delenv("TUNE_GLOBAL_CHECKPOINT_S", raising=False)
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "7")  # a user's own setting
    with _env_defaults(settings):
        assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == period
        assert os.environ["TUNE_MAX_PENDING_TRIALS_PG"] == "7"
    assert "TUNE_GLOBAL_CHECKPOINT_S" not in os.environ
    assert os.environ["TUNE_MAX_PENDING_TRIALS_PG"] == "7"


def test_asha_stops_trials_by_rung_not_by_report_count(tmp_path: Path) -> None:
    """Ray's ASHA stops every trial at its max_t-th report (100 by default): a long HRL run
    evaluated often would end half trained. Here the better trial runs through 150 reports,
    the worse one is stopped at a rung, and a shared job is never stopped."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from skipnet_sweep.sweep.searcher import SharedAwareASHA

    plan = _plan(tmp_path, **{"baselines": {"act": {"tau": [0.1], "iterations": 2}}})
    asha = SharedAwareASHA(plan, metric=M.TOP1, mode="max", grace_period=1, reduction_factor=2)
    trials = {
        name: SimpleNamespace(trial_id=name, config={"job": job.id})
        for name, job in (("good", plan.trials[0]), ("bad", plan.trials[1]),
                          ("shared", plan.shared_jobs[0]))
    }  # fmt: skip
    for trial in trials.values():
        asha.on_trial_add(None, trial)
    top1 = {"good": 80.0, "bad": 10.0, "shared": 1.0}
    stopped = {}
    for it in range(1, 151):
        for name, trial in trials.items():
            if name in stopped:
                continue
            result = {"training_iteration": it, M.TOP1: top1[name]}
            if asha.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                stopped[name] = it
    assert "good" not in stopped and "shared" not in stopped
    assert stopped["bad"] <= 2


def test_asha_counts_evaluations_not_the_training_logs_reported_between_them(
    tmp_path: Path,
) -> None:
    """Training curves reach Tune as reports between evaluations; ASHA's rungs stay at
    evaluation counts (grace period 4: the worse trial is compared, and stopped, at its 4th
    evaluation, not at its 4th report, which is a training log)."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from skipnet_sweep.sweep.searcher import EVALUATION, SharedAwareASHA

    plan = _plan(tmp_path)
    asha = SharedAwareASHA(plan, metric=M.TOP1, mode="max", grace_period=4, reduction_factor=2)
    trials = {
        name: SimpleNamespace(trial_id=name, config={"job": job.id})
        for name, job in (("good", plan.trials[0]), ("bad", plan.trials[1]))
    }
    for trial in trials.values():
        asha.on_trial_add(None, trial)
    top1 = {"good": 80.0, "bad": 10.0}
    stopped, reports = {}, 0
    for evaluation in range(1, 9):
        for kind in ("log",) * 4 + ("eval",):
            reports += 1
            for name, trial in trials.items():
                if name in stopped:
                    continue
                result = {"training_iteration": reports, M.TRAIN_LOSS: 1.0}
                if kind == "eval":
                    result.update({M.TOP1: top1[name], EVALUATION: evaluation})
                if asha.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                    assert kind == "eval"
                    stopped[name] = evaluation
    assert stopped == {"bad": 4}


# --- shared jobs scheduled to fit (issue 24, item 1) -------------------------------------


def _data_parallel_plan(folder: Path):
    # fashion_mnist's shape: baseline and SP each on a worker group of 2 x 1 CPU.
    return _plan(
        folder,
        **{
            "resources": {"sp": {"workers": 2, "cpu": 1}, "trial": {"cpu": 1}},
            "max_concurrent_trials": 2,
            "baselines": {"act": {"tau": [0.1], "iterations": 2}},
        },
    )


def test_data_parallel_shared_jobs_start_only_when_their_worker_group_fits(tmp_path) -> None:
    plan = _data_parallel_plan(tmp_path)
    cpus = {"CPU": 2.0}
    searcher = JobSearcher(plan, 2, capacity=lambda: cpus)
    first = _drain(searcher)
    # Tune would start both (each trial reserves no CPU): 2 worker groups of 2 on 2 CPUs.
    assert [c["job"] for _, c in first] == [plan.shared_jobs[0].id]
    searcher.on_trial_complete(first[0][0], RESULT)
    second = _drain(searcher, "u")
    # The SP's group fits once the baseline's is gone; ACT (from the baseline) waits
    # behind it rather than take one of the CPUs it needs.
    assert [c["job"] for _, c in second] == [plan.shared_jobs[1].id]
    searcher.on_trial_complete(second[0][0], RESULT)
    # Then the trials use the CPUs: two at a time on 2 CPUs.
    assert len(_drain(searcher, "v")) == 2


def test_trials_use_what_the_worker_groups_leave(tmp_path) -> None:
    plan = _data_parallel_plan(tmp_path)
    searcher = JobSearcher(plan, None, capacity=lambda: {"CPU": 3.0})
    first = _drain(searcher)
    assert [c["job"] for _, c in first] == [plan.shared_jobs[0].id]  # 2 of 3 CPUs
    searcher.on_trial_complete(first[0][0], RESULT)
    sp, act = (c["job"] for _, c in _drain(searcher, "u"))
    # SP's group (2 CPUs) and ACT's trial (1 CPU) together fill the 3 CPUs.
    assert sp == plan.shared_jobs[1].id and plan.job(act).method == "act"


def test_a_worker_group_larger_than_the_cluster_waits_with_one_line(tmp_path, capsys) -> None:
    plan = _data_parallel_plan(tmp_path)
    cluster = {"CPU": 1.0}
    searcher = JobSearcher(plan, 2, capacity=lambda: cluster)
    assert _drain(searcher) == [] and _drain(searcher) == []
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"waiting: {plan.shared_jobs[0].id} needs 2 CPUs at once (its worker group), the "
        "cluster has 1; it starts when the cluster grows"
    ]
    cluster["CPU"] = 4.0  # a node joined: both groups fit
    searcher._seen = None  # (read again at once, not after the few seconds' cache)
    assert [c["job"] for _, c in _drain(searcher)] == [j.id for j in plan.shared_jobs]


# --- failed jobs are failed until they succeed (issue 24, item 3) ------------------------


def test_a_resumed_search_retries_errored_jobs_and_what_they_blocked(tmp_path) -> None:
    plan = _plan(tmp_path)
    searcher = JobSearcher(plan)
    first = dict((c["job"].split("-")[0], t) for t, c in _drain(searcher))
    searcher.on_trial_complete(first["baseline"], RESULT)
    searcher.on_trial_complete(first["sp"], error=True)  # e.g. the disk was full
    assert searcher.suggest("x") == Searcher.FINISHED and len(searcher.blocked()) == 4
    state = tmp_path / "searcher.json"
    searcher.save(str(state))
    resumed = JobSearcher(plan)
    resumed.restore(str(state))
    # Tune resumes the errored SP trial (resume_errored); the HRL jobs wait for it again.
    assert resumed.blocked() == {} and resumed.suggest("y") is None
    resumed.on_trial_complete(first["sp"], RESULT)
    assert len(_drain(resumed, "z")) == 4


def test_a_job_that_stopped_itself_stays_failed_on_resume(tmp_path) -> None:
    plan = _plan(tmp_path)
    searcher = JobSearcher(plan)
    first = dict((c["job"].split("-")[0], t) for t, c in _drain(searcher))
    searcher.on_trial_complete(first["baseline"], RESULT)
    searcher.on_trial_complete(first["sp"], {ERROR: "loss became nan at step 3"})
    _drain(searcher)
    state = tmp_path / "searcher.json"
    searcher.save(str(state))
    resumed = JobSearcher(plan)
    resumed.restore(str(state))
    assert resumed.suggest("y") == Searcher.FINISHED and len(resumed.blocked()) == 4


def test_a_rejected_start_trains_the_shared_job_again_then_the_job(tmp_path) -> None:
    plan = _plan(tmp_path)
    searcher = JobSearcher(plan)
    first = dict((c["job"].split("-")[0], t) for t, c in _drain(searcher))
    for trial in first.values():
        searcher.on_trial_complete(trial, RESULT)
    hrl = _drain(searcher, "u")
    sp = plan.shared_jobs[1].id
    searcher.on_trial_complete(hrl[0][0], {AGAIN: sp, STEP: 0})
    again = _drain(searcher, "v")
    # The SP first (in a trial folder of its own), the HRL job only once it is done.
    assert [c for _, c in again] == [{"job": sp, "attempt": 1}]
    searcher.on_trial_complete(again[0][0], RESULT)
    assert [c for _, c in _drain(searcher, "w")] == [{"job": hrl[0][1]["job"], "attempt": 1}]


def test_dry_run_says_how_many_worker_groups_run_at_once_and_in_which_order(tmp_path) -> None:
    from sweep_helpers import cli

    space = write_space(tmp_path, changes={"resources": {"sp": {"workers": 2, "cpu": 1}}})
    plan = make_plan(load_space(str(space)))
    code, out, _ = cli(["--space", str(space), "--dry-run", "--num-cpus", "3"])
    assert code == 0
    order = ", ".join(j.id for j in plan.shared_jobs)
    assert (
        f"  shared worker groups (2 workers x 1 CPU each): 1 at a time on 3 CPUs (--num-cpus), "
        f"in this order: {order}; the trials use what they leave"
    ) in out.splitlines()
