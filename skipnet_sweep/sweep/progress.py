"""What the terminal shows while a sweep runs: a line at once saying what runs first, a line
per evaluation inside a job (and at least one a minute while it trains) with its images/s and
the time it has left, one line per finished or failed job with its top-1, MACs and time, and
an estimate of what the sweep has left. Ray's own output goes to a log file (``-v`` shows it
live instead)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep.plan import Plan
from skipnet_sweep.sweep.report_keys import CACHED, STEP, TOTAL_STEPS
from skipnet_sweep.sweep.searcher import AGAIN, ERROR
from skipnet_sweep.sweep.trial_errors import error_line

# A job that trains without evaluating says where it is at least this often (seconds).
LINE_EVERY = 60.0


def _tune_callback_base():
    from ray.tune import Callback

    return Callback


def duration(seconds: float) -> str:
    """``1h02m``, ``3m05s``, ``42s``: short and fixed in form."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def job_label(plan: Plan, config: dict) -> tuple[str, str]:
    """(stage, what distinguishes the job: gate, variant and cost weight) of a trial."""
    job = plan.job_of(config)
    parts = []
    if job.config.model.gate and job.config.model.gate != job.config.train.phase:
        parts.append(job.config.model.gate)
    variant = job.coord("variant")
    if variant and variant != "hrl+sp":
        parts.append(variant)
    if len(plan.space.backbones) > 1:
        parts.insert(0, job.backbone)
    if job.cost_weight is not None:
        parts.append(f"{job.cost_weight}={job.cost_weight_value:g}")
    return job.config.train.phase, "  ".join(parts)


def result_line(result: dict, selection_set: str = M.SELECTION_TEST) -> str:
    """``val top-1 86.7 %  21.90 M MACs (70.7 %)`` from a job's final metrics, its accuracy
    named by the set it was measured on (``selection_set``)."""
    if M.TOP1 not in result or M.FLOPS_MEAN not in result:
        return ""
    macs = result[M.FLOPS_MEAN]
    text = f"{M.accuracy_label(selection_set)} {result[M.TOP1]:5.1f} %  {macs / 1e6:6.2f} M MACs"
    plain = result.get(M.FLOPS_PLAIN)
    if plain:
        text += f" ({100 * macs / plain:5.1f} %)"
    return text


def opening_line(plan: Plan) -> str:
    """What the sweep runs and what runs first, said before Ray starts: ``7 jobs (1
    baseline, 1 sp, 2 hrl, ...); first: baseline cifar_resnet20, which 5 others start
    from``."""
    counts = Counter(j.config.train.phase for j in plan.jobs)
    parts = [f"{n} {stage}" for stage, n in counts.items()]
    if plan.adaptive is not None:
        parts.append(f"{plan.space.search.num_samples} sampled by Optuna")
    total = len(plan.jobs) + (plan.space.search.num_samples if plan.adaptive else 0)
    ready = [j for j in plan.jobs if j.needs is None][: plan.space.max_concurrent_trials or None]
    first = []
    for job in ready:
        stage, what = job_label(plan, {"job": job.id})
        waiting = sum(1 for j in plan.jobs if j.needs == job.id)
        tail = ""
        if waiting:
            tail = f", which {waiting} other{'s start' if waiting > 1 else ' starts'} from"
        first.append(f"{stage} {what or job.backbone}{tail}")
    return f"{total} jobs ({', '.join(parts)}); runs first: {'; '.join(first) or 'sampled jobs'}"


def _job_key(trial) -> str:
    """The job a trial runs: a job run again (after an error, or once the start it needs is
    trained again) is one job whatever its trials; an adaptive sample is a job of its own."""
    return trial.config.get("job") or trial.trial_id


@dataclass
class _Running:
    """A trial this driver has seen report: where it is and when it said so."""

    work: float  # the job's share of the sweep (``Plan.work``)
    said: float  # when its last line was printed (monotonic seconds)
    job: str = ""  # the job it runs (``_job_key``)
    first: tuple[float, int] | None = None  # (time, step) of its first report
    before: float = 0.0  # fraction of its steps trained before its first report
    done: float = 0.0  # fraction of its steps trained since


class ProgressCallback(_tune_callback_base()):
    """Prints the sweep's progress (see the module docstring).

    The estimate of what is left weighs jobs by their work (``Plan.work``: a shared job of
    hours is not one job among many short trials), counts the steps of the jobs still
    running, and extrapolates the time this driver has spent on the work it did: what
    finished before it (a resumed sweep), the steps a resumed job had trained and a cached
    job's are done but took it no time.

    Args:
        plan: the sweep plan (its job count is the total; an adaptive search adds its
            samples).
        out: where to print (stdout).
    """

    def __init__(self, plan: Plan, out=None):
        self.plan = plan
        self.out = out
        samples = plan.space.search.num_samples if plan.adaptive else 0
        self.total = len(plan.jobs) + samples
        self._start = time.monotonic()
        self._finished: set[str] = set()  # jobs (``_job_key``) that finished
        self._failed: set[str] = set()  # jobs whose last trial failed
        self._looked = False  # whether the trials of an earlier driver were counted
        self._restored_work = 0.0
        self._done_work = 0.0
        self._running: dict[str, _Running] = {}
        self._slots = 1  # the most jobs seen running at once: how many the sweep runs in parallel
        work = {j.id: plan.work(j) for j in plan.jobs}
        if plan.adaptive is not None:
            method, axes = plan.adaptive
            # Every sample trains as long; the first value of each axis stands for all.
            sample = {k: v[1][0] if v[0] == "categorical" else v[1] for k, v in axes.items()}
            work["sample"] = plan.work(plan.sampled_job(method.name, sample))
        # Where a dataset's size is unknown every job weighs the same.
        self._work = work if all(v is not None for v in work.values()) else dict.fromkeys(work, 1.0)
        self._total_work = sum(v for k, v in self._work.items() if k != "sample")
        self._total_work += samples * self._work.get("sample", 0.0)

    def __getstate__(self) -> dict:
        return {"plan": self.plan}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["plan"])

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def _work_of(self, config: dict) -> float:
        return self._work.get(config.get("job") or "sample", 0.0)

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self._start = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info):
        if not self._looked:
            self._looked = True
            self._count_earlier(trials)
        run = _Running(self._work_of(trial.config), time.monotonic(), _job_key(trial))
        self._running[trial.trial_id] = run
        # Bounded by the space's limit: a trial may start before the one it replaces ends.
        cap = self.plan.space.max_concurrent_trials or len(self._running)
        self._slots = max(self._slots, min(len(self._running), cap))

    def _count_earlier(self, trials) -> None:
        """A resumed sweep: the jobs that finished before this driver are done, those that
        stopped themselves (a NaN loss) stay failed. Tune resumes errored trials (their
        status is no longer ERROR here): they count when they finish."""
        for t in trials:
            result = t.last_result or {}
            if t.status != "TERMINATED" or AGAIN in result:
                continue
            if ERROR in result:
                self._failed.add(_job_key(t))
            elif _job_key(t) not in self._finished:
                self._finished.add(_job_key(t))
                self._restored_work += self._work_of(t.config)

    def _eta(self) -> str:
        """The sweep's time left: the work left at the rate of the work done by this driver
        so far (the trained part of running jobs included), run as many jobs at once as it
        has run: the rest of the running jobs, then the jobs not started, each on the first
        free slot, so a last job that runs alone counts at one slot's rate."""
        done = self._done_work + sum(r.work * r.done for r in self._running.values())
        left = self._total_work - self._restored_work - done
        if done <= 0 or left <= 0:
            return ""
        per_slot = done / max(time.monotonic() - self._start, 1e-9) / self._slots
        if self.plan.adaptive is not None:  # samples not yet drawn: no list to place
            return f"  sweep ETA {duration(left / (per_slot * self._slots))}"
        slots = [r.work * max(0.0, 1.0 - r.before - r.done) for r in self._running.values()]
        slots += [0.0] * max(0, self._slots - len(slots))
        started = {r.job for r in self._running.values()} | self._finished | self._failed
        for job, work in self._work.items():
            if job not in started:
                slots[slots.index(min(slots))] += work
        return f"  sweep ETA {duration(max(slots) / per_slot)}"

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run = self._running.get(trial.trial_id)
        step, total = result.get(STEP), result.get(TOTAL_STEPS)
        if run is None or step is None or not total or ERROR in result or result.get("final"):
            return
        now = time.monotonic()
        if run.first is None:
            run.first, run.before = (now, step), min(1.0, step / total)
        run.done = min(1.0, step / total) - run.before
        evaluation = M.TOP1 in result
        # The last evaluation's line is the job's own, when it ends.
        if step >= total or (not evaluation and now - run.said < LINE_EVERY):
            return
        run.said = now
        stage, what = job_label(self.plan, trial.config)
        parts = [f"step {step}/{total} ({100 * step // total} %)"]
        if evaluation:
            accuracy = M.accuracy_label(self.plan.data.selection_set)
            parts.append(f"{accuracy} {result[M.TOP1]:.1f} %")
        elif M.TRAIN_LOSS in result:
            parts.append(f"train loss {result[M.TRAIN_LOSS]:.3f}")
        if result.get(M.IMAGES_PER_S):
            parts.append(f"{result[M.IMAGES_PER_S]:,.0f} images/s")
        since, first_step = run.first
        if step > first_step:
            left = (now - since) / (step - first_step) * (total - step)
            parts.append(f"job ETA {duration(left)}")
        width = len(str(self.total))
        self._print(f" {' ' * (2 * width + 2)} {stage:<8} {what:<22} {'  '.join(parts)}")

    def _line(self, trial, status: str) -> None:
        key = _job_key(trial)
        if status == "ok":
            self._finished.add(key)
            self._failed.discard(key)
        else:
            self._finished.discard(key)
            self._failed.add(key)
        result = trial.last_result or {}
        run = self._running.pop(trial.trial_id, None)
        work = run.work if run is not None else self._work_of(trial.config)
        before = 1.0 if result.get(CACHED) else run.before if run is not None else 0.0
        self._restored_work += work * before
        self._done_work += work * (1.0 - before)
        done = len(self._finished)
        stage, what = job_label(self.plan, trial.config)
        took = duration(result.get("time_total_s", 0.0))
        eta = self._eta() if self.total - done > 0 else ""
        body = result_line(result, self.plan.data.selection_set) if status == "ok" else status
        if result.get(CACHED):
            body += "  (cached)"
        if result.get("cache_rejected"):
            self._print(f"   cache entry not reused: {str(result['cache_rejected'])[:200]}")
        width = len(str(self.total))
        count = f"{done:>{width}}/{self.total}"
        if self._failed:
            count += f", {len(self._failed)} failed"
        self._print(f"[{count}] {stage:<8} {what:<22} {body}  {took}{eta}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if AGAIN in result:  # not done: it runs again once what it needs is trained again
            self._running.pop(trial.trial_id, None)
            self._finished.discard(str(result[AGAIN]))  # trained again: done once it is
            stage, what = job_label(self.plan, trial.config)
            self._print(f"   {stage} {what}: waits: {str(result.get('cache_rejected'))[:200]}")
            return
        if ERROR in result:
            self._line(trial, f"FAILED: {str(result[ERROR])[:80]}")
        else:
            self._line(trial, "ok")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, f"FAILED: {error_line(trial)[:80]}")
