"""Write a sweep's report (figures, summary.md) to a folder; ``--log`` also logs it to the
sweep's parent run.

    python -m skipnet_sweep.report --experiment quickstart --out reports/quickstart

The work is done by ``skipnet_sweep.reporting.study.make_report``.
"""

from __future__ import annotations

import sys

from skipnet_sweep.reporting import cli

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        "python -m skipnet_sweep.report",
        "Every figure a sweep's runs support and a summary table, in --out (and, with "
        "--log, in the sweep's parent run in MLflow).",
        out_help="report folder (created)",
        out_default=None,
    )
    p.add_argument("--experiment", required=True, help="MLflow experiment (the space name)")
    p.add_argument(
        "--log",
        action="store_true",
        help="also log what is written to the sweep's parent run, in the store's artifact "
        "location (for a copied store, the original's when its paths are absolute)",
    )
    args = p.parse_args(argv)
    from skipnet_sweep.reporting.study import make_report

    result = cli.run(
        lambda: make_report(
            args.experiment,
            args.out,
            tracking_uri=args.tracking_uri,
            baselines_dir=args.baselines,
            flops_unit=args.flops_unit,
            log=args.log,
        )
    )
    if isinstance(result, int):
        return result
    print(f"wrote {result.summary}")
    for name, why in result.skipped.items():
        print(f"  not made: {name}: {why}")
    if result.parent_run_id:
        print(f"logged to run {result.parent_run_id}: {result.logged_to}")
    elif args.log:
        print(f"not logged: experiment {args.experiment!r} has no sweep parent run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
