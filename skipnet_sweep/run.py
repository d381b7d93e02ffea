"""Run a sweep: a search-space file in, a tracked accuracy/FLOPs frontier out.

    python -m skipnet_sweep.run                          # the bundled quickstart space
    python -m skipnet_sweep.run --space imagenet_alpha.yaml --address auto
    python -m skipnet_sweep.run --space my.yaml --dry-run

Exit codes: 0 all trials finished, 1 some failed (the summary says which), 2 bad input
(nothing was started or written).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import yaml

from skipnet_sweep.sweep.space import SpaceError, load_space

DEFAULT_SPACE = "quickstart"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m skipnet_sweep.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--space", default=DEFAULT_SPACE, help="space file, or a bundled space's name")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show Ray's and Tune's own output live (by default it goes to a log file)",
    )
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    p.add_argument("--storage-path", default=None, help="override storage_path")
    p.add_argument("--tracking-uri", default=None, help="override mlflow.tracking_uri")
    p.add_argument("--experiment", default=None, help="override mlflow.experiment")
    p.add_argument("--data-root", default=None, help="override dataset.root")
    p.add_argument("--max-concurrent-trials", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=None, help="override search.num_samples")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any field, e.g. --set hrl.iterations=50 (repeatable)",
    )
    return p


def _overrides(args: argparse.Namespace) -> dict:
    out = {}
    for flag, key in (
        ("storage_path", "storage_path"),
        ("tracking_uri", "mlflow.tracking_uri"),
        ("experiment", "mlflow.experiment"),
        ("data_root", "dataset.root"),
        ("max_concurrent_trials", "max_concurrent_trials"),
        ("num_samples", "search.num_samples"),
    ):
        if getattr(args, flag) is not None:
            out[key] = getattr(args, flag)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpaceError(f"--set {item!r}: expected FIELD=VALUE")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            with contextlib.suppress(ValueError):
                parsed = float(parsed)
        out[key] = parsed
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from skipnet_sweep.sweep.plan import make_plan

        space = load_space(args.space, _overrides(args))
        try:
            plan = make_plan(space)
        except SpaceError as err:
            raise SpaceError(f"{space.source}: {err}") from None
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        from skipnet_sweep.sweep.driver import tracker_for

        print(plan.describe())
        t = tracker_for(plan)
        print(f"  MLflow: {t.tracking_uri}, experiment {t.experiment!r}")
        return 0
    from skipnet_sweep.sweep.driver import frontier_table, run_sweep, tracker_for

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
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tracker = tracker_for(plan)
    print()
    print(f"sweep {plan.sweep_id}: {result.trials} runs finished in {time.time() - start:.0f} s")
    print(frontier_table(result, plan))
    if result.failed:
        print(f"{len(result.failed)} failed:")
        for tid, why in sorted(result.failed.items()):
            print(f"  {tid}: {why}")
    print(
        f"MLflow: {tracker.tracking_uri} (experiment {tracker.experiment!r}, parent run {result.parent_run_id})"
    )
    print(
        f"Figures: python -m skipnet_sweep.report --experiment {tracker.experiment} "
        f"--tracking-uri {tracker.tracking_uri} --out report/{tracker.experiment}"
    )
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
