"""The sweep: search-space files, the plan, SP on Ray Train, trials on Ray Tune, MLflow
tracking and the Pareto frontier. Ray is imported only when a sweep runs."""

from skipnet_sweep.sweep.plan import Plan, Point, SPJob, make_plan
from skipnet_sweep.sweep.space import Space, SpaceError, find_space, load_space

__all__ = ["Plan", "Point", "SPJob", "Space", "SpaceError", "find_space", "load_space", "make_plan"]
