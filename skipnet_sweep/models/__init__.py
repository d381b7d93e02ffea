"""Registered ResNets, SkipNet gates and the gated executor."""

from skipnet_sweep.models.gates import (
    GATE_DESIGNS,
    GATE_MODES,
    GateDesign,
    decide,
    get_gate_design,
    list_gates,
    register_gate,
)
from skipnet_sweep.models.registry import (
    ModelConfig,
    build_from_config,
    build_halting,
    build_model,
    list_models,
    list_networks,
    load_backbone,
    register_model,
    register_network,
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
    "GateDesign",
    "ModelConfig",
    "SkipOutput",
    "SkipResNet",
    "build_from_config",
    "build_halting",
    "build_model",
    "decide",
    "folded",
    "get_gate_design",
    "input_layout",
    "list_gates",
    "list_models",
    "list_networks",
    "load_backbone",
    "model_input",
    "register_gate",
    "register_model",
    "register_network",
]
