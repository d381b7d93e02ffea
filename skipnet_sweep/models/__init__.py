"""Registered ResNets, SkipNet gates and the gated executor."""

from skipnet_sweep.models.gates import GATE_DESIGNS, GATE_MODES, decide
from skipnet_sweep.models.registry import (
    ModelConfig,
    build_from_config,
    build_halting,
    build_model,
    list_models,
    load_backbone,
    register_model,
)
from skipnet_sweep.models.resnet import (
    EXEC_PATHS,
    SkipOutput,
    SkipResNet,
    folded,
    input_layout,
    model_input,
)

__all__ = [
    "EXEC_PATHS",
    "GATE_DESIGNS",
    "GATE_MODES",
    "ModelConfig",
    "SkipOutput",
    "SkipResNet",
    "build_from_config",
    "build_halting",
    "build_model",
    "decide",
    "folded",
    "input_layout",
    "list_models",
    "load_backbone",
    "model_input",
    "register_model",
]
