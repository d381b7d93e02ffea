"""Pareto frontier and hypervolume on hand-made point sets with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skipnet_sweep.pareto import (
    FASTER,
    NOT_FASTER,
    TOO_NOISY,
    comparable_latency,
    format_hypervolume,
    hypervolume,
    interval_front,
    latency_intervals,
    normalised_hypervolume,
    pareto_front,
    pareto_mask,
    speedup_verdict,
)


def test_single_point_is_its_own_frontier() -> None:
    assert pareto_front([(10.0, 90.0)]) == [0]
    assert hypervolume([(10.0, 90.0)], ref_macs=30.0) == pytest.approx(20.0 * 90.0)


def test_empty_and_all_nan() -> None:
    assert pareto_front([]) == []
    assert pareto_front([(math.nan, 90.0), (10.0, math.nan)]) == []
    assert hypervolume([], ref_macs=10.0) == 0.0
    assert hypervolume([(math.nan, 50.0)], ref_macs=10.0) == 0.0


def test_dominated_points_are_dropped_and_front_is_sorted_by_macs() -> None:
    points = [
        (30.0, 93.0),  # 0 front
        (10.0, 90.0),  # 1 front
        (20.0, 89.0),  # 2 dominated by 1
        (20.0, 92.0),  # 3 front
        (35.0, 92.5),  # 4 dominated by 0
    ]
    assert pareto_front(points) == [1, 3, 0]
    assert pareto_mask(points) == [True, True, False, True, False]


def test_ties_in_one_coordinate() -> None:
    # Same MACs, different accuracy: the less accurate is dominated.
    assert pareto_front([(10.0, 90.0), (10.0, 91.0)]) == [1]
    # Same accuracy, different MACs: the costlier is dominated.
    assert pareto_front([(12.0, 90.0), (10.0, 90.0)]) == [1]


def test_exact_duplicates_are_all_on_the_frontier() -> None:
    points = [(10.0, 90.0), (20.0, 95.0), (10.0, 90.0), (20.0, 95.0), (20.0, 94.0)]
    assert pareto_front(points) == [0, 2, 1, 3]
    # Duplicates add no area: same as the frontier without them.
    assert hypervolume(points, ref_macs=30.0) == pytest.approx(
        hypervolume([(10.0, 90.0), (20.0, 95.0)], ref_macs=30.0)
    )


def test_nan_points_are_excluded_but_keep_indices() -> None:
    points = [(math.nan, 99.0), (10.0, 90.0), (5.0, math.inf), (20.0, 92.0)]
    assert pareto_front(points) == [1, 3]


def test_accepts_numpy_arrays() -> None:
    arr = np.array([[10.0, 90.0], [20.0, 92.0], [15.0, 80.0]])
    assert pareto_front(arr) == [0, 1]


def test_hypervolume_staircase() -> None:
    # Frontier (10, 90), (20, 92), (30, 93) with reference (40, 0):
    #   strip 0..90   from 10 to 40: 30 * 90 = 2700
    #   strip 90..92  from 20 to 40: 20 *  2 =   40
    #   strip 92..93  from 30 to 40: 10 *  1 =   10
    points = [(10.0, 90.0), (30.0, 93.0), (20.0, 92.0), (25.0, 91.0)]
    assert hypervolume(points, ref_macs=40.0) == pytest.approx(2750.0)
    # A raised accuracy floor cuts the lowest strip: 30 * (90 - 50) + 40 + 10.
    assert hypervolume(points, ref_macs=40.0, ref_top1=50.0) == pytest.approx(1250.0)


def test_points_outside_the_reference_box_add_nothing() -> None:
    inside = [(10.0, 90.0), (20.0, 92.0)]
    # (50, 99) costs more than ref_macs; (5, -1) is below ref_top1.
    outside = [(50.0, 99.0), (5.0, -1.0)]
    # (10, 90): 30 * 90 = 2700; (20, 92): 20 * 2 = 40.
    assert hypervolume(inside + outside, ref_macs=40.0) == pytest.approx(2740.0)
    # On the boundary: a point at exactly ref_macs spans zero width.
    assert hypervolume([(40.0, 99.0)], ref_macs=40.0) == 0.0


def test_costlier_point_outside_box_does_not_raise_the_level() -> None:
    # (50, 99) is on the frontier of all points but lies beyond ref_macs: it must not lift
    # the accuracy level the inside points are measured from. Area: (40 - 5) * 95.
    points = [(10.0, 90.0), (5.0, 95.0), (50.0, 99.0)]
    assert pareto_front(points) == [1, 2]
    assert hypervolume(points, ref_macs=40.0) == pytest.approx(35.0 * 95.0)


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="expected"):
        pareto_front([(1.0, 2.0, 3.0)])
    with pytest.raises(ValueError, match="finite"):
        hypervolume([(1.0, 2.0)], ref_macs=math.nan)


def test_normalised_hypervolume_is_a_fraction_of_the_plain_box() -> None:
    # Box: 100 % x 40 MACs = 4000. The staircase above covers 2750 of it.
    points = [(10.0, 90.0), (30.0, 93.0), (20.0, 92.0), (25.0, 91.0)]
    assert normalised_hypervolume(points, plain_macs=40.0) == pytest.approx(2750.0 / 4000.0)
    # The ideal point (0 MACs, 100 %) fills the box; the plain ResNet itself adds nothing.
    assert normalised_hypervolume([(0.0, 100.0)], plain_macs=40.0) == pytest.approx(1.0)
    assert normalised_hypervolume([(40.0, 95.0)], plain_macs=40.0) == 0.0
    # Independent of the MACs unit: the same points in thousands give the same number.
    scaled = [(m * 1e3, t) for m, t in points]
    assert normalised_hypervolume(scaled, plain_macs=40e3) == pytest.approx(0.6875)
    # A top-1 past 100 cannot push the fraction past 1.
    assert normalised_hypervolume([(0.0, 150.0)], plain_macs=40.0) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_normalised_hypervolume_needs_positive_plain_macs(bad: float) -> None:
    with pytest.raises(ValueError, match="plain_macs must be a finite positive"):
        normalised_hypervolume([(1.0, 50.0)], plain_macs=bad)


def test_format_hypervolume() -> None:
    assert format_hypervolume(0.71249) == "HV 0.712"
    assert format_hypervolume(0.5996) == "HV 0.600"
    assert format_hypervolume(1.0) == "HV 1.000"


def test_comparable_latency_puts_every_run_on_its_plain_references_scale() -> None:
    # Three runs, each timed beside its own plain ResNet (10, 20 and 30 ms: three loads).
    got = comparable_latency([5.0, 20.0, 60.0, None, 4.0], [10.0, 20.0, 30.0, 20.0, None])
    assert got[:3] == [pytest.approx(10.0), pytest.approx(20.0), pytest.approx(40.0)]
    assert math.isnan(got[3]) and math.isnan(got[4])  # a timing missing: no place on the axis
    assert all(math.isnan(v) for v in comparable_latency([1.0], [None]))


def test_comparable_latency_keeps_each_backbone_on_its_own_scale() -> None:
    """A deeper backbone stays slower: one scale for all would put the plain ResNet-110 at
    the plain ResNet-38's time (both ratio 1)."""
    lat, ref = [10.0, 6.0, 40.0, 24.0], [10.0, 10.0, 40.0, 40.0]
    arch = ["r38", "r38", "r110", "r110"]
    assert comparable_latency(lat, ref, arch) == pytest.approx([10.0, 6.0, 40.0, 24.0])
    assert comparable_latency(lat, ref) == pytest.approx([25.0, 15.0, 25.0, 15.0])
    with pytest.raises(ValueError, match="3 groups for 4 runs"):
        comparable_latency(lat, ref, arch[:3])


# --- timings with their noise -------------------------------------------------------------


def test_a_speed_up_is_called_only_beyond_its_interquartile_range() -> None:
    assert speedup_verdict(1.3, 1.1, 1.5) == FASTER
    assert speedup_verdict(0.9, 0.8, 1.0) == NOT_FASTER
    # The identical runs (0.01x and 1.53x): one noisy timing decides nothing.
    assert speedup_verdict(1.53, 0.01, 2.0) == TOO_NOISY
    assert speedup_verdict(0.8, None, None) == NOT_FASTER  # timed before quartiles: the median
    assert speedup_verdict(None, None, None) is None


def test_latency_intervals_put_the_quartiles_on_the_frontiers_scale() -> None:
    # Two runs beside plain times 10 and 20 ms (the scale: their median, 15 ms).
    (lo, value, hi), (_, other, _) = latency_intervals(
        [5.0, 40.0], [10.0, 20.0], None, [(1.6, 2.5), (None, None)]
    )
    assert value == pytest.approx(7.5) and other == pytest.approx(30.0)
    assert (lo, hi) == pytest.approx((15.0 / 2.5, 15.0 / 1.6))
    assert latency_intervals([40.0], [20.0])[0] == pytest.approx((40.0, 40.0, 40.0))


def test_the_latency_frontier_drops_only_runs_beaten_beyond_the_noise() -> None:
    top1 = [90.0, 89.0, 88.0, 91.0]
    # Run 1 is slower than run 0 on its median but their intervals overlap: both stay.
    # Run 2 is less accurate and slower than run 0 beyond both intervals: dropped.
    intervals = [(10.0, 12.0), (11.0, 14.0), (13.0, 15.0), (20.0, 21.0)]
    assert interval_front(intervals, top1) == [0, 1, 3]
    # Without noise, the classic frontier.
    points = [(10.0, 90.0), (11.0, 89.0), (13.0, 88.0), (20.0, 91.0)]
    exact = [(x, x) for x, _ in points]
    assert interval_front(exact, top1) == pareto_front(points) == [0, 3]
    assert interval_front([(math.nan, math.nan)], [90.0]) == []
