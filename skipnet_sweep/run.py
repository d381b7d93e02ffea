"""Run a sweep: a search-space file in, a tracked accuracy/FLOPs frontier out.

    python -m skipnet_sweep.run                          # the bundled quickstart space
    python -m skipnet_sweep.run --space imagenet_alpha.yaml --address auto
    python -m skipnet_sweep.run --space my.yaml --dry-run

Exit codes: 0 all trials finished, 1 some failed (the summary says which), 2 bad input or
another driver running the same sweep (nothing was started or written), 130 stopped by
Ctrl-C (the same command resumes).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

from skipnet_sweep.methods.plugins import PluginError, load_plugins
from skipnet_sweep.sweep.space import (
    Space,
    SpaceError,
    bundled_spaces,
    load_space,
    path_problems,
)
from skipnet_sweep.yamlio import MAX_LINE, OneLineParser, YamlError, one_line, read_yaml_value

if TYPE_CHECKING:
    from skipnet_sweep.sweep.plan import Plan

DEFAULT_SPACE = "quickstart"
# A plan with more runs than this gets a summary (runs per axis, compute) before its listing.
LARGE_PLAN = 20

# Flags that override a space field: flag (argparse dest) -> dotted field.
FLAG_FIELDS = {
    "storage_path": "storage_path",
    "tracking_uri": "mlflow.tracking_uri",
    "experiment": "mlflow.experiment",
    "data_root": "dataset.root",
    "max_concurrent_trials": "max_concurrent_trials",
    "num_samples": "search.num_samples",
}
# Flags that only some spaces use: flag -> (does it apply to this space, why not). A flag
# that would be ignored is refused, not dropped (an ignored --num-samples changed the id).
FLAG_APPLIES = {
    "num_samples": (
        lambda space: space.search.algorithm == "optuna",
        "only the optuna search samples; this space's grid runs each point once",
    ),
    "data_root": (
        lambda space: space.dataset.name != "synthetic",
        "the synthetic dataset is generated and reads no files",
    ),
}


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m skipnet_sweep.run",
        description=__doc__,
        epilog=f"bundled spaces (--space NAME): {', '.join(bundled_spaces()) or 'none found'}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--space", default=DEFAULT_SPACE, help="space file, or a bundled space's name")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and what this machine lacks to run it (data, storage), then exit",
    )
    p.add_argument(
        "--cluster-gpus",
        type=int,
        default=None,
        metavar="N",
        help="with --dry-run: the wall time on a cluster of N GPUs (default: as many as the "
        "plan uses at once)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show Ray's and Tune's own output live (by default it goes to a log file)",
    )
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="a module or .py file that registers methods (repeatable); loaded before the "
        "space is read and shipped to the Ray workers",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)",
    )
    p.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (no --address)"
    )
    p.add_argument("--storage-path", default=None, help="override storage_path")
    p.add_argument("--tracking-uri", default=None, help="override mlflow.tracking_uri")
    p.add_argument("--experiment", default=None, help="override mlflow.experiment")
    p.add_argument("--data-root", default=None, help="override dataset.root")
    p.add_argument(
        "--max-concurrent-trials", type=int, default=None, help="override max_concurrent_trials"
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="override search.num_samples (optuna search only)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any field, e.g. --set hrl.iterations=50 (repeatable; VALUE is YAML)",
    )
    return p


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _set_overrides(items: list[str]) -> dict:
    """``--set FIELD=VALUE`` items as dotted keys, each VALUE read as YAML."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SpaceError(f"--set {one_line(item, 60)!r}: expected FIELD=VALUE")
        if key in out:
            raise SpaceError(f"--set {one_line(key, 60)}: given twice; give each field once")
        try:
            out[key] = read_yaml_value(text)
        except YamlError as err:
            raise SpaceError(f"--set {one_line(key, 60)}: {err}") from None
    return out


def _load(args: argparse.Namespace) -> Space:
    """The space with ``--set`` and the flags applied, paths not checked yet; a flag that
    does not apply to it is refused by name.

    Raises:
        SpaceError: one line.
    """
    sets = _set_overrides(args.set)
    flags = {dest: getattr(args, dest) for dest in FLAG_FIELDS if getattr(args, dest) is not None}
    for dest in flags:
        if FLAG_FIELDS[dest] in sets:
            raise SpaceError(
                f"{_flag(dest)} and --set {FLAG_FIELDS[dest]}=... set the same field; give one"
            )
    if args.num_cpus is not None and (args.address or os.environ.get("RAY_ADDRESS")):
        raise SpaceError(
            "--num-cpus: sizes a local Ray instance; with --address (or $RAY_ADDRESS) the "
            "cluster's own CPUs are used"
        )
    overrides = {**sets, **{FLAG_FIELDS[dest]: value for dest, value in flags.items()}}
    try:
        space = load_space(args.space, overrides, check_paths=False)
    except SpaceError as err:
        if not flags:
            raise
        # A flag the space does not take (--num-samples on a grid) is invalid there as a
        # field too: name the flag, which is what the user typed.
        try:
            base = load_space(args.space, sets, check_paths=False)
        except SpaceError:
            raise err from None
        _refuse_inapplicable(base, flags)
        raise
    _refuse_inapplicable(space, flags)
    return space


def _refuse_inapplicable(space: Space, flags: dict) -> None:
    for dest in flags:
        if dest in FLAG_APPLIES:
            applies, why = FLAG_APPLIES[dest]
            if not applies(space):
                raise SpaceError(f"{space.source}: {_flag(dest)} does not apply: {why}")


def summary(plan) -> list[str]:
    """Jobs per method and axis, and a compute estimate (optimiser steps, and steps x batch
    images), from the plan's public attributes; printed before the listing of a large plan.

    Args:
        plan: a ``sweep.plan.Plan``.

    Returns:
        The lines.
    """
    space = plan.space
    uncounted = 0

    def cost(job) -> tuple[int, int]:
        nonlocal uncounted
        steps = plan.steps(job)
        if steps is None:
            uncounted += 1
            return 0, 0
        return steps, steps * job.config.train.batch_size

    groups: dict[str, list] = {}
    for job in plan.jobs:
        label = "shared pre-training" if job.shared else f"{plan.method(job.method).label} trials"
        groups.setdefault(label, []).append(job)
    lines = [f"summary of sweep {plan.sweep_id}:"]
    compute: dict[str, tuple[int, int]] = {}
    for label, jobs in groups.items():
        if jobs[0].shared:
            kinds = Counter(j.config.train.phase for j in jobs)
            detail = " + ".join(f"{n} {k}" for k, n in kinds.items())
        else:
            detail = _per_axis(jobs)
        lines.append(f"  {label}: {len(jobs)} = {detail}")
        costs = [cost(j) for j in jobs]
        compute[label] = (sum(c[0] for c in costs), sum(c[1] for c in costs))
    adaptive = plan.adaptive
    if adaptive is not None:
        method, axes = adaptive
        n = space.search.num_samples
        names = ", ".join(axes)
        lines.append(f"  {method.label} trials: {n} optuna samples over {names}")
        # Every sample trains as long; the first value of each axis stands for all.
        sample = {k: v[1][0] if v[0] == "categorical" else v[1] for k, v in axes.items()}
        steps, images = cost(plan.sampled_job(method.name, sample))
        compute[f"{method.label} samples"] = (n * steps, n * images)
    steps = sum(s for s, _ in compute.values())
    images = sum(i for _, i in compute.values())
    parts = ", ".join(f"{k} {s:,}" for k, (s, _) in compute.items())
    lines.append(
        f"  compute: {steps:,} optimiser steps ({parts}); {images:,} images (steps x batch)"
    )
    if uncounted:
        lines.append(
            f"  ({uncounted} runs given in epochs not counted: the dataset's size is unknown)"
        )
    return lines


def _per_axis(jobs) -> str:
    """``jobs`` counted per coordinate, e.g. ``3 backbone x 2 gate x 12 alpha``. Where not
    every combination runs (per-backbone gates), the leading axes are counted together:
    ``6 (backbone, gate) x 3 variant x 12 alpha``."""
    names = [name for name, _ in jobs[0].coords]
    rows = [tuple(dict(j.coords).get(n) for n in names) for j in jobs]
    for k in range(1, len(names) + 1):
        head = len({r[:k] for r in rows})
        tail = [len({r[i] for r in rows}) for i in range(k, len(names))]
        if head * math.prod(tail) == len(jobs):
            first = names[0] if k == 1 else f"({', '.join(names[:k])})"
            return " x ".join(
                [f"{head} {first}"] + [f"{n} {names[k + i]}" for i, n in enumerate(tail)]
            )
    return f"{len(jobs)} distinct ({', '.join(names)})"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        load_plugins(sys.argv[1:] if argv is None else argv)
    except PluginError as err:
        _error(err)
        return 2
    try:
        plan, missing = _plan(args)
    except SpaceError as err:
        _error(err)
        return 2
    if args.dry_run:
        return _dry_run(args, plan, missing)
    return _run(args, plan, argv)


def _plan(args: argparse.Namespace) -> tuple[Plan, list[str]]:
    """The plan of the space the command names, after its notices are printed, and what
    this machine lacks to run it (refused unless ``--dry-run``, which lists it).

    Raises:
        SpaceError: one line.
    """
    from skipnet_sweep.stages.loop import describe_precision
    from skipnet_sweep.sweep.plan import make_plan

    if args.cluster_gpus is not None and (not args.dry_run or args.cluster_gpus < 1):
        raise SpaceError("--cluster-gpus: a number of GPUs (1 or more), with --dry-run only")
    space = _load(args)
    for notice in space.notices:
        print(notice)
    missing = path_problems(space)
    if missing and not args.dry_run:
        raise SpaceError(f"{space.source}: {missing[0]}")
    try:
        plan = make_plan(space)
    except SpaceError as err:
        raise SpaceError(f"{space.source}: {err}") from None
    precisions = {job.config.train.precision for job in plan.jobs}
    for line in filter(None, map(describe_precision, sorted(precisions))):
        print(line)
    return plan, missing


def _dry_run(args: argparse.Namespace, plan: Plan, missing: list[str]) -> int:
    """Print the plan, where and how long it would run, and what this machine lacks."""
    from skipnet_sweep.sweep.driver import tracker_for, worker_group_order
    from skipnet_sweep.sweep.estimate import estimate_lines
    from skipnet_sweep.sweep.readiness import data_problems, local_problems

    space = plan.space
    if len(plan.jobs) > LARGE_PLAN or plan.adaptive is not None:
        print("\n".join(summary(plan)))
    print(plan.describe())
    cluster = args.address or os.environ.get("RAY_ADDRESS")
    order = worker_group_order(
        plan,
        None if cluster else (args.num_cpus or os.cpu_count() or 1),
        0 if cluster else _local_gpus(),
        "--num-cpus" if args.num_cpus else "this machine",
    )
    if order:
        print(order)
    t = tracker_for(plan)
    print(f"  MLflow: {t.tracking_uri}, experiment {t.experiment!r}")
    print("\n".join(estimate_lines(plan, args.cluster_gpus)))
    if cluster:  # the cluster's resources are checked when the run joins it
        missing += data_problems(space.dataset.name, space.dataset.root)
    else:
        missing += local_problems(plan)
    if missing:
        print(f"not ready to run on this machine ({len(missing)}):")
        for problem in missing:
            print(f"  {problem}")
    return 0


def _run(args: argparse.Namespace, plan: Plan, argv: list[str] | None) -> int:
    """Run the sweep and print its outcome; the exit code (module docstring)."""
    from skipnet_sweep.sweep.driver import run_sweep
    from skipnet_sweep.sweep.lock import SweepLocked

    address = args.address or os.environ.get("RAY_ADDRESS")
    start = time.time()
    try:
        result = run_sweep(
            plan,
            address=address,
            fresh=args.fresh,
            num_cpus=args.num_cpus,
            verbose=args.verbose,
        )
    except (SpaceError, SweepLocked) as err:
        _error(err)
        return 2
    except KeyboardInterrupt:
        command = _resume_command(sys.argv[1:] if argv is None else argv)
        print(f"interrupted: run the same command to resume: {command}", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a process Ctrl-C ended
    _print_outcome(plan, result, time.time() - start)
    return 1 if result.failed else 0


def _print_outcome(plan: Plan, result, seconds: float) -> None:
    """The finished sweep: its frontier, its failures and where to look in MLflow.

    Args:
        result: the ``SweepResult`` of ``run_sweep``.
    """
    from skipnet_sweep.sweep.driver import frontier_table, tracker_for

    tracker = tracker_for(plan)
    print()
    print(f"sweep {plan.sweep_id}: {result.trials} runs finished in {seconds:.0f} s")
    print(frontier_table(result, plan))
    if result.failed:
        print(f"{len(result.failed)} failed:")
        for tid, why in sorted(result.failed.items()):
            print(f"  {tid}: {why}")
        print("  run the same command to retry them (it runs every job that has not finished)")
    print(
        f"MLflow: {tracker.tracking_uri} (experiment {tracker.experiment!r}, parent run {result.parent_run_id})"
    )
    if not tracker.tracking_uri.startswith("http"):
        print(f"  browse: mlflow ui --backend-store-uri {tracker.tracking_uri} --port 5000")
    print(f"  open: {tracker.ui_url()}")
    for line in figure_lines(result.figures, tracker, result.parent_run_id):
        print(line)
    for line in plan.optuna_lines():
        print(line)
    print(
        f"Figures: python -m skipnet_sweep.report --experiment {tracker.experiment} "
        f"--tracking-uri {tracker.tracking_uri} --out report/{tracker.experiment}"
    )


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def figure_lines(figures, tracker, parent: str) -> list[str]:
    """Where the frontier figures logged to the parent run are, or why they are not.

    Args:
        figures: the sweep's ``reporting.sweep_figures.LoggedFigures`` (None: none drawn).
        tracker: the sweep's ``Tracker``.
        parent: the parent run's id.
    """
    if figures is None:
        return []
    if figures.error or not figures.images:
        why = figures.error or "no image"
        return [f"  frontier figures: not logged to the parent run ({why}); the report draws them"]
    lines = [
        f"  frontier figures: {', '.join(figures.images)} in the parent run "
        f"({figures.seconds:.1f} s): {figures.artifact_uri}",
        f"  see the frontier: {tracker.artifact_url(parent, figures.images[0])}",
    ]
    lines += [f"    not drawn: {name}: {why}" for name, why in figures.skipped.items()]
    return lines


def _resume_command(argv: list[str]) -> str:
    """The command that resumes a sweep run with ``argv``: the same without ``--fresh`` (nor
    a prefix of it, which argparse takes for it), which would start it over."""
    kept = [a for a in argv if not (len(a) > 2 and "--fresh".startswith(a))]
    return shlex.join(["python", "-m", "skipnet_sweep.run", *kept])


def _error(err: Exception) -> None:
    """The one line of a refusal on stderr, at most ``MAX_LINE`` characters."""
    print(one_line(f"error: {err}", MAX_LINE), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
