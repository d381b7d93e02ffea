"""What the reporting commands (``python -m skipnet_sweep.report``, ``analysis/plot_pareto.py``)
share: where they read and write, the baselines and units, and turning a missing experiment
or sweep, one without runs or a bad baseline file into one ``error:`` line and exit code 2
(having written nothing)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

from skipnet_sweep.reporting.style import FLOPS_UNITS

T = TypeVar("T")
# The x axes of a comparison (``study.make_comparison``): mean MACs per image (with
# published baselines) or measured latency. Here, so --help needs no MLflow or matplotlib.
X_AXES = ("macs", "latency")


def parser(prog: str | None, description: str, *, out_help: str, out_default: str | None):
    """An argument parser with the options every reporting command takes."""
    p = argparse.ArgumentParser(prog=prog, description=description)
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
        help="published baseline CSVs or folders (default: the bundled skipnet_sweep/reporting/baselines)",
    )
    p.add_argument("--flops-unit", default="M", choices=list(FLOPS_UNITS))
    return p


def run(make: Callable[[], T]) -> T | int:
    """Call ``make()``.

    Returns:
        its result, or exit code 2 after printing one ``error:`` line.
    """
    # Imported here so --help does not pay for MLflow and matplotlib.
    from skipnet_sweep.reporting.baselines import BaselineError
    from skipnet_sweep.reporting.runs import (
        ExperimentNotFoundError,
        NoRunsError,
        SweepNotFoundError,
    )

    try:
        return make()
    except (ExperimentNotFoundError, SweepNotFoundError, NoRunsError, BaselineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
