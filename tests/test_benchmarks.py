"""The benchmark scripts run (their --smoke-test), print a goal verdict per row and valid JSON.

Timings are never asserted here: the figures live in docs/benchmarks.md.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "script",
    [
        "bench_inference.py",
        "bench_train_step.py",
        "bench_layout.py",
        "bench_fold.py",
        "bench_precision.py",
    ],
)
def test_smoke_test_runs_and_reports_json(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke-test", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    assert payload, "the JSON report is empty"


def test_gpu_benchmark_smoke_test_reports_every_variant() -> None:
    """Runs on CPU where there is no GPU: both setups, both precisions, SP and HRL beside the
    plain step, and sparse inference at both batch sizes."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--smoke-test", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    train = {(r["setup"], r["dtype"], r["gate"], r["stage"]): r for r in payload["train"]}
    assert set(train) == {
        (setup, dtype, gate, stage)
        for setup in ("cifar", "imagenet")
        for dtype in ("fp32", "bf16")
        for gate, stage in (("-", "baseline"), ("rnn", "sp"), ("rnn", "hrl"))
    }
    for (setup, dtype, gate, stage), r in train.items():
        plain = train[(setup, dtype, "-", "baseline")]
        if gate != "-":
            assert r["ratio"] == pytest.approx(r["ms_median"] / plain["ms_median"])
        fp32 = train[(setup, "fp32", gate, stage)]
        if dtype == "bf16":
            assert r["bf16_speedup"] == pytest.approx(fp32["ms_median"] / r["ms_median"])
    inference = payload["inference"]
    assert [(r["setup"], r["batch"]) for r in inference] == [
        ("cifar", 1),
        ("cifar", 4),
        ("imagenet", 1),
        ("imagenet", 4),
    ]
    for r in inference:
        assert r["speedup"] == pytest.approx(r["plain_ms"] / r["ms"])
        assert 0 <= r["skip_fraction"] <= 1 and r["flops_saving"] < 1
    # Over a batch of 4 the biases were set to skip about half the gated blocks.
    assert all(0 < r["skip_fraction"] < 1 for r in inference if r["batch"] == 4)
