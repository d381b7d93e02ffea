"""What the analysis commands (``python -m skipnet_sweep.report``, ``analysis/plot_pareto.py``)
share: their arguments, and turning a missing experiment, an experiment without runs or a
bad baseline file into one ``error:`` line and exit code 2 (having written nothing)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from skipnet_sweep.analysis.style import FLOPS_UNITS


def parser(prog: str | None, description: str, *, out_help: str, out_default: str | None):
    """An argument parser with the options every analysis command takes."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--experiment", required=True, help="MLflow experiment (the space name)")
    p.add_argument("--out", required=out_default is None, default=out_default, help=out_help)
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db",
    )
    p.add_argument(
        "--baselines",
        nargs="*",
        default=None,
        metavar="DIR_OR_CSV",
        help="published baseline CSVs or folders (default: the bundled skipnet_sweep/analysis/baselines)",
    )
    p.add_argument("--flops-unit", default="M", choices=list(FLOPS_UNITS))
    p.add_argument(
        "--log",
        action="store_true",
        help="also log what is written to the sweep's parent run, in the store's artifact "
        "location (for a copied store, the original's when its paths are absolute)",
    )
    return p


def run(make: Callable, args: argparse.Namespace, baselines_kw: str):
    """Call ``make(experiment, out, ...)`` with the parsed options.

    Returns:
        its result, or exit code 2 after printing one ``error:`` line.
    """
    # Imported here so --help does not pay for MLflow and matplotlib.
    from skipnet_sweep.analysis.baselines import BaselineError
    from skipnet_sweep.analysis.runs import ExperimentNotFoundError, NoRunsError

    try:
        return make(
            args.experiment,
            args.out,
            tracking_uri=args.tracking_uri,
            flops_unit=args.flops_unit,
            log=args.log,
            **{baselines_kw: args.baselines},
        )
    except (ExperimentNotFoundError, NoRunsError, BaselineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
