"""The frontiers as a table a person reads: in the terminal at a sweep's end and, as
Markdown, on the parent run's page."""

from __future__ import annotations

from skipnet_sweep import metrics as M
from skipnet_sweep.pareto import NOT_FASTER, TOO_NOISY, format_hypervolume
from skipnet_sweep.routing import NO_SKIP, ROUTES
from skipnet_sweep.sweep.plan import Plan
from skipnet_sweep.sweep.result import ROUTING, VERDICT, SweepResult


def frontier_table(result: SweepResult, plan: Plan, *, markdown: bool = False) -> str:
    """The frontiers as a titled table a person reads: the runs on the MACs frontier and
    on the measured-latency frontier, the plain ResNet as the reference and the best SkipNet
    point; a run whose MACs are below the plain ResNet's but that runs no faster beyond the
    timing's noise is flagged (its savings are counted, not realised), and one whose timing
    is too noisy to tell is marked so. Plain text, or Markdown for MLflow."""
    rows, shown, extra = _rows(result)
    title = _title(result, plan, rows, shown, extra)
    # The cost weight's column is headed by its name(s): alpha, tau, or both.
    weights = sorted({r["weight"].partition("=")[0] for _, r in rows if r["weight"]})
    flags: set[str] = set()  # the marks the speed-up column used, explained in the footer
    header = ("run", "method", " / ".join(weights) or "cost weight",
              f"{M.accuracy_label(plan.data.selection_set)} %", "MACs (M)", "% of plain MACs",
              "speed-up at batch 1 (IQR)", "routed", "frontier", "note")  # fmt: skip
    table = [
        (
            r["run_name"][:44],
            r["method"],
            _weight(r, weights),
            f"{r[M.TOP1]:.2f}",
            f"{r[M.FLOPS_MEAN] / 1e6:.2f}",
            f"{100 * r[M.FLOPS_MEAN] / r[M.FLOPS_PLAIN]:.1f}",
            _speed(r, flags),
            _routing(r),
            _frontiers(r),
            note,
        )
        for note, r in rows
    ]
    footer = _footer(result, plan, rows, flags)
    if markdown:
        return _markdown(title, header, table, footer)
    return _plain_text(title, header, table, footer)


def _skipnet(result: SweepResult) -> tuple[list[dict], list[dict]]:
    """The SkipNet runs, and those of them that skip a block."""
    skipnet = [r for r in result.rows if r["method"].startswith("skipnet-")]
    return skipnet, [r for r in skipnet if r[ROUTING] != NO_SKIP]


def _rows(result: SweepResult) -> tuple[list[tuple[str, dict]], list[dict], list[str]]:
    """(note, row) of every line of the table, the frontiers' rows, and what the table shows
    beyond them (named in the title)."""
    shown = sorted(
        {r["run_id"]: r for r in [*result.frontier, *result.latency_frontier]}.values(),
        key=lambda r: r[M.FLOPS_MEAN],
    )
    rows = [("", r) for r in shown]
    extra = []  # rows beyond the frontiers', named in the title
    plain = [r for r in result.rows if r["stage"] == "baseline"]
    if plain:
        reference = max(plain, key=lambda r: r[M.TOP1])
        if reference in shown:  # mark it where it stands
            rows[shown.index(reference)] = ("reference", reference)
        else:
            rows.append(("reference", reference))
            extra.append("the plain ResNet")
    # The best SkipNet is a point that skips: one that closes no gate is the plain ResNet
    # with gates attached, whatever its accuracy.
    _, skipping = _skipnet(result)
    if skipping:
        best = max(skipping, key=lambda r: (r[M.TOP1], -r[M.FLOPS_MEAN]))
        if best in shown:
            rows[shown.index(best)] = ("best SkipNet", best)
        else:
            rows.append(("best SkipNet", best))
            extra.append("the best SkipNet")
    return rows, shown, extra


def _title(result: SweepResult, plan: Plan, rows: list, shown: list[dict], extra: list[str]) -> str:
    space = plan.space
    return (
        f"Pareto frontier of {space.name}: {space.dataset.name}, {', '.join(space.backbones)}"
        f" ({len(rows)} of {result.trials} runs: {len(shown)} on a frontier (MACs "
        f"{len(result.frontier)}, latency {len(result.latency_frontier)})"
        + "".join(f", {what}" for what in extra)
        + ")"
    )


def _weight(r: dict, weights: list[str]) -> str:
    name, _, value = r["weight"].partition("=")
    return value if len(weights) == 1 else (f"{name} {value}" if value else "")


def _frontiers(r: dict) -> str:
    return "+".join(n for n, k in (("MACs", "pareto"), ("latency", "pareto_latency")) if r[k])


def _speed(r: dict, flags: set[str]) -> str:
    """The speed-up cell, flagged (and the flag added to ``flags``) when MACs are saved but
    the timing shows no speed-up, or cannot tell."""
    if r[M.speedup(1)] is None:
        return ""
    text = f"{r[M.speedup(1)]:.2f}x"
    q1, q3 = r.get(M.speedup_q1(1)), r.get(M.speedup_q3(1))
    if q1 is not None and q3 is not None:
        text += f" ({q1:.2f}-{q3:.2f})"
    # Only a run that saves MACs has a saving to realise or not.
    if r[M.FLOPS_MEAN] < 0.95 * r[M.FLOPS_PLAIN]:
        flag = {NOT_FASTER: "!", TOO_NOISY: "?"}.get(r.get(VERDICT), "")
        flags.add(flag)
        text += f" {flag}" if flag else ""
    return text


def _routing(r: dict) -> str:
    if r[ROUTING] == NO_SKIP or r[M.ROUTING_SHARE] is None:
        return ""
    mark = "" if r[ROUTING] == ROUTES else " (pruned)"
    return f"{r[M.ROUTING_SHARE]:.0f} %{mark}"


def _footer(result: SweepResult, plan: Plan, rows: list, flags: set[str]) -> list[str]:
    """The lines under the table: the hypervolume and what each column and mark means."""
    footer = [
        format_hypervolume(result.hypervolume) + " (share of the plain ResNet's box)",
        f"{M.accuracy_label(plan.data.selection_set)}: on the "
        f"{M.split_name(plan.data.selection_set)}, where the frontiers were chosen; MACs: "
        "multiply-adds per image",
        "routed: % of images whose blocks differ from the most common route; (pruned): the "
        "same blocks skipped for every image, a statically pruned ResNet",
    ]
    skipnet, skipping = _skipnet(result)
    if skipnet and not skipping:
        footer.append("no SkipNet run skips a block: every gate stays open")
    if any(r[M.speedup(1)] is not None for _, r in rows):
        footer.append(
            "speed-up: the plain ResNet's time over the run's, timed side by side at batch 1; "
            f"median (interquartile range) over {plan.space.latency.repeats} timed rounds"
        )
    if "!" in flags:
        footer.append(
            "!: fewer MACs than the plain ResNet but no faster beyond the timing's noise "
            "(its interquartile range is at or below 1x): the saving is counted, not realised"
        )
    if "?" in flags:
        footer.append(
            "?: fewer MACs, but the timing is too noisy to tell whether it runs faster (its "
            "interquartile range spans 1x); time it on a quiet machine or with more "
            "latency.repeats"
        )
    return footer


def _markdown(title: str, header: tuple, table: list[tuple], footer: list[str]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join([*lines, "", *footer])


def _plain_text(title: str, header: tuple, table: list[tuple], footer: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=True)]
    left = {0, 1, 2, 8, 9}  # text columns; numbers align right
    fmt = "  ".join(f"{{:{'<' if i in left else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [title, fmt.format(*header).rstrip()]
    lines += [fmt.format(*row).rstrip() for row in table]
    return "\n".join([*lines, *footer])
