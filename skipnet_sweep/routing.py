"""Routing or pruning: does a gated network choose its blocks per image?

SkipNet's claim (§1, §3, Fig. 10-11) is that the network picks, for each image, which blocks
to run. A network that closes the same blocks for every image is a statically pruned ResNet,
whatever its gates are. Both give the same mean MACs; only the per-image decisions tell them
apart, so this module reads them:

- ``routing_share``: the percentage of images whose set of executed blocks differs from the
  most common set (0 for a pruned or ungated network);
- ``routed_gates``: how many gates skip for some images and run for others, each by more than
  ``ROUTED_GATE_MARGIN`` of the images (a gate closed for 99.9 % of images is not routing);
- ``distinct_routes``: how many different sets of executed blocks occur.

A run *routes* when ``routing_share`` reaches ``ROUTING_MIN_SHARE`` and at least one gate is
routed; it *prunes* when it skips blocks without routing, and is *ungated* (or skips
nothing) otherwise.
"""

from __future__ import annotations

import numpy as np

from skipnet_sweep import metrics as M

# A gate counts as routed when it runs for more than this fraction of the images and skips for
# more than this fraction: below it the gate is, in effect, always open or always closed.
ROUTED_GATE_MARGIN = 0.02
# The share of images (percent) that must leave the most common route for a run to route.
ROUTING_MIN_SHARE = 5.0

ROUTES, PRUNES, NO_SKIP = "routes", "prunes", "no skip"


def routing_metrics(executed: np.ndarray) -> dict[str, float]:
    """The routing measure of one evaluation.

    Args:
        executed: (N, G) per-image decisions: bool for gated networks, the fraction of
            positions each unit ran at for halting ones (a route is then the exact row).

    Returns:
        ``routing_share`` (percent), ``routed_gates`` and ``distinct_routes``; zeros for a
        network without gates or an empty set.
    """
    ex = np.asarray(executed)
    if ex.ndim != 2 or ex.shape[0] == 0 or ex.shape[1] == 0:
        return {M.ROUTING_SHARE: 0.0, M.ROUTED_GATES: 0.0, M.DISTINCT_ROUTES: 1.0}
    _, counts = np.unique(ex, axis=0, return_counts=True)
    run_ratio = ex.astype(np.float64).mean(0)
    routed = (run_ratio > ROUTED_GATE_MARGIN) & (run_ratio < 1 - ROUTED_GATE_MARGIN)
    return {
        M.ROUTING_SHARE: float(100.0 * (1 - counts.max() / ex.shape[0])),
        M.ROUTED_GATES: float(routed.sum()),
        M.DISTINCT_ROUTES: float(len(counts)),
    }


def routing_kind(metrics: dict[str, float]) -> str:
    """``routes``, ``prunes`` or ``no skip`` for a run's metrics (as ``routing_metrics``
    gives them, beside ``skipped_blocks_mean``); a run without the measure (an old run) is
    judged from what it has."""
    if not metrics.get(M.SKIPPED_MEAN):
        return NO_SKIP
    share = metrics.get(M.ROUTING_SHARE, 0.0) or 0.0
    gates = metrics.get(M.ROUTED_GATES, 0.0) or 0.0
    return ROUTES if share >= ROUTING_MIN_SHARE and gates >= 1 else PRUNES


def describe_routing(metrics: dict[str, float]) -> str:
    """The routing measure in words, for the end-of-stage line and ``train eval``."""
    kind = routing_kind(metrics)
    if kind == NO_SKIP:
        return "skips no block"
    share = metrics.get(M.ROUTING_SHARE, 0.0)
    gates, routes = metrics.get(M.ROUTED_GATES, 0.0), metrics.get(M.DISTINCT_ROUTES, 1.0)
    if kind == PRUNES:
        return (
            f"prunes: the same blocks skipped for {100 - share:.0f}% of images "
            f"({gates:.0f} gates routed)"
        )
    return (
        f"routes per image: {share:.1f}% off the most common route, {gates:.0f} gates "
        f"routed, {routes:.0f} distinct routes"
    )
