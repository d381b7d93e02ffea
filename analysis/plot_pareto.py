"""Several sweeps or experiments on one trade-off figure: top-1 against MACs or latency.

Each study (an experiment, or one sweep) is drawn in its own colour with its own frontier;
published baselines go on the MACs axis.

    python analysis/plot_pareto.py --experiment fashion_mnist --experiment cifar10_alpha
    python analysis/plot_pareto.py --sweep quickstart-1a2b3c4d5e --sweep quickstart-6f7a8b9c0d \
        --x latency --out figures/

Writes ``<name>.png`` and ``<name>.pdf`` (MACs: the frontiers as ``<name>.csv``; one set
per dataset, ``<name>_<dataset>``, when the studies span several) under ``--out`` and
nothing else. The work is done by ``skipnet_sweep.reporting.study.make_comparison``; this
file only parses arguments.
"""

from __future__ import annotations

import sys

from skipnet_sweep.reporting import cli


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(
        None,
        __doc__.splitlines()[0],
        out_help="output folder (default: the current one)",
        out_default=".",
    )
    # One list in command-line order: the studies are drawn, and coloured, in that order.
    p.add_argument(
        "--experiment",
        dest="studies",
        action="append",
        type=lambda name: ("experiment", name),
        metavar="NAME",
        help="an MLflow experiment (a space's name): all its sweeps' runs; repeatable",
    )
    p.add_argument(
        "--sweep",
        dest="studies",
        action="append",
        type=lambda sweep_id: ("sweep", sweep_id),
        metavar="ID",
        help="one sweep, by the id run prints (its parent run's skipnet.sweep_id); repeatable",
    )
    p.add_argument(
        "--x",
        choices=cli.X_AXES,
        default="macs",
        help="the x axis: mean MACs per image (with published baselines) or measured latency",
    )
    p.add_argument("--batch", type=int, default=None, help="--x latency: batch size (default 1)")
    p.add_argument("--name", default="pareto", help="file name stem (default: pareto)")
    p.set_defaults(flops_unit=None)
    args = p.parse_args(argv)
    if not args.studies:
        p.error("give at least one --experiment or --sweep")
    names = [name for _, name in args.studies]
    if len(set(names)) < len(names):
        p.error(f"each study once: {', '.join(names)}")
    if args.x == "latency" and (args.baselines is not None or args.flops_unit is not None):
        p.error("--baselines and --flops-unit apply to --x macs (published results give MACs)")
    if args.x == "macs" and args.batch is not None:
        p.error("--batch applies to --x latency")
    from skipnet_sweep.reporting.study import make_comparison

    result = cli.run(
        lambda: make_comparison(
            args.studies,
            args.out,
            tracking_uri=args.tracking_uri,
            x=args.x,
            baselines=args.baselines,
            flops_unit=args.flops_unit or "M",
            batch=args.batch or 1,
            name=args.name,
        )
    )
    if isinstance(result, int):
        return result
    for name, why in result.skipped.items():
        print(f"error: {name}: {why}", file=sys.stderr)
    for files in result.figures.values():
        for path in files:
            print(f"wrote {path}")
    return 0 if result.figures else 1


if __name__ == "__main__":
    sys.exit(main())
