"""The paper's figures, from a sweep's runs (figures 4-11 and Table 3): one import for the
report and for users. Each figure family lives in its own module:

- :mod:`.frontier_macs`: top-1 vs. MACs, the frontier and published baselines (Fig. 7);
  :mod:`.frontier_latency`: vs. measured latency; either for several studies at once (one
  frontier each), with what they share in :mod:`.frontier`.
- :mod:`.tradeoff`: top-1 and MACs vs. alpha (Fig. 6/8), the training variants (Fig. 9).
- :mod:`.reduction`: SP vs. HRL+SP reduction (Fig. 4/5), hard vs. soft gating (Table 3).
- :mod:`.skipping`: skipped blocks per class and their histogram (Fig. 11).
- :mod:`.images`: the easiest and hardest images (Fig. 10).

Their look (one colour and marker per method, units, names, titles) is :mod:`.style`;
what they share otherwise is :mod:`.common`.

Every function takes data (the DataFrame of :func:`skipnet_sweep.reporting.runs.load_runs`,
an artifact table, arrays) and an output path *stem*, writes ``<stem>.png`` and
``<stem>.pdf`` (tables: ``.md`` and ``.csv``) and returns the data behind the figure, so
tests can check the numbers and not only that a picture exists. A figure the data cannot
support raises :class:`NotEnoughData`, whose message says why.
"""

from __future__ import annotations

from skipnet_sweep.reporting.common import (
    FigureData,
    NotEnoughData,
    finite_rows,
    plain_by_backbone,
)
from skipnet_sweep.reporting.frontier_latency import LatencyData, latency_figure
from skipnet_sweep.reporting.frontier_macs import ParetoData, pareto_figure
from skipnet_sweep.reporting.images import easy_hard_grid
from skipnet_sweep.reporting.reduction import hard_soft_table, reduction_figure, select_hrl_runs
from skipnet_sweep.reporting.skipping import (
    per_class_figure,
    per_class_from_samples,
    skip_histogram_figure,
)
from skipnet_sweep.reporting.tradeoff import alpha_tradeoff_figure, variants_figure

__all__ = [
    "FigureData",
    "NotEnoughData",
    "ParetoData",
    "alpha_tradeoff_figure",
    "easy_hard_grid",
    "finite_rows",
    "hard_soft_table",
    "pareto_figure",
    "latency_figure",
    "LatencyData",
    "per_class_figure",
    "per_class_from_samples",
    "plain_by_backbone",
    "reduction_figure",
    "select_hrl_runs",
    "skip_histogram_figure",
    "variants_figure",
]
