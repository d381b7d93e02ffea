"""Write a sweep's report (figures, summary.md) and log it to the sweep's parent run.

    python -m skipnet_sweep.report --experiment quickstart --out reports/quickstart

The work is done by ``skipnet_sweep.analysis.report.make_report``.
"""

from __future__ import annotations

import argparse
import sys

from skipnet_sweep.analysis.figures import FLOPS_UNITS

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skipnet_sweep.report",
        description="Every figure a sweep's runs support, a summary table, logged to MLflow.",
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment (the space name)")
    parser.add_argument("--out", required=True, help="report folder (created)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db",
    )
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=None,
        metavar="DIR_OR_CSV",
        help="published baseline CSVs or folders (default: analysis/baselines)",
    )
    parser.add_argument("--flops-unit", default="M", choices=list(FLOPS_UNITS))
    parser.add_argument("--no-log", action="store_true", help="do not log to the parent run")
    args = parser.parse_args(argv)

    # Imported here so --help does not pay for MLflow and matplotlib.
    from skipnet_sweep.analysis.baselines import BaselineError
    from skipnet_sweep.analysis.report import make_report
    from skipnet_sweep.analysis.runs import ExperimentNotFoundError

    try:
        result = make_report(
            args.experiment,
            args.out,
            tracking_uri=args.tracking_uri,
            baselines_dir=args.baselines,
            flops_unit=args.flops_unit,
            log=not args.no_log,
        )
    except (ExperimentNotFoundError, BaselineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {result.summary}")
    for name, why in result.skipped.items():
        print(f"  not made: {name}: {why}")
    if result.parent_run_id:
        print(f"logged to run {result.parent_run_id} under report/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
