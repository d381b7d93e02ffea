"""The cache of shared pre-training results (plain baselines, SkipNet SP), verified on reuse.

A cache entry is a checkpoint under the job's key (``Plan.checkpoint``) that also records the
job's full stage config and a sha256 of its weights. It is reused only when both match the
job asking for it; an unreadable, foreign or altered entry is reported in one line, moved
aside (never deleted) and trained again.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import torch

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import Job
from skipnet_sweep.stages import CheckpointError, StageConfig, load_checkpoint
from skipnet_sweep.stages.checkpoint import save_checkpoint
from skipnet_sweep.sweep.storage import Storage

RECORD = "cache"  # the payload key of the entry's own record


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the weights' names, shapes, dtypes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def publish(
    src: Path,
    model_file: str,
    entry: str | Path,
    job: Job,
    store: Storage,
    producer: str | None = None,
) -> dict:
    """Copy a finished job's weights (``src / model_file``) and evaluation files into the
    cache entry ``entry`` of ``store``, with the job's record; the weights last (and
    atomically on a local disk), so an entry exists only once it is complete. ``producer``
    (the Tune trial that trained it) goes into the record, so that trial, retried after it
    published, can tell its own entry from one it reuses. Returns the payload."""
    payload = {k: v for k, v in load_checkpoint(src / model_file).items() if k != "format"}
    payload[RECORD] = {
        "key": job.key,
        "stage": job.config.to_dict(),
        "sha256": weights_digest(payload["state_dict"]),
        "producer": producer,
    }
    folder = _parent(entry)
    if (src / M.ARTIFACT_DIR).is_dir():
        store.upload(src / M.ARTIFACT_DIR, _child(folder, M.ARTIFACT_DIR))
    if store.is_local:
        save_checkpoint(entry, payload)
    else:
        with tempfile.TemporaryDirectory() as d:
            store.upload(save_checkpoint(Path(d) / Path(str(entry)).name, payload), entry)
    return payload


def _parent(path: str | Path) -> str | Path:
    return Path(path).parent if isinstance(path, Path) else str(path).rsplit("/", 1)[0]


def _child(folder: str | Path, name: str) -> str | Path:
    return Path(folder) / name if isinstance(folder, Path) else f"{folder}/{name}"


def verify(cache: str | Path, job: Job, store: Storage) -> tuple[dict | None, str | None]:
    """Read a cache entry for ``job``: (payload, None) when it is the job's own, else
    (None, why not) in one line."""
    try:
        with store.local_copy(cache) as local:
            payload = load_checkpoint(local)
    except CheckpointError as err:
        return None, str(err).replace(str(local), str(cache))
    except OSError as err:  # the storage could not hand it over
        return None, f"{cache}: unreadable ({err})"
    record = payload.get(RECORD)
    if not isinstance(record, dict) or not {"key", "stage", "sha256"} <= set(record):
        return None, f"{cache}: no cache record (written by another tool or version)"
    if record["key"] != job.key:
        return None, f"{cache}: made for key {record['key']}, not {job.key}"
    try:
        stored = StageConfig.from_dict(record["stage"])
    except (TypeError, ValueError, KeyError) as err:
        return None, f"{cache}: its stage config does not load ({err})"
    if stored.key() != job.key:
        return None, f"{cache}: its stage config is another job's (key {stored.key()})"
    if weights_digest(payload["state_dict"]) != record["sha256"]:
        return None, f"{cache}: its weights do not match their sha256"
    return payload, None


def set_aside(cache: str | Path, store: Storage) -> str | Path:
    """Move a rejected entry's folder out of the way (kept for inspection); returns where."""
    folder = _parent(cache)
    aside = f"{folder}.rejected-{time.strftime('%Y%m%d-%H%M%S')}"
    store.move(folder, aside)
    return Path(aside) if isinstance(folder, Path) else aside
