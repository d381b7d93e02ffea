"""The sweep's Tune searcher: releases each job as soon as the job it starts from is done.

Every stage of a sweep is one Tune trial in one Tuner. ``JobSearcher`` hands Tune the grid
jobs in plan order, a job only once the shared job it needs (its SP checkpoint, its plain
baseline) has finished: the trials of a (backbone, gate) start while another backbone's SP
is still training, and a failed shared job blocks only the jobs that need it, with the
reason kept for the summary. An adaptive (Optuna) search follows once the shared jobs it
samples from are done; its study lives in an RDB file beside the sweep's state, so it
survives a restart and opens in ``optuna-dashboard``.

The searcher's state is saved with Tune's experiment state, so a restored sweep knows what
it already handed out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher, SearchGenerator

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep import ray_private
from skipnet_sweep.sweep.plan import Plan
from skipnet_sweep.sweep.space import MAX_STEPS

PENDING, RUNNING, DONE, FAILED, BLOCKED = "pending", "running", "done", "failed", "blocked"
ERROR = "error"  # key of a trial's result when the stage stopped itself (e.g. NaN loss)
# Key of a trial's evaluation results: how many evaluations it has reported. ASHA's time is
# this count, not Tune's report count, which training logs between evaluations advance too.
EVALUATION = "evaluation"
# Key of a trial's result when the cache entry it starts from was rejected (wrong or damaged)
# and set aside: the shared job that made it, which is trained again before this job reruns.
AGAIN = "again"
OBJECTIVES = ((M.TOP1, "maximize"), (M.FLOPS_MEAN, "minimize"))


def _sampler(name: str, seed: int):
    import optuna

    if name == "tpe":
        # constant_liar: concurrent TPE samples see running trials as bad, so they spread
        # out instead of piling on the same region.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


class JobSearcher(Searcher):
    """Tune searcher over a plan's jobs (see the module docstring).

    A data-parallel shared job's worker group is asked for inside its trial, where Tune
    cannot see it (Ray's Train/Tune guide: Tune does not account for the Train workers'
    resources; limit the trials that run at once). So when shared jobs are data-parallel,
    the searcher hands out a job only when it fits what the cluster holds beside the jobs
    already handed out (``footprint``), and a shared job that does not fit yet holds back
    the jobs after it (trials would otherwise take the CPUs it waits for). A job larger than
    the whole cluster (one that may grow) waits with a line saying what for.

    Args:
        plan: the sweep plan.
        max_concurrent: at most this many trials at once (None: as many as Tune starts).
        capacity: the cluster's {"CPU": n, "GPU": n} (default: ``ray.cluster_resources()``,
            read at most every few seconds).
    """

    def __init__(
        self,
        plan: Plan,
        max_concurrent: int | None = None,
        capacity: Callable[[], dict[str, float]] | None = None,
    ):
        super().__init__()  # no metric: shared jobs report other things too
        self.plan = plan
        self.max_concurrent = max_concurrent
        self.capacity = capacity
        self.status = {j.id: PENDING for j in plan.jobs}
        self.reasons: dict[str, str] = {}
        # Jobs whose trial errored (a full disk, a lost node, a killed process): a resumed
        # sweep runs them again (``restore``); a job that stopped itself (NaN loss) stays
        # failed, since it would fail the same way.
        self.errored: list[str] = []
        self.attempts: dict[str, int] = {}  # job id -> times it was sent back (``AGAIN``)
        self.trial_job: dict[str, str] = {}  # Tune trial id -> job id
        self.samples: dict[str, int] = {}  # Tune trial id -> Optuna trial number
        self.told: set[str] = set()  # samples whose result Optuna has
        self.asked = 0
        self._study = None

    # --- state ---------------------------------------------------------------------------

    _STATE = ("status", "reasons", "trial_job", "samples", "told", "asked", "errored", "attempts")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_study"] = None  # reopened from its storage
        state["capacity"] = None  # read from the cluster this driver joins
        state.pop("_seen", None)
        return state

    def save(self, checkpoint_path: str) -> None:
        # Plain JSON, not a pickle: restoring it can never run code.
        state = {k: getattr(self, k) for k in self._STATE}
        state["told"] = sorted(self.told)
        with open(checkpoint_path, "w") as f:
            json.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            state = json.load(f)
        for key in self._STATE:  # a state saved before a key existed: its empty value
            setattr(self, key, state.get(key, type(getattr(self, key))()))
        self.told = set(self.told)
        self.again()

    def again(self) -> None:
        """A resumed sweep: the jobs whose trial errored run again (Tune resumes their
        trials, ``resume_errored``), and the jobs they blocked wait for them once more. A job
        that was running when the driver died is re-run by Tune's restore."""
        for job_id in self.errored:
            if self.status.get(job_id) == FAILED:
                self.status[job_id] = RUNNING
                self.reasons.pop(job_id, None)
        self.errored = []
        for job_id, status in self.status.items():
            if status == BLOCKED:
                self.status[job_id] = PENDING
                self.reasons.pop(job_id, None)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    # --- the study -------------------------------------------------------------------------

    @property
    def study(self):
        if self._study is None:
            import optuna

            space = self.plan.space
            path = Path(self.plan.optuna_storage.removeprefix("sqlite:///")).parent
            path.mkdir(parents=True, exist_ok=True)
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self._study = optuna.create_study(
                storage=self.plan.optuna_storage,
                study_name=self.plan.optuna_study_name,
                directions=[d for _, d in OBJECTIVES],
                sampler=_sampler(space.search.sampler, space.seed),
                load_if_exists=True,
            )
        return self._study

    def _ask(self) -> dict:
        method, axes = self.plan.adaptive
        trial = self.study.ask()
        sample = {}
        for name, spec in axes.items():
            if spec[0] == "categorical":
                sample[name] = trial.suggest_categorical(name, spec[1])
            else:
                sample[name] = trial.suggest_float(name, spec[1], spec[2], log=spec[3])
        return {"method": method.name, "sample": sample, "optuna_trial": trial.number}

    def _running(self) -> int:
        jobs = sum(1 for s in self.status.values() if s == RUNNING)
        return jobs + sum(1 for t in self.samples if t not in self.told)

    # --- what jobs hold ----------------------------------------------------------------------

    def footprint(self, job) -> dict[str, float]:
        """What a job holds while it runs: a data-parallel shared job its worker group
        (its trial reserves nothing), any other job its trial's reservation."""
        res = self.plan.space.resources
        if job is not None and job.shared and res.sp.data_parallel:
            return {"CPU": res.sp.workers * res.sp.cpu, "GPU": res.sp.workers * res.sp.gpu}
        one = res.sp if job is not None and job.shared else res.trial
        return {"CPU": one.cpu, "GPU": one.gpu}

    def _held(self) -> dict[str, float]:
        held = {"CPU": 0.0, "GPU": 0.0}
        running = [self.plan.job(j) for j, s in self.status.items() if s == RUNNING]
        running += [None for t in self.samples if t not in self.told]  # Optuna's: trials
        for job in running:
            for unit, amount in self.footprint(job).items():
                held[unit] += amount
        return held

    def _total(self) -> dict[str, float]:
        now = time.monotonic()
        seen = getattr(self, "_seen", None)
        if seen is None or now - seen[0] > 5:
            if self.capacity is not None:
                total = self.capacity()
            else:
                import ray

                total = ray.cluster_resources()
            self._seen = seen = (now, {u: float(total.get(u, 0)) for u in ("CPU", "GPU")})
        return seen[1]

    def _fits(self, job) -> bool:
        """Whether ``job`` fits beside the jobs handed out (always, unless shared jobs are
        data-parallel: then Tune sees every reservation itself). A job larger than the whole
        cluster gets one line saying what it waits for."""
        if not self.plan.space.resources.sp.data_parallel:
            return True
        total, held, need = self._total(), self._held(), self.footprint(job)
        if all(held[u] + need[u] <= total[u] + 1e-9 for u in need):
            return True
        short = [u for u in need if need[u] > total[u] + 1e-9]
        said = self.__dict__.setdefault("_said", set())
        name = job.id if job is not None else "an adaptive trial"
        if short and name not in said:
            said.add(name)
            what = " and ".join(f"{need[u]:g} {u}s" for u in short)
            have = " and ".join(f"{total[u]:g}" for u in short)
            print(
                f"waiting: {name} needs {what} at once (its worker group), the cluster has "
                f"{have}; it starts when the cluster grows",
                flush=True,
            )
        return False

    # --- Tune's calls ------------------------------------------------------------------------

    def suggest(self, trial_id: str):
        if self.max_concurrent is not None and self._running() >= self.max_concurrent:
            return None
        waiting = False
        for job in self.plan.jobs:
            if self.status[job.id] != PENDING:
                continue
            need = self.status.get(job.needs) if job.needs else DONE
            if need == DONE:
                if not self._fits(job):
                    if job.shared:
                        return None  # the jobs after it wait too: they need its CPUs
                    waiting = True
                    continue
                self.status[job.id] = RUNNING
                self.trial_job[trial_id] = job.id
                attempt = self.attempts.get(job.id)
                # A job run again gets a trial folder of its own.
                return {"job": job.id, **({"attempt": attempt} if attempt else {})}
            if need in (FAILED, BLOCKED):
                self.status[job.id] = BLOCKED
                self.reasons[job.id] = f"needs {job.needs}, which failed"
            else:
                waiting = True
        if self.plan.adaptive is not None and self.asked < self.plan.space.search.num_samples:
            shared = [self.status[j.id] for j in self.plan.shared_jobs]
            if any(s in (PENDING, RUNNING) for s in shared):
                return None
            if any(s != DONE for s in shared):
                self.asked = self.plan.space.search.num_samples  # nothing to sample from
                self.reasons["optuna"] = "a pre-training job it samples from failed"
                return Searcher.FINISHED if not waiting else None
            if not self._fits(None):
                return None
            config = self._ask()
            self.asked += 1
            self.samples[trial_id] = config["optuna_trial"]
            return config
        return None if waiting else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        failed = error or bool(result and ERROR in result)
        if trial_id in self.trial_job:
            job_id = self.trial_job[trial_id]
            needed = (result or {}).get(AGAIN) if not error else None
            if needed:
                # What it starts from was set aside: trained again first, then this job.
                for again in (needed, job_id):
                    if again == job_id or self.status.get(again) == DONE:
                        self.status[again] = PENDING
                        self.attempts[again] = self.attempts.get(again, 0) + 1
                return
            self.status[job_id] = FAILED if failed else DONE
            if failed:
                self.reasons[job_id] = str((result or {}).get(ERROR) or "the trial errored")
            if error and job_id not in self.errored:
                self.errored.append(job_id)
        elif trial_id in self.samples and trial_id not in self.told:
            import optuna

            number = self.samples[trial_id]
            values = [(result or {}).get(k) for k, _ in OBJECTIVES]
            if failed or any(v is None for v in values):
                # A failed or diverged trial is a failure to Optuna, not a (0 %, 1e18) point.
                self.study.tell(number, state=optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(number, values)
            self.told.add(trial_id)

    def blocked(self) -> dict[str, str]:
        """Jobs that never ran because what they need failed, with the reason."""
        return {j: self.reasons[j] for j, s in self.status.items() if s == BLOCKED}


class JobSearch(SearchGenerator):
    """Tune's wrapper of a searcher, whose restored state is never finished: a resumed sweep
    asks ``JobSearcher`` again, which hands out the jobs it retries (``JobSearcher.again``)."""

    def set_state(self, state: dict) -> None:
        super().set_state(ray_private.reopened(state))


class SharedAwareASHA(ASHAScheduler):
    """ASHA early stopping on top-1 for the trials; a shared pre-training job is never
    stopped early (every trial that needs it would lose its start).

    Args:
        plan: the sweep plan (tells shared jobs apart).
        **kwargs: ``ASHAScheduler``'s.
    """

    def __init__(self, plan: Plan, **kwargs):
        # Ray's max_t (100 reports by default) stops every trial at that report, whatever is
        # left of its schedule: a 10k-step HRL run evaluated every 50 steps would end half
        # trained. A trial here ends with its schedule; the rungs (grace_period x
        # reduction_factor^k) go on past 100. A resumed sweep keeps the scheduler Tune saved.
        kwargs.setdefault("max_t", MAX_STEPS)
        super().__init__(**kwargs)
        self._shared = {j.id for j in plan.shared_jobs}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if trial.config.get("job") in self._shared:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, self._timed(result))

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, self._timed(result))

    def _timed(self, result: dict) -> dict:
        """``result`` with ASHA's time set to its evaluation count (a result without one, from
        a sweep saved before evaluations were counted, keeps its report count)."""
        if EVALUATION not in result:
            return result
        return {**result, self._time_attr: result[EVALUATION]}
