"""Search-space files: a typed schema, validated once, before anything starts.

A space is a YAML file (a path, or a bundled one in ``skipnet_sweep/search_spaces``) that
becomes a ``Space``. Every problem is reported as one line naming the file, the field and
what is allowed, as a ``SpaceError``; ``run`` turns that into exit code 2 before Ray is
started or anything is written.

This module finds, reads and writes space files; the rest is in one module per step:
``schema`` (the dataclasses), ``build`` (YAML to typed values), ``validate`` (names, ranges,
combinations), ``sizes`` (dataset sizes known without reading the data) and ``paths``
(absolute paths, what this machine lacks). Their public names are importable from here,
where pickles of earlier sweeps (Tune's state) look for the schema's classes.
"""

from __future__ import annotations

from dataclasses import replace
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from skipnet_sweep.errors import SpaceError
from skipnet_sweep.methods import plugin_keys
from skipnet_sweep.sweep.space.build import build, key_name
from skipnet_sweep.sweep.space.paths import (
    URI_RE,
    absolute_paths,
    env_tracking_uri,
    path_problems,
)
from skipnet_sweep.sweep.space.schema import (
    CHANGED_DEFAULTS,
    DISTRIBUTIONS,
    EXECUTION_FIELDS,
    LOCATION_FIELDS,
    BaselinesSpec,
    ChangedDefault,
    DatasetSpec,
    HaltingSpec,
    HRLSpec,
    MlflowSpec,
    OptimSpec,
    ResourcesSpec,
    SchedulerSpec,
    SearchSpec,
    Space,
    SPResources,
    SPSpec,
    Values,
    WorkerResources,
    changed_default_notices,
)
from skipnet_sweep.sweep.space.sizes import (
    SPLIT_SIZES,
    SYNTHETIC_DEFAULT_SIZE,
    split_sizes,
    training_images,
)
from skipnet_sweep.sweep.space.validate import (
    BOUNDS,
    HRL_VARIANTS,
    MAX_STEPS,
    NAME_RE,
    NAME_RULE,
    OPTUNA_SAMPLERS,
    SCHEDULERS,
    SEARCH_ALGORITHMS,
    SYNTHETIC_BOUNDS,
    SYNTHETIC_KEYS,
    validate,
)
from skipnet_sweep.yamlio import YamlError, read_yaml_file

__all__ = [
    "BOUNDS",
    "BUNDLED_PREFIX",
    "CHANGED_DEFAULTS",
    "DISTRIBUTIONS",
    "EXECUTION_FIELDS",
    "HRL_VARIANTS",
    "LOCATION_FIELDS",
    "MAX_STEPS",
    "NAME_RE",
    "NAME_RULE",
    "OPTUNA_SAMPLERS",
    "SCHEDULERS",
    "SEARCH_ALGORITHMS",
    "SPACES_DIR",
    "SPLIT_SIZES",
    "SYNTHETIC_BOUNDS",
    "SYNTHETIC_DEFAULT_SIZE",
    "SYNTHETIC_KEYS",
    "URI_RE",
    "BaselinesSpec",
    "ChangedDefault",
    "DatasetSpec",
    "HRLSpec",
    "HaltingSpec",
    "MlflowSpec",
    "OptimSpec",
    "ResourcesSpec",
    "SPResources",
    "SPSpec",
    "SchedulerSpec",
    "SearchSpec",
    "Space",
    "SpaceError",
    "Values",
    "WorkerResources",
    "bundled_spaces",
    "changed_default_notices",
    "env_tracking_uri",
    "find_space",
    "load_space",
    "path_problems",
    "space_to_yaml",
    "split_sizes",
    "training_images",
    "validate",
]

# Bundled spaces are package data (pyproject's package-data), read through importlib.resources:
# an installed wheel has them as well as a checkout. pip installs a wheel as files, so this is
# a ``Path`` there; from a zip archive it is not, and ``load_space`` copes with both.
SPACES_DIR: Traversable = files("skipnet_sweep") / "search_spaces"
BUNDLED_PREFIX = "bundled:"  # how a bundled space that is not a file on disk is named


def bundled_spaces() -> list[str]:
    """Names of the bundled spaces (``--space NAME``), sorted."""
    return sorted(
        f.name.removesuffix(".yaml")
        for f in SPACES_DIR.iterdir()
        if f.name.endswith(".yaml") and f.is_file()
    )


def find_space(name_or_path: str) -> Path | Traversable:
    """A space file by path, or a bundled one by name (``quickstart`` or ``quickstart.yaml``).

    Returns:
        The path given; or the bundled resource, a ``Path`` when the package is installed
        as files (a checkout, pip's install of a wheel), a ``Traversable`` from an archive.
    """
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    stem = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
    bundled = SPACES_DIR / stem
    if bundled.is_file():
        return bundled
    raise SpaceError(
        f"{name_or_path}: no such space file; bundled spaces: "
        f"{', '.join(bundled_spaces()) or 'none found'}"
    )


def load_space(
    name_or_path: str, overrides: dict[str, Any] | None = None, *, check_paths: bool = True
) -> Space:
    """Read, type-check and validate a space file.

    Args:
        name_or_path: a path or a bundled space's name.
        overrides: dotted keys to replace after reading (``{"hrl.iterations": 50}``).
        check_paths: also refuse what this machine lacks (``path_problems``: a missing
            dataset root or weights file, a storage path it cannot write); False for a dry
            run, which reports them instead.

    Raises:
        SpaceError: one line naming the file, the field and what is allowed.
    """
    found = find_space(name_or_path)
    # A file on disk is named by its path; a bundled space inside an archive by its name.
    path = found if isinstance(found, Path) else f"{BUNDLED_PREFIX}{found.name}"
    try:
        with as_file(found) as local:  # the file itself, or a temporary copy of an archive's
            raw = read_yaml_file(local)
    except YamlError as err:
        raise SpaceError(str(err).replace(str(local), str(path))) from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping of fields at the top level")
    raw.setdefault("name", found.name.removesuffix(".yaml").removesuffix(".yml"))
    try:
        for key, value in (overrides or {}).items():
            _set_dotted(raw, key, value)
        space = build(Space, _without_plugins(raw), "", also_allowed=plugin_keys())
        space = replace(space, methods=_plugin_sections(raw), notices=changed_default_notices(raw))
        validate(space)
        space = absolute_paths(space, str(path))
        if check_paths:
            for problem in path_problems(space)[:1]:
                raise SpaceError(problem)
    except SpaceError as err:
        raise SpaceError(f"{path}: {err}") from None
    return space


def _without_plugins(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k not in plugin_keys()}


def _plugin_sections(raw: dict) -> dict:
    """The sections of registered plugin methods, each typed by the method's settings."""
    return {
        key: build(method.settings, raw[key] if raw[key] is not None else {}, key)
        for key, method in plugin_keys().items()
        if key in raw
    }


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpaceError(f"override {key_name(key)}: {key_name(part)} is not a mapping")
    node[parts[-1]] = value


def space_to_yaml(space: Space) -> str:
    """The validated space, as YAML (logged to the parent run)."""

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return yaml.safe_dump(plain(space.to_dict()), sort_keys=False)
