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
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep.plan import Plan
from skipnet_sweep.sweep.space import MAX_STEPS

PENDING, RUNNING, DONE, FAILED, BLOCKED = "pending", "running", "done", "failed", "blocked"
ERROR = "error"  # key of a trial's result when the stage stopped itself (e.g. NaN loss)
# Key of a trial's evaluation results: how many evaluations it has reported. ASHA's time is
# this count, not Tune's report count, which training logs between evaluations advance too.
EVALUATION = "evaluation"
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

    Args:
        plan: the sweep plan.
        max_concurrent: at most this many trials at once (None: as many as Tune starts).
    """

    def __init__(self, plan: Plan, max_concurrent: int | None = None):
        super().__init__()  # no metric: shared jobs report other things too
        self.plan = plan
        self.max_concurrent = max_concurrent
        self.status = {j.id: PENDING for j in plan.jobs}
        self.reasons: dict[str, str] = {}
        self.trial_job: dict[str, str] = {}  # Tune trial id -> job id
        self.samples: dict[str, int] = {}  # Tune trial id -> Optuna trial number
        self.told: set[str] = set()  # samples whose result Optuna has
        self.asked = 0
        self._study = None

    # --- state ---------------------------------------------------------------------------

    _STATE = ("status", "reasons", "trial_job", "samples", "told", "asked")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_study"] = None  # reopened from its storage
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
        for key in self._STATE:
            setattr(self, key, state[key])
        self.told = set(self.told)
        # A job that was running when the driver died is re-run by Tune's restore.

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

    # --- Tune's calls ------------------------------------------------------------------------

    def _running(self) -> int:
        jobs = sum(1 for s in self.status.values() if s == RUNNING)
        return jobs + sum(1 for t in self.samples if t not in self.told)

    def suggest(self, trial_id: str):
        if self.max_concurrent is not None and self._running() >= self.max_concurrent:
            return None
        waiting = False
        for job in self.plan.jobs:
            if self.status[job.id] != PENDING:
                continue
            need = self.status.get(job.needs) if job.needs else DONE
            if need == DONE:
                self.status[job.id] = RUNNING
                self.trial_job[trial_id] = job.id
                return {"job": job.id}
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
            config = self._ask()
            self.asked += 1
            self.samples[trial_id] = config["optuna_trial"]
            return config
        return None if waiting else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        failed = error or bool(result and ERROR in result)
        if trial_id in self.trial_job:
            job_id = self.trial_job[trial_id]
            self.status[job_id] = FAILED if failed else DONE
            if failed:
                self.reasons[job_id] = str((result or {}).get(ERROR) or "the trial errored")
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
