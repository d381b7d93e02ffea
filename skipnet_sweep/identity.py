"""What enters the hashes that name sweeps, jobs and cached checkpoints.

A sweep's id (``Space.identity``) and a stage's key (``StageConfig.key``) hash their configs'
fields. A field added to a config after ids were handed out would change every id, so a sweep
started before the upgrade could not be resumed and every cached SP checkpoint would be
trained again. Such a field is declared with ``metadata=HASH_WHEN_SET``: it enters the hash
only when it differs from its default (its default being the behaviour from before it
existed). Fields that were hashed from the start stay hashed at any value, so changing a
default still changes the ids it affects. A field renamed after ids were handed out is hashed
under its first name (``hashed_as``).
"""

from __future__ import annotations

from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Any

HASH_WHEN_SET = {"hash_when_set": True}

__all__ = ["HASH_WHEN_SET", "hashed_as", "hashed_dict", "renamed"]


def hashed_as(name: str) -> dict:
    """Field metadata: hash the field under ``name`` (its name when ids were handed out)."""
    return {"hashed_as": name}


def renamed(state: dict, old: str, new: str) -> dict:
    """A copy of ``state`` (a saved config dict, a pickled object's ``__dict__``) with what
    was saved under a field's ``old`` name moved to its ``new`` one."""
    state = dict(state)
    if old in state:
        state[new] = state.pop(old)
    return state


def _at_default(f: Field, value: Any) -> bool:
    if f.default is not MISSING:
        return value == f.default
    if f.default_factory is not MISSING:
        return value == f.default_factory()
    return False


def hashed_dict(obj: Any) -> Any:
    """``obj`` as ``dataclasses.asdict`` gives it, less the ``HASH_WHEN_SET`` fields at their
    default, each field under its ``hashed_as`` name, at every depth."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.metadata.get("hashed_as", f.name): hashed_dict(getattr(obj, f.name))
            for f in fields(obj)
            if not (f.metadata.get("hash_when_set") and _at_default(f, getattr(obj, f.name)))
        }
    if isinstance(obj, dict):
        return {k: hashed_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(hashed_dict(v) for v in obj)
    return obj
