"""The paths a space names: made absolute once, and checked on this machine (a dataset
folder, weights files, the storage folder, the MLflow store) without creating anything."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from skipnet_sweep.errors import SpaceError
from skipnet_sweep.sweep.space.schema import Space
from skipnet_sweep.yamlio import show

# A URI with a scheme (s3://bucket/runs) is not a local path: it is neither resolved nor
# checked here.
URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def absolute_paths(space: Space, source: str) -> Space:
    """Resolve relative paths against the directory the command runs in, once: Ray runs
    trials in other working directories, where ``./runs`` would mean something else. A
    URI (``s3://...``) is left as it is. The sweep id does not see these paths
    (``Space.identity``)."""

    def absolute(where: str, p: str | None) -> str | None:
        if p is None or URI_RE.match(p):
            return p
        try:
            return str(Path(p).expanduser().resolve())
        except (OSError, ValueError, RuntimeError) as err:
            raise SpaceError(f"{where}: {show(p)} is not a usable path ({err})") from None

    dataset = replace(space.dataset, root=absolute("dataset.root", space.dataset.root))
    weights = {
        arch: absolute(f"backbone_weights.{arch}", p) for arch, p in space.backbone_weights.items()
    }
    return replace(
        space,
        source=source,
        storage_path=absolute("storage_path", space.storage_path),
        dataset=dataset,
        backbone_weights=weights,
    )


def path_problems(space: Space) -> list[str]:
    """What this machine lacks to run ``space``, one line each (nothing is created):
    a dataset folder or backbone weights file that is missing, of the other kind or not
    readable; a storage folder that cannot be written; a tracking store MLflow does not
    open, or a local one (sqlite) whose folder cannot be written. A URI (``s3://...``) is
    not checked."""
    problems = []
    root = space.dataset.root
    if root is not None and not URI_RE.match(root):
        why = _readable_problem(root, folder=True)
        if why:
            problems.append(f"dataset.root: {why}; pass --data-root with the dataset's folder")
    for arch, path in space.backbone_weights.items():
        why = None if URI_RE.match(path) else _readable_problem(path, folder=False)
        if why:
            problems.append(f"backbone_weights.{arch}: {why}")
    storage = _folder_problem(space.storage_path)
    if storage:
        problems.append(f"storage_path: {storage}; choose a folder you can write (--storage-path)")
    store = _store_problem(space.mlflow.tracking_uri)
    if store:
        problems.append(store)
    return problems


def _readable_problem(path: str, folder: bool) -> str | None:
    """Why ``path`` is not a readable folder (``folder``) or file; None when it is."""
    kind, other = ("folder", "file") if folder else ("file", "folder")
    if not os.path.exists(path):
        return f"{path} does not exist"
    if os.path.isdir(path) != folder:
        return f"{path} is a {other}, not a {kind}"
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        return f"{path} is not readable by this user"
    return None


def _store_problem(configured: str | None) -> str | None:
    """Why the MLflow store the sweep will use (``configured``, else the environment's, else
    ``./mlflow.db``) cannot be: a scheme MLflow does not open, or a sqlite file (with
    ``mlartifacts/`` beside it) whose folder cannot be written."""
    from skipnet_sweep.sweep.tracking import default_tracking_uri, scheme_problem, sqlite_file

    uri = default_tracking_uri(configured)
    if configured:
        where = "mlflow.tracking_uri"
    elif env_tracking_uri():
        where = "$MLFLOW_TRACKING_URI"
    else:
        where = "the default MLflow store"
    fix = "choose another with --tracking-uri"
    why = scheme_problem(uri)
    if why:
        return f"{where}: {why}"
    db = sqlite_file(uri)
    if db is None:
        return None
    if db.exists() and not (db.is_file() and os.access(db, os.R_OK | os.W_OK)):
        return f"{where}: {db} is not a file this user can read and write; {fix}"
    folder = _folder_problem(str(db.parent))
    if folder:
        return f"{where}: {folder} (for {db.name} and mlartifacts/); {fix}"
    return None


def _folder_problem(path: str) -> str | None:
    """Why ``path`` cannot become a writable folder, judged by its nearest existing
    ancestor (created later, by the driver, not here); None when it can."""
    if URI_RE.match(path):
        return None
    target = Path(path)
    while not os.path.exists(target) and target != target.parent:
        target = target.parent
    if not os.path.isdir(target):
        if str(target) == path:
            return f"{path} is a file, not a folder"
        return f"{target} is a file (to create {Path(path).relative_to(target)} in)"
    if not os.access(target, os.W_OK | os.X_OK):
        inside = "" if str(target) == path else f" (to create {Path(path).relative_to(target)})"
        return f"{target} is not writable by this user{inside}"
    return None


def env_tracking_uri() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI")
