"""The terminal's frontier table (``driver.frontier_table``) on hand-made rows: what it
flags about timings, how it heads its columns and counts its rows."""

from __future__ import annotations

from types import SimpleNamespace

from skipnet_sweep import metrics as M
from skipnet_sweep.pareto import speedup_verdict
from skipnet_sweep.routing import routing_kind
from skipnet_sweep.sweep.driver import ROUTING, VERDICT, SweepResult, frontier_table


def row(name, method, top1, macs, speed=None, spread=(None, None), stage="hrl", weight=""):
    m = {M.SKIPPED_MEAN: 1.0 if macs < 100 else 0.0, M.ROUTING_SHARE: 30.0, M.ROUTED_GATES: 2}
    return {
        "run_id": name, "run_name": name, "stage": stage, "method": method,
        "backbone": "cifar_resnet20", "weight": weight, M.TOP1: top1, M.FLOPS_MEAN: macs,
        M.FLOPS_PLAIN: 100.0, M.speedup(1): speed, M.speedup_q1(1): spread[0],
        M.speedup_q3(1): spread[1], VERDICT: speedup_verdict(speed, *spread), **m,
        ROUTING: routing_kind(m), "pareto": True, "pareto_latency": False,
    }  # fmt: skip


def plan(selection: str = M.SELECTION_VAL):
    return SimpleNamespace(
        space=SimpleNamespace(
            name="s",
            dataset=SimpleNamespace(name="d", to_data_config=lambda: None),
            backbones=["cifar_resnet20"],
            latency=SimpleNamespace(repeats=20),
        ),
        data=SimpleNamespace(selection_set=selection),
    )


def lines_by_run(table: str) -> dict[str, str]:
    return {line.split()[0]: line for line in table.splitlines() if line.split()}


def test_no_faster_and_too_noisy_are_told_apart_by_the_timings_spread():
    slow = row("slow", "skipnet-rnn", 85.0, 60.0, 0.8, (0.7, 0.9))
    noisy = row("noisy", "skipnet-rnn", 86.0, 70.0, 0.9, (0.01, 1.53))
    fast = row("fast", "skipnet-rnn", 87.0, 80.0, 1.2, (1.1, 1.3))
    result = SweepResult("p", frontier=[slow, noisy, fast], rows=[slow, noisy, fast], trials=3)
    table = frontier_table(result, plan())
    by_run = lines_by_run(table)
    assert "0.80x (0.70-0.90) !" in by_run["slow"]
    assert "0.90x (0.01-1.53) ?" in by_run["noisy"]
    assert "1.20x (1.10-1.30)" in by_run["fast"] and "!" not in by_run["fast"]
    assert "median (interquartile range) over 20 timed rounds" in table
    assert "too noisy to tell" in table and "counted, not realised" in table
