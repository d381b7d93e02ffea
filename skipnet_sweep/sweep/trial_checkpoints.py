"""A trial's checkpoint folders: what each holds, its manifest (``_seal``: a copy cut short
is seen as such), the local copies a trial reads (``_restored``, ``_local_init``) and the
patch of Tune's restore (``_RestoreSurviving``) that resumes a trial from its newest whole
checkpoint when Tune's saved state names an older or a deleted one."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from skipnet_sweep.stages import StageConfig
from skipnet_sweep.sweep import ray_private
from skipnet_sweep.sweep.storage import Storage

STATE_FILE = "checkpoint.pt"  # resumable state (weights + optimiser + step)
FINAL_FILE = "final.json"  # a finished trial's final result
METRICS_FILE = "metrics.json"  # the report (metrics, step) a checkpoint was made with
MANIFEST_FILE = "manifest.json"  # every other file of a checkpoint and its size (``_seal``)


@contextlib.contextmanager
def _restored(checkpoint) -> Iterator[Path | None]:
    """The folder of a Tune or Train ``checkpoint`` on the local disk for the block (None
    without one): a local checkpoint in place, a remote one downloaded to a temporary folder
    that is removed after it unless the process is killed (``to_directory()`` would leave a
    copy in /tmp for good)."""
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as local:
        yield Path(local)


def _resume_file(restored: Path | None) -> Path | None:
    state = restored / STATE_FILE if restored is not None else None
    return state if state is not None and state.is_file() else None


def _write_state(folder: Path, save, report: dict) -> None:
    """A checkpoint folder: the resumable state (``save``) and the evaluation it is
    reported with, which a resumed job reads back (``_reported``)."""
    save(folder / STATE_FILE)
    (folder / METRICS_FILE).write_text(json.dumps(report))


def _seal(folder: Path) -> None:
    """Writes the checkpoint folder's manifest: every other file in it and its size. Tune's
    upload keeps no order, so a copy cut short lacks a file or has one at another size
    (``_whole``)."""
    sizes = {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(sizes))


def _whole(fs, path: str) -> bool:
    """Whether the checkpoint folder at ``path`` on the pyarrow filesystem ``fs`` has its
    manifest and every file of it at its size."""
    import pyarrow.fs

    try:
        with fs.open_input_stream(f"{path}/{MANIFEST_FILE}") as f:
            sizes = json.loads(f.read())
    except (OSError, ValueError):
        return False
    infos = fs.get_file_info([f"{path}/{name}" for name in sizes])
    return all(
        info.type == pyarrow.fs.FileType.File and info.size == sizes[name]
        for info, name in zip(infos, sizes, strict=True)
    )


# Tune's checkpoint folder names (ray/train/_internal/storage.py,
# ``StorageContext._make_checkpoint_dir_name``: ``checkpoint_{index:06d}``).
_CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")


def _written(checkpoint) -> list[tuple[int, str]]:
    """(index, path) of every checkpoint folder of the trial that ``checkpoint`` belongs to,
    newest first."""
    import pyarrow.fs

    fs = checkpoint.filesystem
    parent = checkpoint.path.rstrip("/").rpartition("/")[0]
    found = []
    for info in fs.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True)):
        name = _CHECKPOINT_DIR.fullmatch(info.base_name)
        if info.type == pyarrow.fs.FileType.Directory and name:
            found.append((int(name.group(1)), info.path))
    return sorted(found, reverse=True)


def _surviving(checkpoint):
    """The newest whole checkpoint of the trial at or after ``checkpoint`` (a Tune
    ``Checkpoint`` that Tune's state names), or ``checkpoint`` itself if there is none.

    Tune deletes a trial's older checkpoints as soon as newer ones arrive
    (``CheckpointConfig(num_to_keep)``) but uploads its experiment state, which names the
    latest, in the background afterwards (ray/tune/execution/experiment_state.py,
    ``sync_up_experiment_state``): a driver killed in between leaves state naming an older
    checkpoint, or a deleted one, which Tune's restore refuses ("does not exist on storage
    anymore") however many retries it is given. The trial's newer checkpoints are where it
    got to."""
    named = _CHECKPOINT_DIR.fullmatch(checkpoint.path.rstrip("/").rpartition("/")[2])
    if named is None:
        return checkpoint
    for index, path in _written(checkpoint):
        if index < int(named.group(1)):
            break
        if _whole(checkpoint.filesystem, path):
            if index == int(named.group(1)):
                return checkpoint
            from ray import tune

            print(
                f"{checkpoint.path}: Tune's saved state predates checkpoint_{index:06d}; "
                "resuming from it, the trial's newest whole checkpoint",
                file=sys.stderr,
            )
            return tune.Checkpoint(path, filesystem=checkpoint.filesystem)
    return checkpoint


# Checkpoints this process restored a trial from in place of the older one Tune's state
# named (``_RestoreSurviving``): the trial reports their result again (``trials._run_trial``).
_SWAPPED: set[str] = set()


def take_swapped(path: str | None) -> bool:
    """Whether this process restored a trial from ``path`` in place of the checkpoint
    Tune's state named; forgets every such checkpoint, for the next trial of the process."""
    swapped = path is not None and path in _SWAPPED
    _SWAPPED.clear()
    return swapped


def _index(checkpoint) -> int:
    return int(_CHECKPOINT_DIR.fullmatch(checkpoint.path.rstrip("/").rpartition("/")[2])[1])


class _RestoreSurviving:
    """Mixed into ``stage_trial``'s Tune trainable (``ray_private.mix_into_trainable``):
    restores a trial from ``_surviving`` of the checkpoint Tune's state
    names, and numbers its next checkpoint after every folder the trial has written. (Tune
    numbers it after the checkpoint its state names, ray/tune/experiment/trial.py
    ``on_checkpoint``, and would write the next ones into the newer folders.)

    Tune counts the trial's iterations from the named checkpoint's result
    (ray/tune/trainable/trainable.py, ``restore``). Every evaluation of a trial carries a
    checkpoint, so the newer one restored came at least that many reports later; its result,
    reported again, takes at least the iteration it had (the training logs reported between
    evaluations, which carry none, are not counted; ASHA's time is the evaluation count each
    result carries, ``searcher.EVALUATION``, not Tune's iterations)."""

    def restore(self, checkpoint_path):
        named = getattr(checkpoint_path, "checkpoint", None)  # a _TrainingResult
        if named is None:
            return super().restore(checkpoint_path)
        found = checkpoint_path.checkpoint = _surviving(named)
        restored = super().restore(checkpoint_path)
        if found is not named:
            _SWAPPED.add(found.path)
            ray_private.advance_iteration(self, _index(found) - _index(named) - 1)
        written = _written(named)
        if written:
            ray_private.number_checkpoints_after(self, written[0][0])
        return restored


def _reported(resume: Path | None) -> dict | None:
    """The report (metrics and step) of the checkpoint whose state is ``resume``."""
    if resume is None or not (resume.parent / METRICS_FILE).is_file():
        return None
    return json.loads((resume.parent / METRICS_FILE).read_text())


@contextlib.contextmanager
def _local_init(stage: StageConfig, store: Storage, resume: Path | None = None):
    """``stage`` with its initial checkpoint on the local disk (downloaded from object
    storage for the duration of the block); not fetched for a job that resumes from its
    own state (``resume``), which ``run_stage`` reads instead."""
    if stage.init is None or resume is not None:
        yield stage
        return
    with store.local_copy(stage.init) as local:
        yield replace(stage, init=str(local))
