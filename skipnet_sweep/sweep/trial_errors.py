"""The one line that says why a Tune trial failed, for the terminal and for MLflow."""

from __future__ import annotations

from pathlib import Path


def error_line(trial) -> str:
    """The last line of a trial's error (its exception). Tune writes the error to the
    trial's folder in the driver's staging path and copies it to the storage, where
    ``Trial.get_error`` reads, at its next sync: often after the callbacks run."""
    local = getattr(trial, "error_file", None)
    text = Path(local).read_text() if local and Path(local).is_file() else trial.get_error()
    lines = str(text or "").strip().splitlines()
    return lines[-1] if lines else "the trial errored"
