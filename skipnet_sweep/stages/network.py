"""A stage's network: its model config completed from the data, and its initial weights.

Below both the method registry (a method builds its network with these) and the runner
(which asks the registry for the stage's method), so neither imports the other lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import nn

from skipnet_sweep.data import DatasetInfo, dataset_info, synthetic_info
from skipnet_sweep.models import ModelConfig, build_from_config
from skipnet_sweep.stages.checkpoint import load_model, load_torchvision_weights
from skipnet_sweep.stages.config import StageConfig


def complete_model_config(cfg: StageConfig) -> StageConfig:
    """Set the model's ``num_classes``/``in_channels`` from the dataset: they are properties
    of the data, not choices, so whatever the config said is replaced."""
    info = _data_info(cfg)
    model = cfg.model
    if (model.num_classes, model.in_channels) != (info.num_classes, info.in_channels):
        model = replace(model, num_classes=info.num_classes, in_channels=info.in_channels)
    return replace(cfg, model=model)


def _data_info(cfg: StageConfig) -> DatasetInfo:
    if cfg.data.dataset == "synthetic":
        syn = cfg.data.synthetic
        return synthetic_info(syn.get("channels"), syn.get("image_size"), syn.get("classes"))
    return dataset_info(cfg.data.dataset)


def build_stage_model(
    cfg: StageConfig, build: Callable[[ModelConfig], nn.Module] = build_from_config
) -> nn.Module:
    """The stage's network with its initial weights: fresh, or from ``cfg.init``. A gated
    checkpoint (SP for HRL+SP) is loaded whole after checking it is the same network; a
    plain-ResNet checkpoint initialises the backbone only. ``build`` makes the network of a
    ``ModelConfig`` (its method's ``build_network``)."""
    if cfg.init is None:
        model = build(cfg.model)
        if cfg.backbone_weights is not None:
            load_torchvision_weights(model, cfg.backbone_weights)
        return model
    return load_model(cfg.init, cfg.model, build=build)[0]
