"""Top-1 vs. MACs of a sweep's runs with the Pareto frontier and published baselines.

    python analysis/plot_pareto.py --experiment quickstart --out reports/quickstart

Writes ``pareto.png``, ``pareto.pdf`` and the frontier as ``pareto.csv`` (one set per
dataset when the experiment holds several) and logs them to the sweep's parent run under
``report/``. The work is done by ``skipnet_sweep.analysis``; this file only parses arguments.
"""

from __future__ import annotations

import sys

from skipnet_sweep.analysis import cli


def main(argv: list[str] | None = None) -> int:
    args = cli.parser(
        None,
        __doc__.splitlines()[0],
        out_help="output folder (default: the current one)",
        out_default=".",
    ).parse_args(argv)
    from skipnet_sweep.analysis.report import make_pareto_plot

    result = cli.run(make_pareto_plot, args, "baselines")
    if isinstance(result, int):
        return result
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
