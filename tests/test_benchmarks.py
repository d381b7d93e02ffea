"""The benchmark scripts run (their --smoke-test), print a goal verdict per row and valid JSON.

Timings are never asserted here: the figures live in docs/benchmarks.md.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["bench_inference.py", "bench_train_step.py"])
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
