"""The sweep's frontier in MLflow: its finished runs' rows, tagged on the MACs and the
measured-latency frontiers, the hypervolume and CSV on the parent run, and each frontier
run's network logged and registered as a model."""

from __future__ import annotations

import re
from pathlib import Path

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import load_trained
from skipnet_sweep.pareto import normalised_hypervolume
from skipnet_sweep.stages import CheckpointError
from skipnet_sweep.stages.checkpoint import make_payload, save_checkpoint
from skipnet_sweep.sweep.frontier_table import frontier_table
from skipnet_sweep.sweep.plan import MODEL_FILE, Plan
from skipnet_sweep.sweep.result import (
    COMPARABLE_LATENCY,
    ROUTING,
    SweepResult,
    frontier_row,
    mark_frontiers,
)
from skipnet_sweep.sweep.tracking import Tracker


def update_frontier(tracker: Tracker, parent: str, plan: Plan) -> SweepResult:
    """Tag the frontier of the sweep's finished child runs, log its hypervolume and CSV."""
    rows = [row for run in tracker.children(parent) if (row := frontier_row(run)) is not None]
    result = SweepResult(parent, trials=len(rows), rows=rows)
    if not rows:
        return result
    timed = mark_frontiers(rows)
    for i, r in enumerate(rows):
        tags = {M.TAG_PARETO: str(r["pareto"]).lower(), M.TAG_ROUTING: r[ROUTING]}
        if i in timed:
            tags[M.TAG_PARETO_LATENCY] = str(r["pareto_latency"]).lower()
        tracker.set_tags(r["run_id"], tags)
    plain = max(r[M.FLOPS_PLAIN] for r in rows)
    result.hypervolume = normalised_hypervolume([(r[M.FLOPS_MEAN], r[M.TOP1]) for r in rows], plain)
    tracker.log_metrics(parent, {M.HYPERVOLUME: result.hypervolume})
    result.frontier = sorted((r for r in rows if r["pareto"]), key=lambda r: r[M.FLOPS_MEAN])
    result.latency_frontier = sorted(
        (r for r in rows if r["pareto_latency"]), key=lambda r: r[COMPARABLE_LATENCY]
    )
    tracker.log_text(parent, frontier_csv(result.frontier), M.PARETO_CSV)
    tracker.set_description(parent, frontier_table(result, plan, markdown=True))
    log_frontier_models(tracker, plan, result)
    return result


def frontier_csv(frontier: list[dict]) -> str:
    """The MACs frontier's rows as the parent run's CSV."""
    cols = ["run_name", "method", "backbone", "weight", M.TOP1, M.FLOPS_MEAN]
    # Rounded as a person reads them: top-1 to 0.01 point, MACs to one multiply-add.
    shown = {M.TOP1: lambda v: f"{v:.2f}", M.FLOPS_MEAN: lambda v: f"{v:.0f}"}
    return (
        ",".join(cols)
        + "\n"
        + "".join(",".join(shown.get(c, str)(r[c]) for c in cols) + "\n" for r in frontier)
    )


def registered_model_name(plan: Plan) -> str:
    """The model registry name of a sweep's frontier (one version per frontier run)."""
    return f"skipnet-{plan.sweep_id}"


def log_frontier_models(tracker: Tracker, plan: Plan, result: SweepResult) -> None:
    """Log each frontier run's network as an MLflow model (as it is deployed: thresholded
    gates, sparse execution) and register it, each version labelled with the point it is
    (``model_version_labels``); once per run (a resumed sweep skips them)."""
    import tempfile

    import torch

    name = registered_model_name(plan)
    for row in result.frontier:
        tags = tracker.client.get_run(row["run_id"]).data.tags
        weights = tags.get(M.TAG_CHECKPOINT)
        if M.TAG_MODEL_VERSION in tags or not weights:
            continue
        try:
            with plan.store.local_copy(weights) as local:
                net, payload = load_trained(local)
        except (CheckpointError, OSError) as err:
            print(f"warning: {row['run_name']}: no model logged ({err})")
            continue
        shape = payload.get("input_shape") or [net.config.in_channels, 32, 32]
        stage = payload.get("stage_config")
        with tempfile.TemporaryDirectory(prefix="skipnet-model-") as tmp:
            # The weights and the config that rebuilds them; not the optimiser's state.
            model = save_checkpoint(
                Path(tmp, MODEL_FILE), make_payload(net, stage, input_shape=tuple(shape))
            )
            version = tracker.log_model(
                row["run_id"],
                model,
                input_example=torch.zeros(1, *shape).numpy(),
                registered_name=name,
                metadata={
                    "model_config": net.config.to_dict(),
                    "stage_config": stage,
                    M.TOP1: round(row[M.TOP1], 2),
                    M.FLOPS_MEAN: round(row[M.FLOPS_MEAN]),
                },
            )
        alias, description, version_tags = model_version_labels(row, plan)
        tracker.label_model_version(
            name,
            version,
            alias=alias,
            description=description,
            tags=version_tags,
            model_description=(
                f"The frontier of sweep {plan.sweep_id} ({plan.space.name}): one version per "
                "run on the MACs frontier. Each version's description, tags and alias (its "
                "run's name) say which point it is; load one with "
                f"models:/{name}@<alias>."
            ),
        )
        tracker.set_tags(row["run_id"], {M.TAG_MODEL_VERSION: version})


def model_version_labels(row: dict, plan: Plan) -> tuple[str, str, dict[str, str]]:
    """(alias, description, tags) of a frontier run's registered version: its method,
    backbone, cost weight, accuracy (split named) and MACs, rounded, so the versions of one
    registered model tell their points apart."""
    accuracy = M.accuracy_label(plan.data.selection_set)
    top1 = f"{row[M.TOP1]:.2f}"
    macs = row[M.FLOPS_MEAN]
    tags = {
        "method": row.get("method", ""),
        "backbone": row.get("backbone", ""),
        "cost_weight": row.get("weight", ""),
        f"{plan.data.selection_set}_top1": top1,
        "macs": f"{macs / 1e6:.2f} M",
        "run_id": row["run_id"],
    }
    text = [f"{accuracy} {top1} %"]
    if row.get(M.TEST_TOP1) is not None and accuracy != M.accuracy_label(M.SELECTION_TEST):
        tags["test_top1"] = f"{row[M.TEST_TOP1]:.2f}"
        text.append(f"test top-1 {row[M.TEST_TOP1]:.2f} %")
    text.append(f"{macs / 1e6:.2f} M MACs")
    if row.get(M.FLOPS_PLAIN):
        text[-1] += f" ({100 * macs / row[M.FLOPS_PLAIN]:.1f} % of the plain ResNet's)"
    what = " ".join(x for x in (row.get("method"), row.get("backbone"), row.get("weight")) if x)
    description = f"{what or row['run_name']}: {', '.join(text)}; run {row['run_name']}"
    # MLflow aliases take letters, digits, _ and - only.
    alias = re.sub(r"[^\w-]", "_", row["run_name"])
    return alias, description, {k: v for k, v in tags.items() if v}
