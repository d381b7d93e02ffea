"""What a sweep ends with: one row per finished run, read from its MLflow run, and which rows
are on the MACs and the measured-latency frontiers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from skipnet_sweep import metrics as M
from skipnet_sweep.pareto import interval_front, latency_intervals, pareto_front, speedup_verdict
from skipnet_sweep.reporting.sweep_figures import LoggedFigures
from skipnet_sweep.routing import routing_kind

# A row's batch-1 latency on the scale its frontier is chosen on (``comparable_latency``),
# and the interval the timing's noise gives it (``latency_intervals``).
COMPARABLE_LATENCY = "latency_comparable_ms_b1"
LATENCY_INTERVAL = "latency_interval_ms_b1"
ROUTING = "routing"  # a row's ``routing_kind``: routes, prunes or no skip
VERDICT = "speed_verdict"  # a row's ``speedup_verdict`` at batch 1: faster, not faster, too noisy


@dataclass
class SweepResult:
    """What a sweep ended with.

    Attributes:
        parent_run_id: the MLflow parent run.
        frontier: rows (run name, method, backbone, weight, top1, flops_mean) on the frontier.
        failed: job ids that failed or never ran, with the reason.
        trials: number of finished runs (shared jobs included).
        hypervolume: of the frontier, as a share of the plain ResNet's box (top-1 in
            [0, 100] x MACs in [0, plain]), in [0, 1].
        latency_frontier: the rows on the frontier of top-1 against measured latency.
        rows: every finished run's row (the frontier's and the rest).
        figures: the frontier figures logged to the parent run (or why they were not).
    """

    parent_run_id: str
    frontier: list[dict] = field(default_factory=list)
    latency_frontier: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    trials: int = 0
    hypervolume: float = 0.0
    figures: LoggedFigures | None = None


def frontier_row(run) -> dict | None:
    """The row of an MLflow run of the sweep; None unless it finished with top-1 and MACs."""
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    if run.info.status != "FINISHED" or M.TOP1 not in m or M.FLOPS_MEAN not in m:
        return None
    # Runs logged before the tag carry alpha or tau.
    weight = t.get(M.TAG_COST_WEIGHT) or next(
        (k for k in (M.PARAM_ALPHA, M.PARAM_TAU) if k in p), ""
    )
    weight = weight if weight in p else ""
    return {
        "run_id": run.info.run_id,
        "run_name": t.get("mlflow.runName", run.info.run_id),
        "stage": t.get(M.TAG_STAGE, ""),
        "method": t.get(M.TAG_METHOD, ""),
        "backbone": p.get(M.PARAM_ARCH, ""),
        "weight": f"{weight}={float(p[weight]):g}" if weight else "",
        M.TOP1: m[M.TOP1],
        M.TEST_TOP1: m.get(M.TEST_TOP1),
        M.FLOPS_MEAN: m[M.FLOPS_MEAN],
        M.FLOPS_PLAIN: m.get(M.FLOPS_PLAIN, m[M.FLOPS_MEAN]),
        M.latency_ms(1): m.get(M.latency_ms(1)),
        M.latency_plain_ms(1): m.get(M.latency_plain_ms(1)),
        M.speedup(1): m.get(M.speedup(1)),
        M.speedup_q1(1): m.get(M.speedup_q1(1)),
        M.speedup_q3(1): m.get(M.speedup_q3(1)),
        VERDICT: speedup_verdict(
            m.get(M.speedup(1)), m.get(M.speedup_q1(1)), m.get(M.speedup_q3(1))
        ),
        M.SKIPPED_MEAN: m.get(M.SKIPPED_MEAN, 0.0),
        M.ROUTING_SHARE: m.get(M.ROUTING_SHARE),
        M.ROUTED_GATES: m.get(M.ROUTED_GATES),
        ROUTING: routing_kind(m),
    }


def mark_frontiers(rows: list[dict]) -> list[int]:
    """Mark each row ``pareto`` (on the MACs frontier) and ``pareto_latency`` (on the
    measured-latency one), with its comparable latency and interval; returns the indexes of
    the rows that were timed."""
    front = set(pareto_front([(r[M.FLOPS_MEAN], r[M.TOP1]) for r in rows]))
    # The frontier in measured latency too (batch 1), over the runs that were timed, each
    # against the plain ResNet timed beside it (``comparable_latency``); a run leaves it only
    # for one at least as accurate and faster beyond the noise of both timings.
    lat = latency_intervals(
        [r[M.latency_ms(1)] for r in rows],
        [r[M.latency_plain_ms(1)] for r in rows],
        [r["backbone"] for r in rows],  # one dataset per sweep
        [(r[M.speedup_q1(1)], r[M.speedup_q3(1)]) for r in rows],
    )
    for r, (lo, value, hi) in zip(rows, lat, strict=True):
        r[COMPARABLE_LATENCY], r[LATENCY_INTERVAL] = value, (lo, hi)
    timed = [i for i, (_, value, _) in enumerate(lat) if math.isfinite(value)]
    fast = {
        timed[j]
        for j in interval_front(
            [rows[i][LATENCY_INTERVAL] for i in timed], [rows[i][M.TOP1] for i in timed]
        )
    }
    for i, r in enumerate(rows):
        r["pareto"], r["pareto_latency"] = i in front, i in fast
    return timed
