"""From a validated space to a plan: every job of every method, in the order they can run.

Data flows one way: ``Space`` -> ``Plan`` (the registered methods expand the space into
jobs) -> Tune trials (data-parallel shared pre-training jobs on Ray Train, the rest one
process each) -> MLflow. Everything here is plain data (no Ray), so ``--dry-run`` and the
tests can inspect a plan, and the plan travels to the Ray workers with the methods it uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from skipnet_sweep.data import val_count
from skipnet_sweep.methods import Job, Method, PlanContext, get_method, list_methods, short_hash
from skipnet_sweep.stages.config import DataConfig, StageConfig
from skipnet_sweep.stages.loop import total_steps
from skipnet_sweep.sweep.space import Space, split_sizes, training_images
from skipnet_sweep.sweep.storage import Storage

MODEL_FILE = "model.pt"
# An evaluated image costs about a third of a trained one (one forward pass against a forward
# and a backward): how a job's evaluations weigh in its share of a sweep's work (``Plan.work``).
EVAL_COST = 1 / 3
# The Optuna study's port in the printed command: optuna-dashboard's default, apart from
# MLflow's 5000 and Ray's dashboard's 8265.
OPTUNA_DASHBOARD_PORT = 8080


@dataclass(frozen=True)
class Plan:
    """What a sweep will run.

    Attributes:
        space: the validated space.
        sweep_id: stable id of this sweep (space name + hash of what it computes): a re-run
            of the same space resumes it; a changed space is a new sweep (shared jobs are
            still reused through their cache keys).
        jobs: every grid job, shared pre-training jobs first, each after the job it needs.
        methods: the methods the space uses (shipped to the workers with the plan, so a
            plugin method needs no installation on the nodes).
    """

    space: Space
    sweep_id: str
    jobs: tuple[Job, ...]
    methods: tuple[Method, ...]

    @property
    def store(self) -> Storage:
        """The sweep's storage (a folder or a URI)."""
        return Storage(self.space.storage_path)

    @property
    def storage(self) -> Path | str:
        """The storage root: a ``Path`` when local, else its URI."""
        return self.store.path()

    @property
    def data(self) -> DataConfig:
        return self.space.dataset.to_data_config()

    @property
    def shared_jobs(self) -> tuple[Job, ...]:
        return tuple(j for j in self.jobs if j.shared)

    @property
    def trials(self) -> tuple[Job, ...]:
        return tuple(j for j in self.jobs if not j.shared)

    def job(self, job_id: str) -> Job:
        for job in self.jobs:
            if job.id == job_id:
                return job
        raise KeyError(f"no job {job_id!r} in sweep {self.sweep_id}")

    def method(self, name: str) -> Method:
        for m in self.methods:
            if m.name == name:
                return m
        return get_method(name)

    @property
    def optuna_storage(self) -> str:
        """The RDB URL of the sweep's Optuna study: a SQLite file beside the sweep's state
        (on the driver's machine when the storage is object storage), so it survives a
        restart and ``optuna-dashboard`` opens it."""
        folder = self.store.local_dir(self.sweep_id) / "optuna"
        return f"sqlite:///{folder / f'{self.sweep_id}.db'}"

    @property
    def optuna_study_name(self) -> str:
        return f"{self.sweep_id}-optuna"

    def optuna_lines(self) -> list[str]:
        """Where the Optuna study is and the command that opens it (none without an adaptive
        search)."""
        if self.adaptive is None:
            return []
        path = self.optuna_storage.removeprefix("sqlite:///")
        return [
            f"Optuna study {self.optuna_study_name!r}: {path}",
            f"  browse: optuna-dashboard {self.optuna_storage} --port {OPTUNA_DASHBOARD_PORT}"
            f" (then http://127.0.0.1:{OPTUNA_DASHBOARD_PORT})",
        ]

    def checkpoint(self, job: Job, storage: str | Path | None = None) -> Path | str:
        """Where the cached final weights of a shared job live (in the sweep's storage, or
        in ``storage``): a ``Path``, or a URI on object storage."""
        store = Storage(storage) if storage is not None else self.store
        return store.path("cache", job.config.train.phase, job.key, MODEL_FILE)

    def steps(self, job: Job) -> int | None:
        """Optimiser steps of a job; None for one given in epochs of a dataset whose size is
        not known here."""
        t = job.config.train
        if t.iterations is not None:
            return t.iterations
        images = training_images(self.space.dataset)
        if images is None:
            return None
        return total_steps(t, images // t.batch_size // t.accum_steps)

    def work(self, job: Job) -> float | None:
        """How much computing a job is, in trained images: the images its steps train on,
        plus ``EVAL_COST`` of each image it evaluates (the selection set at every evaluation,
        the test set once more at the end when they differ). What the sweep's progress
        weighs jobs by; None where the dataset's size is not known here."""
        steps, sizes = self.steps(job), split_sizes(self.space.dataset)
        if steps is None or sizes is None:
            return None
        t, d = job.config.train, self.space.dataset
        test = sizes[1] if d.test_subset is None else min(sizes[1], d.test_subset)
        split = self.data.val_split
        train = sizes[0] if d.train_subset is None else min(sizes[0], d.train_subset)
        selection = test if split is None else val_count(split, train)
        per_epoch = max(1, (training_images(d) or 0) // t.batch_size // t.accum_steps)
        evaluations = math.ceil(steps / (t.eval_every or per_epoch))
        evaluated = evaluations * selection + (0 if split is None else test)
        return steps * t.batch_size * t.accum_steps + EVAL_COST * evaluated

    def find(self, phase: str, backbone: str, gate: str | None = None) -> Job:
        """The shared job of ``phase`` (``sp``, ``baseline``) on a backbone (and gate)."""
        for job in self.shared_jobs:
            if _lookup(job) == (phase, backbone) + ((gate,) if gate else ()):
                return job
        raise KeyError(f"no {phase} job for {backbone}/{gate}")

    def config_of(self, job: Job) -> StageConfig:
        """The stage a job runs: its own config, starting from the cached weights of the job
        it needs."""
        if job.needs is None:
            return job.config
        return replace(job.config, init=str(self.checkpoint(self.job(job.needs))))

    @property
    def adaptive(self) -> tuple[Method, dict] | None:
        """The method searched adaptively (Optuna) and its search space, if any."""
        for m in self.methods:
            space = m.search_space(self.space)
            if space:
                return m, space
        return None

    def sampled_job(self, method: str, sample: dict) -> Job:
        """The job of one adaptive-search sample."""
        ctx = PlanContext(self.space, self.sweep_id, {_lookup(j): j for j in self.shared_jobs})
        return self.method(method).sampled_job(ctx, sample)

    def job_of(self, config: dict) -> Job:
        """The job of a Tune trial's config (a grid job's id, or a sample)."""
        if config.get("job"):
            return self.job(config["job"])
        return self.sampled_job(config["method"], config["sample"])

    def describe(self) -> str:
        """The plan as a person reads it (``--dry-run``)."""
        s = self.space
        res = s.resources
        lines = [
            f"sweep {self.sweep_id} from {s.source}",
            f"  data: {s.dataset.name} (root: {s.dataset.root or 'default'})",
            f"  storage: {self.storage}",
            f"  methods: {', '.join(m.name for m in self.methods)}",
            f"  shared pre-training jobs ({len(self.shared_jobs)}), each on {res.sp.workers} "
            f"worker(s) x {res.sp.cpu:g} CPU, {res.sp.gpu:g} GPU:",
        ]
        for job in self.shared_jobs:
            cached = " [cached]" if self.store.is_file(self.checkpoint(job)) else ""
            lines.append(f"    {job.id}{cached}")
        adaptive = self.adaptive
        if adaptive is not None:
            method, space = adaptive
            axes = ", ".join(f"{k} {_axis(v)}" for k, v in space.items())
            lines.append(
                f"  {method.label} trials: {s.search.num_samples} Optuna samples "
                f"({s.search.sampler}) over {axes}"
            )
            lines += [f"    {line}" for line in self.optuna_lines()]
        lines.append(
            f"  grid trials ({len(self.trials)}), each {res.trial.cpu:g} CPU, "
            f"{res.trial.gpu:g} GPU, at most {s.max_concurrent_trials or 'unlimited'} at once:"
        )
        for job in self.trials:
            lines.append(f"    {job.id}")
        return "\n".join(lines)


def _axis(spec: tuple) -> str:
    if spec[0] == "categorical":
        return str(list(spec[1]))
    return f"{'log' if spec[3] else ''}uniform[{spec[1]:g}, {spec[2]:g}]"


def _lookup(job: Job) -> tuple:
    """The key a method finds a shared job by (``("sp", arch, gate)``, ``("baseline", arch)``)."""
    gate = job.config.model.gate
    return (job.config.train.phase, job.backbone) + ((gate,) if gate else ())


def make_plan(space: Space) -> Plan:
    """Expand a space into its jobs: every registered method the space uses adds its own.

    Raises:
        SpaceError: a combination the methods or their phases refuse.
    """
    sweep_id = f"{space.name}-{short_hash(space.identity())}"
    ctx = PlanContext(space, sweep_id)
    methods = tuple(get_method(n) for n in list_methods() if get_method(n).enabled(space))
    jobs: dict[str, Job] = {}
    for method in methods:
        method.validate(space)
        for job in method.jobs(ctx):
            jobs.setdefault(job.id, job)
    ordered = [j for j in jobs.values() if j.shared] + [j for j in jobs.values() if not j.shared]
    # Every job is timed the space's way (not part of any key: it does not change training).
    timed = [replace(j, config=replace(j.config, latency=space.latency)) for j in ordered]
    return Plan(space, sweep_id, tuple(timed), methods)
