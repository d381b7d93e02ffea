"""The method registry: one object per method, everything else iterates it.

    from skipnet_sweep.methods import get_method, list_methods, register_method

Built-in methods (one module each): ``plain`` (the ResNet baseline), ``skipnet`` (SP then
HRL, with the HRL+S, RL and soft-gating variants as options), ``act`` and ``sact`` (the
halting baselines). ``register_method`` adds another from anywhere (a plugin module, a test
file); ``get_method`` fails loudly on an unknown name.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from torch import nn

from skipnet_sweep.methods.base import (
    CostAccounting,
    Job,
    Method,
    PlanContext,
    make_job,
    short_hash,
)
from skipnet_sweep.stages.checkpoint import CheckpointError, load_checkpoint
from skipnet_sweep.stages.config import register_stages, unregister_stages
from skipnet_sweep.stages.objective import LossResult, Objective

_METHODS: dict[str, Method] = {}


def register_method(method: type[Method] | Method, *, replace: bool = False):
    """Register a method (a ``Method`` subclass or instance) under its ``name``.

    Usable as a class decorator. Registering a second method under a taken name is an error
    unless ``replace``; the method's stage names must not clash with another method's.

    Returns:
        what was passed in (so the decorator leaves the class as it was).
    """
    obj = method() if isinstance(method, type) else method
    if not obj.name or not obj.stages:
        raise ValueError(f"{type(obj).__name__}: a method needs a name and at least one stage")
    if obj.name in _METHODS and not replace:
        raise ValueError(f"a method named {obj.name!r} is already registered")
    register_stages(obj.name, obj.stages, obj.check_stage)
    obj.register_parts()
    _METHODS[obj.name] = obj
    return method


def unregister_method(name: str) -> None:
    """Remove a registered method (plugins and tests that clean up after themselves)."""
    _METHODS.pop(name, None)
    unregister_stages(name)


def list_methods() -> list[str]:
    """Names of the registered methods, in registration order."""
    return list(_METHODS)


def get_method(name: str) -> Method:
    """The registered method ``name``.

    Raises:
        ValueError: unknown name, with the list of registered ones.
    """
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(_METHODS)}") from None


def method_for_stage(stage: str) -> Method:
    """The method that trains ``stage`` (``sp`` and ``hrl`` -> SkipNet, ``baseline`` ->
    plain, ...).

    Raises:
        ValueError: no registered method trains that stage.
    """
    for method in _METHODS.values():
        if stage in method.stages:
            return method
    raise ValueError(f"unknown stage {stage!r}; allowed: {', '.join(stage_names())}")


def build_objective(cfg, costs: CostAccounting) -> Objective:
    """The loss of ``cfg``'s stage (a ``StageConfig``), from the method that owns it."""
    return method_for_stage(cfg.train.stage).objective(cfg, costs)


def load_trained(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The network a checkpoint holds, rebuilt by the method that trained it (the one that
    owns the checkpoint's stage), and the checkpoint's payload.

    Raises:
        CheckpointError: unreadable, not a skipnet_sweep checkpoint, or a stage no
            registered method trains.
    """
    payload = load_checkpoint(path)
    stage = (payload.get("stage_config") or {}).get("train", {}).get("stage")
    if stage is None:
        return get_method("plain").load_network(path)
    try:
        method = method_for_stage(stage)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None
    return method.load_network(path)


def stage_names() -> tuple[str, ...]:
    """Every stage a registered method trains."""
    return tuple(s for m in _METHODS.values() for s in m.stages)


def plugin_keys() -> dict[str, Method]:
    """Search-space keys that belong to registered plugin methods."""
    return {m.space_key: m for m in _METHODS.values() if m.space_key}


def _register_builtins() -> None:
    # Each built-in module registers its method on import; this order is the order of the
    # registry, of a plan's trials and of the figures' legends.
    for module in ("plain", "skipnet", "halting", "convnet_aig", "blockdrop"):
        importlib.import_module(f"skipnet_sweep.methods.{module}")


_register_builtins()

__all__ = [
    "CostAccounting",
    "Job",
    "LossResult",
    "Method",
    "Objective",
    "PlanContext",
    "build_objective",
    "get_method",
    "list_methods",
    "load_trained",
    "make_job",
    "method_for_stage",
    "plugin_keys",
    "register_method",
    "short_hash",
    "stage_names",
    "unregister_method",
]
