"""What a plan costs on a cluster (``run --dry-run``): GPU-hours, the most GPUs and CPUs it
holds at once, and its wall time at a cluster size, from each job's work (``Plan.work``: the
images it trains on, plus a third of those it evaluates) over its backbone's training
throughput in the bundled table ``throughput.csv``. Each row of that table says whether its
figure is published, measured or an estimate, and where it comes from; the printout says so
too. A shared job on several GPUs is assumed to scale linearly (NVIDIA's ResNet-50 reached
7.72x on 8 A100s, the table's source), and the wall time replays the plan's order: a job
starts once the job it starts from is done, the GPUs and CPUs it reserves are free and fewer
than ``max_concurrent_trials`` jobs run.
"""

from __future__ import annotations

import csv
import heapq
import io
import math
from dataclasses import dataclass
from importlib.resources import files

from skipnet_sweep.methods import Job
from skipnet_sweep.sweep.plan import Plan

THROUGHPUT_FILE = "throughput.csv"
GPU_DEVICE = "A100"  # the GPU the table's GPU rows are for
CPU_DEVICE = "cpu"  # a job without a GPU: images/s of one job on 2 threads


@dataclass(frozen=True)
class Throughput:
    """Training images per second of one backbone on one device (one GPU, or one job on
    2 CPU threads), with what the figure is (``published``, ``measured``, ``estimate``) and
    its source."""

    backbone: str
    device: str
    images_per_s: float
    basis: str
    source: str

    def describe(self) -> str:
        unit = "per GPU" if self.device != CPU_DEVICE else "per job on 2 CPU threads"
        return (
            f"{self.backbone} {self.images_per_s:,.0f} images/s {unit} on {self.device} "
            f"({self.basis}: {self.source})"
        )


def load_throughput() -> dict[tuple[str, str], Throughput]:
    """The bundled table, by (backbone, device)."""
    text = files("skipnet_sweep.sweep").joinpath(THROUGHPUT_FILE).read_text()
    return {
        (row["backbone"], row["device"]): Throughput(
            row["backbone"],
            row["device"],
            float(row["images_per_s"]),
            row["basis"],
            row["source"],
        )
        for row in csv.DictReader(io.StringIO(text))
    }


@dataclass(frozen=True)
class JobCost:
    """One job's reservation and its time.

    Attributes:
        job: the job.
        cpus, gpus: what it reserves (all its workers together).
        seconds: its time alone; None where it cannot be estimated (``why``).
        rate: the throughput figure used.
    """

    job: Job
    cpus: float
    gpus: float
    seconds: float | None
    rate: Throughput | None = None
    why: str = ""


def job_resources(plan: Plan, job: Job) -> tuple[float, float]:
    """(CPUs, GPUs) a job reserves: a shared job's worker group, or one trial."""
    res = plan.space.resources
    if job.shared:
        return res.sp.workers * res.sp.cpu, res.sp.workers * res.sp.gpu
    return res.trial.cpu, res.trial.gpu


def plan_jobs(plan: Plan) -> list[Job]:
    """Every job the plan runs: the grid's, then an adaptive search's samples (each as long
    as the first value of each axis makes it)."""
    jobs = list(plan.jobs)
    if plan.adaptive is not None:
        method, axes = plan.adaptive
        sample = {k: v[1][0] if v[0] == "categorical" else v[1] for k, v in axes.items()}
        jobs += [plan.sampled_job(method.name, sample)] * plan.space.search.num_samples
    return jobs


def job_costs(plan: Plan, table: dict[tuple[str, str], Throughput] | None = None) -> list[JobCost]:
    """Each job's reservation and time alone (``seconds`` None where not known)."""
    table = load_throughput() if table is None else table
    out = []
    for job in plan_jobs(plan):
        cpus, gpus = job_resources(plan, job)
        device = GPU_DEVICE if gpus > 0 else CPU_DEVICE
        rate = table.get((job.backbone, device))
        work = plan.work(job)
        if rate is None:
            why = f"no throughput figure for {job.backbone} on {device}"
            out.append(JobCost(job, cpus, gpus, None, None, why))
        elif work is None:
            out.append(JobCost(job, cpus, gpus, None, rate, "the dataset's size is unknown"))
        else:
            seconds = work / (rate.images_per_s * (gpus if gpus > 0 else 1))
            out.append(JobCost(job, cpus, gpus, seconds, rate))
    return out


@dataclass(frozen=True)
class Schedule:
    """The plan replayed on a cluster.

    Attributes:
        seconds: wall time until the last job ends.
        peak_gpus, peak_cpus: the most reserved at once.
        unplaced: jobs that never start (larger than the cluster, or after one).
    """

    seconds: float
    peak_gpus: float
    peak_cpus: float
    unplaced: tuple[str, ...] = ()


def schedule(
    costs: list[JobCost],
    gpus: float = math.inf,
    cpus: float = math.inf,
    max_concurrent: int | None = None,
) -> Schedule:
    """Replay ``costs`` (jobs with a known time) in order on ``gpus`` and ``cpus``: a job
    starts as soon as the job it needs has ended, what it reserves is free and fewer than
    ``max_concurrent`` jobs run (a later job may start before an earlier one that waits)."""
    pending = [c for c in costs if c.seconds is not None]
    running: list[tuple[float, int, JobCost]] = []  # (end, order, cost)
    done: set[str] = set()
    now = used_gpus = used_cpus = peak_gpus = peak_cpus = 0.0
    order = 0
    while True:
        for c in list(pending):
            if max_concurrent and len(running) >= max_concurrent:
                break
            ready = c.job.needs is None or c.job.needs in done
            if ready and used_gpus + c.gpus <= gpus and used_cpus + c.cpus <= cpus:
                pending.remove(c)
                heapq.heappush(running, (now + c.seconds, order, c))
                order += 1
                used_gpus, used_cpus = used_gpus + c.gpus, used_cpus + c.cpus
        peak_gpus, peak_cpus = max(peak_gpus, used_gpus), max(peak_cpus, used_cpus)
        if not running:
            break
        now, _, c = heapq.heappop(running)
        used_gpus, used_cpus = used_gpus - c.gpus, used_cpus - c.cpus
        done.add(c.job.id)
    return Schedule(now, peak_gpus, peak_cpus, tuple(c.job.id for c in pending))


def format_duration(seconds: float) -> str:
    """``3d 4h``, ``5h 10m``, ``12m``: as long a wait reads."""
    minutes = round(seconds / 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {mins:02d}m"
    return f"{max(mins, 1)}m" if seconds > 0 else "0m"


def estimate_lines(plan: Plan, cluster_gpus: int | None = None) -> list[str]:
    """The cluster a plan needs, as ``--dry-run`` prints it.

    Args:
        plan: the plan.
        cluster_gpus: the cluster's GPUs; None: as many as the plan can use at once.

    Returns:
        The lines.
    """
    costs = job_costs(plan)
    known = [c for c in costs if c.seconds is not None]
    lines = ["cluster estimate:"]
    if not known:
        whys = sorted({c.why for c in costs})
        return lines + [f"  not estimated: {'; '.join(whys)}"]
    max_concurrent = plan.space.max_concurrent_trials
    widest = schedule(known, max_concurrent=max_concurrent)
    uses_gpus = widest.peak_gpus > 0
    if cluster_gpus is None or not uses_gpus:
        size, sched = "the most this plan uses at once", widest
        gpus = widest.peak_gpus
    else:
        size, gpus = "--cluster-gpus", float(cluster_gpus)
        sched = schedule(known, gpus=gpus, max_concurrent=max_concurrent)
    gpu_hours = sum(c.seconds * c.gpus for c in known) / 3600
    cpu_hours = sum(c.seconds * c.cpus for c in known) / 3600
    if uses_gpus:
        lines.append(
            f"  cluster: {gpus:g} {GPU_DEVICE} GPUs ({size}); it holds at most "
            f"{sched.peak_gpus:g} GPUs and {sched.peak_cpus:g} CPUs at once"
        )
        lines.append(f"  GPU-hours: {gpu_hours:,.0f} ({_by_group(plan, known, 'gpus')})")
    else:
        lines.append(f"  CPUs: at most {sched.peak_cpus:g} at once (no job asks for a GPU)")
    lines.append(f"  CPU-hours reserved: {cpu_hours:,.{0 if cpu_hours >= 10 else 1}f}")
    lines.append(f"  wall time: {format_duration(sched.seconds)}")
    if sched.unplaced:
        lines.append(
            f"  never start on {gpus:g} GPUs ({len(sched.unplaced)}): a job asks for more, "
            f"or starts from one that does: {', '.join(sched.unplaced[:3])}"
            + (" ..." if len(sched.unplaced) > 3 else "")
        )
    rates = sorted({c.rate for c in known}, key=lambda r: (r.device, r.backbone))
    lines.append("  from (skipnet_sweep/sweep/throughput.csv):")
    lines += [f"    {r.describe()}" for r in rates]
    estimated = [r.backbone for r in rates if r.basis == "estimate"]
    if estimated:
        lines.append(
            f"  {', '.join(estimated)}: estimated, not measured, so these times are estimates "
            "too; a shared job's GPUs are assumed to scale linearly"
        )
    missing = [c for c in costs if c.seconds is None]
    if missing:
        whys = "; ".join(sorted({c.why for c in missing}))
        lines.append(f"  not counted ({len(missing)} jobs): {whys}")
    return lines


def _by_group(plan: Plan, costs: list[JobCost], unit: str) -> str:
    groups: dict[str, float] = {}
    for c in costs:
        label = "shared pre-training" if c.job.shared else plan.method(c.job.method).label
        groups[label] = groups.get(label, 0.0) + c.seconds * getattr(c, unit) / 3600
    return ", ".join(f"{k} {v:,.0f}" for k, v in groups.items())
