"""Top-1 vs. MACs of a sweep's runs with the Pareto frontier and published baselines.

    python analysis/plot_pareto.py --experiment quickstart --out reports/quickstart

Writes ``pareto.png``, ``pareto.pdf`` and the frontier as ``pareto.csv`` (one set per
dataset when the experiment holds several) and logs them to the sweep's parent run under
``report/``. The work is done by ``skipnet_sweep.analysis``; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import sys

from skipnet_sweep.analysis.figures import FLOPS_UNITS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="MLflow experiment (the space name)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db",
    )
    parser.add_argument("--out", default=".", help="output folder (default: the current one)")
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

    from skipnet_sweep.analysis.baselines import BaselineError
    from skipnet_sweep.analysis.report import make_pareto_plot
    from skipnet_sweep.analysis.runs import ExperimentNotFoundError

    try:
        result = make_pareto_plot(
            args.experiment,
            args.out,
            tracking_uri=args.tracking_uri,
            baselines=args.baselines,
            flops_unit=args.flops_unit,
            log=not args.no_log,
        )
    except (ExperimentNotFoundError, BaselineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, why in result.skipped.items():
        print(f"error: {name}: {why}", file=sys.stderr)
    for files in result.figures.values():
        for path in files:
            print(f"wrote {path}")
    if result.parent_run_id:
        print(f"logged to run {result.parent_run_id} under report/")
    return 0 if result.figures else 1


if __name__ == "__main__":
    sys.exit(main())
