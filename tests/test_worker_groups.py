"""Data-parallel shared jobs scheduled to fit (issue 24, item 1) on a real local Ray instance
of 2 CPUs, started as the driver starts it (``start_ray``): the space of the issue (a
baseline and an SP of 2 workers x 1 CPU, SP from scratch, two trials at once). A
``TorchTrainer`` asks Ray for its workers from inside its trial, which reserves only a token
of memory, so Tune alone starts both shared jobs and one waits for the CPUs the other holds.
Here each shared job's trial holds, as its trainer would, a placement group of its workers'
bundles for a second (a ``TorchTrainer`` costs tens of seconds to start on 2 cores; a whole
data-parallel sweep is tests/test_cluster.py's); the Tuner is the sweep's: its searcher,
trial reservations and Tune settings. The jobs' start and end times, recorded inside the
trials, must not overlap."""

from __future__ import annotations

import sys
import time
from functools import partial

import pytest
from sweep_helpers import local_ray_env, patched_env, ray_tmpdir, write_space

from skipnet_sweep.sweep import Plan, load_space, make_plan
from skipnet_sweep.sweep.ray_start import _env_defaults, start_ray
from skipnet_sweep.sweep.searcher import JobSearch, JobSearcher
from skipnet_sweep.sweep.trials import trial_resources
from skipnet_sweep.sweep.tuner import tune_settings


def worker_group_stand_in(config: dict, plan) -> None:
    """A job's trial: a shared job holds its worker group's CPUs for a second, as its
    ``TorchTrainer`` would while it trains; a trial reports at once."""
    import ray
    from ray import tune
    from ray.util.placement_group import placement_group, remove_placement_group

    job = plan.job_of(config)
    started = time.time()
    if job.shared:
        res = plan.space.resources.sp
        group = placement_group([{"CPU": res.cpu}] * res.workers, strategy="PACK")
        ray.get(group.ready(), timeout=120)
        time.sleep(1.0)
        remove_placement_group(group)
    tune.report({"started": started, "ended": time.time(), "top1": 1.0, "final": 1})


@pytest.fixture(scope="module")
def timeline(tmp_path_factory) -> tuple[Plan, dict]:
    """The issue's space's plan, and job id -> (start, end) of each of its jobs, run by the
    sweep's Tuner."""
    from ray import cloudpickle, tune

    folder = tmp_path_factory.mktemp("groups")
    changes = {
        "alpha": [1.0],
        "resources": {"sp": {"workers": 2, "cpu": 1}, "trial": {"cpu": 1}},
        "max_concurrent_trials": 2,
    }
    plan = make_plan(load_space(str(write_space(folder, "groups", changes))))
    assert [j.needs for j in plan.shared_jobs] == [None, None]  # both may start at once
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import it
    with ray_tmpdir("skg") as ray_dir, patched_env(**local_ray_env(ray_dir)):
        import ray

        start_ray(plan, None, num_cpus=2)
        try:
            trainable = tune.with_resources(
                tune.with_parameters(worker_group_stand_in, plan=plan),
                partial(trial_resources, plan=plan),
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=JobSearch(JobSearcher(plan, plan.space.max_concurrent_trials)),
                    num_samples=-1,
                    reuse_actors=False,
                ),
                run_config=tune.RunConfig(storage_path=str(folder / "tune"), verbose=0),
            )
            with _env_defaults(tune_settings(plan)):
                grid = tuner.fit()
        finally:
            ray.shutdown()
    return plan, {r.config["job"]: (r.metrics["started"], r.metrics["ended"]) for r in grid}


def test_shared_jobs_whose_worker_groups_fill_the_cluster_run_one_at_a_time(timeline) -> None:
    plan, times = timeline
    assert set(times) == {j.id for j in plan.jobs}  # every job ran and finished
    first, second = sorted(times[j.id] for j in plan.shared_jobs)
    # The second started only once the first had ended (Tune alone starts both at once).
    assert second[0] >= first[1], times


def test_the_trial_starts_once_what_it_needs_has_ended(timeline) -> None:
    plan, times = timeline
    (trial,) = plan.trials
    assert times[trial.id][0] >= times[trial.needs][1], times
