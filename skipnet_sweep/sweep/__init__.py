"""The sweep: search-space files, the plan, every stage as a Ray Tune trial (data-parallel
shared pre-training on Ray Train inside its trial), MLflow tracking and the Pareto frontier.
Ray is imported only when a sweep runs, and nothing here is imported until it is used: the
driver's watcher process (``python -m skipnet_sweep.sweep.reaper``) needs the standard
library only, not torch or MLflow (about 3 s of start-up)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skipnet_sweep.sweep.plan import Plan, make_plan
    from skipnet_sweep.sweep.space import Space, SpaceError, find_space, load_space

__all__ = ["Plan", "Space", "SpaceError", "find_space", "load_space", "make_plan"]
_HOME = {
    "Plan": "plan",
    "make_plan": "plan",
    "Space": "space",
    "SpaceError": "space",
    "find_space": "space",
    "load_space": "space",
}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"skipnet_sweep.sweep.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
