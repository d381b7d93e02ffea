"""The terminal's frontier table (``frontier_table.frontier_table``) on hand-made rows: what it
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


def test_every_column_is_headed_in_words_and_the_title_counts_the_rows():
    plain = row("plain", "plain", 89.1, 100.0, 1.0, (0.9, 1.1), stage="baseline")
    hrl = row("hrl", "skipnet-rnn", 85.0, 77.0, weight="alpha=2")
    act = row("act", "act", 80.0, 60.0, weight="tau=0.05")
    act["pareto_latency"] = True
    sp = row("sp", "skipnet-rnn", 88.0, 99.0, stage="sp")
    sp["pareto"] = False
    result = SweepResult(
        "p", frontier=[act, hrl], latency_frontier=[act], rows=[plain, hrl, act, sp], trials=4
    )
    title, header, *body = frontier_table(result, plan(M.SELECTION_VAL)).splitlines()
    # Two frontier runs, the plain ResNet and the best SkipNet (sp): four rows of four runs.
    assert title.endswith(
        "(4 of 4 runs: 2 on a frontier (MACs 2, latency 1), the plain ResNet, the best SkipNet)"
    )
    table_rows = [line for line in body if line.split()[0] in {"plain", "hrl", "act", "sp"}]
    assert len(table_rows) == 4
    for words in ("alpha / tau", "val top-1 %", "% of plain MACs", "speed-up at batch 1 (IQR)",
                  "note"):  # fmt: skip
        assert words in header
    assert "b1" not in header.split() and "weight" not in header.split()
    by_run = lines_by_run("\n".join(table_rows))
    assert "alpha 2" in by_run["hrl"] and "tau 0.05" in by_run["act"]
    # One cost weight: its name heads the column, the rows give the value alone.
    only = SweepResult("p", frontier=[hrl], rows=[hrl], trials=1)
    title, header, *body = frontier_table(only, plan(M.SELECTION_TEST)).splitlines()
    assert "alpha" in header.split() and "test top-1 %" in header
    assert lines_by_run("\n".join(body))["hrl"].split()[2] == "2"
