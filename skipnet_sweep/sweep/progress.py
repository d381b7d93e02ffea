"""What the terminal shows while a sweep runs: a header when a stage first starts, one line
per finished or failed job with its top-1, MACs and time, and an estimate of what is left.
Ray's own output goes to a log file (``-v`` shows it live instead)."""

from __future__ import annotations

import sys
import time

from skipnet_sweep import metrics as M
from skipnet_sweep.sweep.plan import Plan
from skipnet_sweep.sweep.searcher import ERROR


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
    if job.stage.model.gate and job.stage.model.gate != job.stage.train.stage:
        parts.append(job.stage.model.gate)
    variant = job.coord("variant")
    if variant and variant != "hrl+sp":
        parts.append(variant)
    if len(plan.space.backbones) > 1:
        parts.insert(0, job.backbone)
    if job.weight is not None:
        parts.append(f"{job.weight}={job.weight_value:g}")
    return job.stage.train.stage, "  ".join(parts)


def result_line(result: dict) -> str:
    """``top-1 86.7 %  21.9 M MACs (70.7 %)`` from a job's final metrics."""
    if M.TOP1 not in result or M.FLOPS_MEAN not in result:
        return ""
    macs = result[M.FLOPS_MEAN]
    text = f"top-1 {result[M.TOP1]:5.1f} %  {macs / 1e6:6.2f} M MACs"
    plain = result.get(M.FLOPS_PLAIN)
    if plain:
        text += f" ({100 * macs / plain:5.1f} %)"
    return text


class ProgressCallback(_tune_callback_base()):
    """Prints the sweep's progress (see the module docstring).

    Args:
        plan: the sweep plan (its job count is the total; an adaptive search adds its
            samples).
        out: where to print (stdout).
    """

    def __init__(self, plan: Plan, out=None):
        self.plan = plan
        self.out = out
        self.total = len(plan.jobs) + (plan.space.search.num_samples if plan.adaptive else 0)
        self._start = time.monotonic()
        self._done: set[str] = set()
        self._seen_stages: set[str] = set()
        self._restored = 0

    def __getstate__(self) -> dict:
        return {"plan": self.plan}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["plan"])

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self._start = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info):
        if not self._done and not self._restored:
            # A resumed sweep: what finished before this driver counts as done.
            self._restored = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
        stage, _ = job_label(self.plan, trial.config)
        if stage not in self._seen_stages:
            self._seen_stages.add(stage)
            count = sum(1 for j in self.plan.jobs if j.stage.train.stage == stage)
            self._print(f"-- {stage} ({count or 'sampled'} job{'s' if count != 1 else ''})")

    def _line(self, trial, status: str) -> None:
        self._done.add(trial.trial_id)
        done = len(self._done) + self._restored
        stage, what = job_label(self.plan, trial.config)
        result = trial.last_result or {}
        took = duration(result.get("time_total_s", 0.0))
        elapsed = time.monotonic() - self._start
        left = self.total - done
        eta = f"  ETA {duration(elapsed / len(self._done) * left)}" if left > 0 else ""
        body = result_line(result) if status == "ok" else status
        if result.get("cached"):
            body += "  (cached)"
        if result.get("cache_rejected"):
            self._print(f"   cache entry not reused: {str(result['cache_rejected'])[:200]}")
        width = len(str(self.total))
        self._print(f"[{done:>{width}}/{self.total}] {stage:<8} {what:<22} {body}  {took}{eta}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if ERROR in result:
            self._line(trial, f"FAILED: {str(result[ERROR])[:80]}")
        else:
            self._line(trial, "ok")

    def on_trial_error(self, iteration, trials, trial, **info):
        err = trial.get_error()
        msg = str(err).strip().splitlines()[-1] if err else "the trial errored"
        self._line(trial, f"FAILED: {msg[:80]}")
