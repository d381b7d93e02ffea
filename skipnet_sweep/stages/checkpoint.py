"""Checkpoints: weights plus the config that rebuilds them, written atomically and read with
``weights_only=True`` (a checkpoint can never run code)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skipnet_sweep.models import ModelConfig, SkipResNet, build_from_config, load_backbone

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message is one line."""


def unwrap(model: nn.Module) -> SkipResNet:
    """The network inside a DistributedDataParallel (or similar) wrapper."""
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, then
    rename), so a crash never leaves a half-written checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT_VERSION, **payload}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def make_payload(
    model: nn.Module,
    stage: dict,
    *,
    metrics: dict | None = None,
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    input_shape: tuple[int, int, int] | None = None,
    streams: dict | None = None,
    objective: dict | None = None,
) -> dict[str, Any]:
    """Everything a checkpoint holds: the model config (to rebuild the network), the stage
    config, weights, metrics and (for resuming) the optimiser state, the step and the random
    streams with the data position (``LoopState.streams``) and the state of what the
    objective owns (``LoopState.objective_state``)."""
    net = unwrap(model)
    payload = {
        "model_config": net.config.to_dict(),
        "stage_config": stage,
        "state_dict": net.state_dict(),
        "metrics": dict(metrics or {}),
        "step": step,
        "input_shape": list(input_shape) if input_shape else None,
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        payload["scheduler"] = scheduler.state_dict()
    if streams is not None:
        payload["streams"] = streams
    if objective is not None:
        payload["objective"] = objective
    return payload


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a truncated or foreign file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path}: unreadable ({first})") from None


def load_torchvision_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Initialise ``model``'s backbone from a torchvision-format ResNet state_dict on disk
    (e.g. ``resnet101-*.pth``); gates and halting branches keep their initialisation.

    Raises:
        CheckpointError: the file is unreadable or its weights do not fit the backbone.
    """
    path = Path(path)
    state = _read(path)
    if isinstance(state, dict) and "state_dict" in state and "model_config" not in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"checkpoint {path}: not a torchvision state_dict")
    try:
        load_backbone(model, state)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint.

    Raises:
        CheckpointError: the file is missing, corrupt or not a skipnet_sweep checkpoint.
    """
    path = Path(path)
    payload = _read(path)
    if not isinstance(payload, dict) or "model_config" not in payload:
        raise CheckpointError(f"checkpoint {path}: not a skipnet_sweep checkpoint")
    return payload


def load_model(
    path: str | os.PathLike,
    expect: ModelConfig | None = None,
    *,
    backbone_only: bool | None = None,
    build: Callable[[ModelConfig], nn.Module] = build_from_config,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network stored in a checkpoint.

    Args:
        path: checkpoint file.
        expect: the config the caller needs; any field that differs is named in the error.
        backbone_only: build ``expect`` and load only the backbone (and classifier) from the
            checkpoint: how a gated network starts from a plain-ResNet checkpoint. None
            decides by itself: backbone only when the checkpoint is plain and ``expect`` gated.
        build: what makes the network of a ``ModelConfig``: the method that owns it
            (``Method.build_network``); the model registry by default.

    Returns:
        the network (in eval mode) and the payload.

    Raises:
        CheckpointError: unreadable file or config mismatch.
    """
    payload = load_checkpoint(path)
    stored = ModelConfig(**payload["model_config"])
    if backbone_only is None:
        backbone_only = expect is not None and stored.gate is None and expect.gate is not None
    if expect is not None:
        # Not how fresh weights were drawn (INIT_ONLY): the loaded weights replace them.
        network = [f.name for f in fields(ModelConfig) if not f.metadata.get("init_only")]
        fields_ = ("arch", "num_classes", "in_channels") if backbone_only else network
        diffs = [
            f"{k} is {getattr(stored, k)!r}, expected {getattr(expect, k)!r}"
            for k in fields_
            if getattr(stored, k) != getattr(expect, k)
        ]
        if diffs:
            raise CheckpointError(f"checkpoint {path}: config mismatch: {'; '.join(diffs)}")
    cfg = expect if (backbone_only and expect is not None) else stored
    model = build(cfg)
    state = payload["state_dict"]
    if backbone_only:
        state = {k: v for k, v in state.items() if not k.startswith("gates.")}
    try:
        model.load_state_dict(state, strict=not backbone_only)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path}: weights do not fit ({first})") from None
    return model.eval(), payload
