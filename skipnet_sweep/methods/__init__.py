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
from skipnet_sweep.stages.config import register_phases, saved_phase, unregister_phases
from skipnet_sweep.stages.objective import LossResult, Objective

_METHODS: dict[str, Method] = {}


def register_method(method: type[Method] | Method, *, replace: bool = False):
    """Register a method (a ``Method`` subclass or instance) under its ``name``.

    Usable as a class decorator. Registering a second method under a taken name is an error
    unless ``replace``; the method's phase names must not clash with another method's.

    Returns:
        what was passed in (so the decorator leaves the class as it was).
    """
    obj = method() if isinstance(method, type) else method
    if not obj.name or not obj.phases:
        raise ValueError(f"{type(obj).__name__}: a method needs a name and at least one phase")
    if obj.name in _METHODS and not replace:
        raise ValueError(f"a method named {obj.name!r} is already registered")
    register_phases(obj.name, obj.phases, obj.check_config)
    obj.register_parts()
    _METHODS[obj.name] = obj
    return method


def unregister_method(name: str) -> None:
    """Remove a registered method (plugins and tests that clean up after themselves)."""
    _METHODS.pop(name, None)
    unregister_phases(name)


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


def method_for_phase(phase: str) -> Method:
    """The method that trains ``phase`` (``sp`` and ``hrl`` -> SkipNet, ``baseline`` ->
    plain, ...).

    Raises:
        ValueError: no registered method trains that phase.
    """
    for method in _METHODS.values():
        if phase in method.phases:
            return method
    raise ValueError(f"unknown phase {phase!r}; allowed: {', '.join(phase_names())}")


def build_objective(cfg, costs: CostAccounting) -> Objective:
    """The loss of ``cfg``'s phase (a ``StageConfig``), from the method that owns it."""
    return method_for_phase(cfg.train.phase).objective(cfg, costs)


def load_trained(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The network a checkpoint holds, rebuilt by the method that trained it (the one that
    owns the checkpoint's phase), and the checkpoint's payload.

    Raises:
        CheckpointError: unreadable, not a skipnet_sweep checkpoint, or a phase no
            registered method trains.
    """
    payload = load_checkpoint(path)
    phase = saved_phase(payload.get("stage_config") or {})
    if phase is None:
        return get_method("plain").load_network(path)
    try:
        method = method_for_phase(phase)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None
    return method.load_network(path)


def phase_names() -> tuple[str, ...]:
    """Every phase a registered method trains."""
    return tuple(p for m in _METHODS.values() for p in m.phases)


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
    "method_for_phase",
    "phase_names",
    "plugin_keys",
    "register_method",
    "short_hash",
    "unregister_method",
]
