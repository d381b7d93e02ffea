"""The routing measure: per-image routing told apart from static pruning."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from skipnet_sweep import metrics as M
from skipnet_sweep.data import build_loaders
from skipnet_sweep.flops import count_costs
from skipnet_sweep.models import build_model
from skipnet_sweep.models.gates import gate_heads
from skipnet_sweep.routing import (
    NO_SKIP,
    PRUNES,
    ROUTES,
    routing_kind,
    routing_metrics,
)
from skipnet_sweep.stages.evaluate import evaluate
from skipnet_sweep.sweep.driver import ROUTING, SweepResult, frontier_table


def test_a_statically_pruned_network_scores_zero():
    ex = np.ones((100, 4), dtype=bool)
    ex[:, 1] = False  # block 2 closed for every image: pruning
    m = routing_metrics(ex)
    assert m == {M.ROUTING_SHARE: 0.0, M.ROUTED_GATES: 0.0, M.DISTINCT_ROUTES: 1.0}
    assert routing_kind({**m, M.SKIPPED_MEAN: 1.0}) == PRUNES


def test_images_off_the_most_common_route_and_routed_gates_are_counted():
    ex = np.ones((100, 3), dtype=bool)
    ex[:30, 0] = False  # 30 images skip block 1
    ex[:10, 2] = False  # 10 of them skip block 3 too
    m = routing_metrics(ex)
    assert m[M.ROUTING_SHARE] == pytest.approx(30.0)  # 70 images take the common route
    assert m[M.ROUTED_GATES] == 2
    assert m[M.DISTINCT_ROUTES] == 3
    assert routing_kind({**m, M.SKIPPED_MEAN: 0.4}) == ROUTES


def test_a_gate_that_almost_never_changes_is_not_routed():
    ex = np.ones((1000, 2), dtype=bool)
    ex[:, 0] = False
    ex[:5, 0] = True  # open for 0.5 % of the images: within the margin
    m = routing_metrics(ex)
    assert m[M.ROUTED_GATES] == 0
    assert m[M.ROUTING_SHARE] == pytest.approx(0.5)
    assert routing_kind({**m, M.SKIPPED_MEAN: 1.0}) == PRUNES


def test_ungated_and_halting_networks():
    assert routing_metrics(np.ones((10, 0), dtype=bool))[M.ROUTING_SHARE] == 0.0
    assert routing_kind({M.SKIPPED_MEAN: 0.0, M.ROUTING_SHARE: 0.0}) == NO_SKIP
    # Halting networks: the fraction of positions each unit ran at; each row is a route.
    frac = np.array([[1.0, 0.5], [1.0, 0.5], [1.0, 0.25], [1.0, 1.0]])
    m = routing_metrics(frac)
    assert m[M.ROUTING_SHARE] == pytest.approx(50.0)
    assert m[M.ROUTED_GATES] == 1  # unit 2 ran 56 % of the positions on average
    assert m[M.DISTINCT_ROUTES] == 3


def _forced_network(route: bool):
    """A ResNet-8 with FFGate-II whose first gate is always open and whose second is closed
    for every image (``route=False``) or for about half of them, chosen per image from its
    features (``route=True``)."""
    torch.manual_seed(0)
    model = build_model("cifar_resnet8", gate="ff2", in_channels=1, num_classes=10).eval()
    _, loader, info = build_loaders(
        "synthetic",
        batch_size=64,
        synthetic_size=256,
        synthetic_channels=1,
        synthetic_image_size=16,
    )
    heads = gate_heads(model.gates)
    with torch.no_grad():
        heads[0].weight.zero_()
        heads[0].bias.fill_(10.0)
        if route:
            # Centre gate 2's logits on their median: the images on either side differ.
            logits = []
            hook = heads[1].register_forward_hook(lambda m, i, out: logits.append(out))
            model(torch.cat([x for x, _ in loader]), mode="threshold")
            hook.remove()
            heads[1].bias.sub_(logits[0].median())
        else:
            heads[1].weight.zero_()
            heads[1].bias.fill_(-10.0)
    return model, loader, count_costs(model, (info.in_channels, *info.input_size))


@pytest.mark.parametrize("route", [False, True])
def test_evaluation_reports_routing_for_networks_forced_to_route_or_prune(route):
    model, loader, costs = _forced_network(route)
    m = evaluate(model, loader, costs).metrics
    assert m[M.SKIPPED_MEAN] > 0
    if route:
        assert 40 <= m[M.ROUTING_SHARE] <= 60
        assert m[M.ROUTED_GATES] == 1 and m[M.DISTINCT_ROUTES] == 2
        assert routing_kind(m) == ROUTES
    else:
        assert m[M.ROUTING_SHARE] == 0 and m[M.ROUTED_GATES] == 0
        assert m[M.SKIP_RATIO] == pytest.approx(0.5)  # one of two gates closed for all
        assert routing_kind(m) == PRUNES


def _row(name, method, top1, macs, skipped, share, gates, stage="hrl"):
    m = {M.SKIPPED_MEAN: skipped, M.ROUTING_SHARE: share, M.ROUTED_GATES: gates}
    return {
        "run_id": name,
        "run_name": name,
        "stage": stage,
        "method": method,
        "backbone": "cifar_resnet20",
        "weight": "",
        M.TOP1: top1,
        M.FLOPS_MEAN: macs,
        M.FLOPS_PLAIN: 100.0,
        M.speedup(1): None,
        **m,
        ROUTING: routing_kind(m),
        "pareto": False,
        "pareto_latency": False,
    }


def test_the_table_marks_pruning_and_names_a_skipping_run_best():
    """SP that closes no gate is the most accurate SkipNet; the best SkipNet is the best
    run that skips, and a statically pruned run is marked."""
    plain = _row("plain", "plain", 89.0, 100.0, 0.0, 0.0, 0.0, stage="baseline")
    sp = _row("sp", "skipnet-rnn", 88.5, 100.03, 0.0, 0.0, 0.0, stage="sp")
    pruned = _row("pruned", "skipnet-rnn", 85.0, 77.0, 2.0, 0.0, 0.0)
    routed = _row("routed", "skipnet-rnn", 88.0, 75.0, 2.1, 42.0, 3.0)
    rows = [plain, sp, pruned, routed]
    for r in (plain, routed):
        r["pareto"] = True
    result = SweepResult("p", frontier=[routed, plain], rows=rows, trials=4)
    plan = SimpleNamespace(
        space=SimpleNamespace(name="s", dataset=SimpleNamespace(name="d"), backbones=["b"]),
        data=SimpleNamespace(selection_set="test"),
    )
    lines = frontier_table(result, plan).splitlines()
    header = lines[1]
    assert "routed" in header.split()
    by_run = {line.split()[0]: line for line in lines[2:] if line.split()}
    assert by_run["routed"].rstrip().endswith("best SkipNet")
    assert "42 %" in by_run["routed"]
    assert "sp" not in by_run  # not on a frontier, and not best: it skips nothing
    result.rows.append(pruned)
    result.frontier.append(pruned)
    lines = frontier_table(result, plan).splitlines()
    by_run = {line.split()[0]: line for line in lines[2:] if line.split()}
    assert "(pruned)" in by_run["pruned"] and "(pruned)" not in by_run["routed"]


def test_no_best_skipnet_when_no_run_skips():
    plain = _row("plain", "plain", 89.0, 100.0, 0.0, 0.0, 0.0, stage="baseline")
    sp = _row("sp", "skipnet-rnn", 88.5, 100.03, 0.0, 0.0, 0.0, stage="sp")
    plain["pareto"] = True
    result = SweepResult("p", frontier=[plain], rows=[plain, sp], trials=2)
    plan = SimpleNamespace(
        space=SimpleNamespace(name="s", dataset=SimpleNamespace(name="d"), backbones=["b"]),
        data=SimpleNamespace(selection_set="test"),
    )
    table = frontier_table(result, plan)
    assert "best SkipNet" not in table
    assert "no SkipNet run skips a block" in table
