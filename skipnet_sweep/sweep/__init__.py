"""The sweep: search-space files, the plan, every stage as a Ray Tune trial (shared
pre-training on Ray Train inside its trial), MLflow tracking and the Pareto frontier. Ray is
imported only when a sweep runs."""

from skipnet_sweep.sweep.plan import Plan, make_plan
from skipnet_sweep.sweep.space import Space, SpaceError, find_space, load_space

__all__ = ["Plan", "Space", "SpaceError", "find_space", "load_space", "make_plan"]
