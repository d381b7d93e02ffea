"""Model registry: every architecture is a short factory registered by name.

``build_model(arch, num_classes=..., in_channels=..., gate=...)`` is the one way to make a
network; an unknown name or gate fails with the list of what is allowed.

A ``ModelConfig``'s ``gate`` names either a registered gate design (``models.gates``:
SkipNet's, ConvNet-AIG's; the ResNet's blocks gated one by one) or a registered *network
kind* (``register_network``: ACT and SACT's halting ResNets, BlockDrop's policy plus
ResNet), whose builder makes the whole network from the config.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from skipnet_sweep.identity import HASH_WHEN_SET
from skipnet_sweep.models.gates import list_gates
from skipnet_sweep.models.halting import HaltingResNet, check_halting_kind
from skipnet_sweep.models.resnet import SkipResNet

_REGISTRY: dict[str, Callable[..., SkipResNet]] = {}
_NETWORKS: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register_network(
    kind: str, build: Callable[[ModelConfig], nn.Module], *, replace: bool = False
) -> None:
    """Register a network kind: ``build(cfg)`` makes the whole network of a ``ModelConfig``
    whose ``gate`` is ``kind`` (fresh weights; ``cfg.arch`` names its backbone).

    Raises:
        ValueError: ``kind`` is taken (unless ``replace``) or is a gate design's name.
    """
    if kind in list_gates():
        raise ValueError(f"{kind!r} is a gate design; a network kind needs another name")
    if kind in _NETWORKS and not replace and _NETWORKS[kind] is not build:
        raise ValueError(f"a network kind named {kind!r} is already registered")
    _NETWORKS[kind] = build


def list_networks() -> tuple[str, ...]:
    """Registered network kinds (beyond the gated ResNet)."""
    return tuple(_NETWORKS)


def register_model(fn: Callable[..., SkipResNet]) -> Callable[..., SkipResNet]:
    """Register a factory ``fn(num_classes, in_channels, gate) -> SkipResNet`` by its name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered architectures."""
    return sorted(_REGISTRY, key=lambda n: (not n.startswith("cifar"), len(n), n))


# A ModelConfig field that says how fresh weights are drawn, not which network it is: a
# checkpoint's weights replace it, so loading one does not compare it (``load_model``).
INIT_ONLY = {"init_only": True}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network; stored in every checkpoint.

    Attributes:
        arch: registered architecture name, e.g. ``cifar_resnet38`` or ``resnet101``.
        gate: a registered gate design (``ff1``, ``ff2``, ``rnn``: SkipNet's; ``aig``:
            ConvNet-AIG's), a registered network kind (``act``, ``sact``: the halting
            baselines; ``blockdrop``) on the same backbone, or None for the plain ResNet.
        num_classes: classifier outputs.
        in_channels: input image channels (1 for Fashion-MNIST).
        gate_out_std: std of the normal init of each SkipNet gate's logit layer; None for He
            fan-out (std 1.41 on the one logit: the official FF gates and ImageNet RNNGate).
            The official CIFAR/SVHN RNNGate draws it at sqrt(0.2) = 0.447 (see
            ``SkipResNet._init_weights``). How fresh gates are drawn, not the network's shape:
            a checkpoint's gate weights replace it.
    """

    arch: str
    gate: str | None = None
    num_classes: int = 10
    in_channels: int = 3
    gate_out_std: float | None = field(default=None, metadata={**HASH_WHEN_SET, **INIT_ONLY})

    def __post_init__(self) -> None:
        if self.gate == "none":  # how files and command lines spell the plain ResNet
            object.__setattr__(self, "gate", None)
        if self.arch not in _REGISTRY:
            raise ValueError(
                f"unknown architecture {self.arch!r}; allowed: {', '.join(list_models())}"
            )
        allowed = list_gates() + list_networks()
        if self.gate is not None and self.gate not in allowed:
            raise ValueError(f"unknown gate {self.gate!r}; allowed: {', '.join(allowed)} or none")
        if self.num_classes < 1 or self.in_channels < 1:
            raise ValueError("num_classes and in_channels must be positive")
        if self.gate_out_std is not None:
            if self.gate not in list_gates():
                raise ValueError(
                    f"gate_out_std initialises gates ({', '.join(list_gates())}); "
                    f"the {self.gate or 'plain'} network has none"
                )
            if not (math.isfinite(self.gate_out_std) and self.gate_out_std > 0):
                raise ValueError(
                    f"gate_out_std must be a finite number > 0, got {self.gate_out_std}"
                )

    def to_dict(self) -> dict:
        return asdict(self)

    def plain(self) -> ModelConfig:
        """The plain ResNet of the same backbone, classes and input."""
        return ModelConfig(self.arch, None, self.num_classes, self.in_channels)


def build_model(
    arch: str, *, num_classes: int = 10, in_channels: int = 3, gate: str | None = None
) -> SkipResNet:
    """Build a registered architecture.

    Args:
        arch: a name from ``list_models()``.
        num_classes: classifier outputs.
        in_channels: input channels.
        gate: ``ff1``, ``ff2``, ``rnn`` or None (plain ResNet).

    Returns:
        the network, with freshly initialised weights.
    """
    cfg = ModelConfig(arch, gate, num_classes, in_channels)
    return build_from_config(cfg)


def build_from_config(cfg: ModelConfig) -> nn.Module:
    """Build the network a ``ModelConfig`` describes."""
    if cfg.gate in _NETWORKS:
        model = _NETWORKS[cfg.gate](cfg)
    else:
        model = _REGISTRY[cfg.arch](
            num_classes=cfg.num_classes,
            in_channels=cfg.in_channels,
            gate=cfg.gate,
            gate_out_std=cfg.gate_out_std,
        )
    model.config = cfg  # so checkpoints can store what rebuilds the network
    return model


def build_halting(
    arch: str, kind: str, *, num_classes: int = 10, in_channels: int = 3, eps: float = 0.01
) -> HaltingResNet:
    """Build a registered plain ResNet and turn its stages into ACT or SACT loops.

    Args:
        arch: a name from ``list_models()``.
        kind: ``act`` or ``sact``.
        num_classes: classifier outputs.
        in_channels: input channels.
        eps: halting threshold ``1 - eps``.

    Returns:
        the network, with freshly initialised weights.
    """
    check_halting_kind(kind)
    backbone = build_model(arch, num_classes=num_classes, in_channels=in_channels)
    return HaltingResNet(backbone, kind, eps=eps)


for _kind in ("act", "sact"):
    register_network(
        _kind,
        lambda cfg: build_halting(
            cfg.arch, cfg.gate, num_classes=cfg.num_classes, in_channels=cfg.in_channels
        ),
    )


def _cifar(depth: int, **kw) -> SkipResNet:
    # 6n + 2 layers: three stages of n basic blocks at 16/32/64 channels (ResNet paper §4.2).
    n = (depth - 2) // 6
    return SkipResNet("basic", [n, n, n], [16, 32, 64], "cifar", **kw)


@register_model
def cifar_resnet8(**kw) -> SkipResNet:
    return _cifar(8, **kw)


@register_model
def cifar_resnet14(**kw) -> SkipResNet:
    return _cifar(14, **kw)


@register_model
def cifar_resnet20(**kw) -> SkipResNet:
    return _cifar(20, **kw)


@register_model
def cifar_resnet38(**kw) -> SkipResNet:
    return _cifar(38, **kw)


@register_model
def cifar_resnet74(**kw) -> SkipResNet:
    return _cifar(74, **kw)


@register_model
def cifar_resnet110(**kw) -> SkipResNet:
    return _cifar(110, **kw)


@register_model
def cifar_resnet152(**kw) -> SkipResNet:
    return _cifar(152, **kw)


_IMAGENET_WIDTHS = [64, 128, 256, 512]


@register_model
def resnet18(**kw) -> SkipResNet:
    return SkipResNet("basic", [2, 2, 2, 2], _IMAGENET_WIDTHS, "imagenet", **kw)


@register_model
def resnet34(**kw) -> SkipResNet:
    return SkipResNet("basic", [3, 4, 6, 3], _IMAGENET_WIDTHS, "imagenet", **kw)


@register_model
def resnet50(**kw) -> SkipResNet:
    return SkipResNet("bottleneck", [3, 4, 6, 3], _IMAGENET_WIDTHS, "imagenet", **kw)


@register_model
def resnet101(**kw) -> SkipResNet:
    return SkipResNet("bottleneck", [3, 4, 23, 3], _IMAGENET_WIDTHS, "imagenet", **kw)


@register_model
def resnet152(**kw) -> SkipResNet:
    return SkipResNet("bottleneck", [3, 8, 36, 3], _IMAGENET_WIDTHS, "imagenet", **kw)


_TV_LAYER = re.compile(r"^layer(\d+)\.(\d+)\.(.*)$")
_TV_STEM = {"conv1": "stem.0", "bn1": "stem.1"}


def torchvision_to_skipnet_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state_dict to this package's layout.

    ``layerK.J.*`` becomes ``stages.{K-1}.J.*`` and the stem's ``conv1``/``bn1`` become
    ``stem.0``/``stem.1``; block and ``fc`` names are already the same.
    """
    out = {}
    for key, value in state_dict.items():
        m = _TV_LAYER.match(key)
        if m:
            key = f"stages.{int(m.group(1)) - 1}.{m.group(2)}.{m.group(3)}"
        else:
            head, _, rest = key.partition(".")
            key = f"{_TV_STEM[head]}.{rest}" if head in _TV_STEM else key
        out[key] = value
    return out


def load_backbone(model: SkipResNet, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load torchvision-format backbone weights (e.g. from ``resnet101-*.pth`` on disk) into
    ``model``; the gates keep their initialisation. A classifier of another size is skipped.

    Raises:
        ValueError: naming the backbone keys that are missing or do not match in shape.
    """
    src = torchvision_to_skipnet_keys(state_dict)
    own = model.state_dict()
    backbone = {k for k in own if not k.startswith(("gates.", "halting."))}
    missing = sorted(backbone - src.keys())
    bad = sorted(
        k for k in backbone & src.keys() if src[k].shape != own[k].shape and not k.startswith("fc.")
    )
    if missing or bad:
        raise ValueError(
            f"backbone weights do not match the architecture: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, wrong shape {bad[:5]}"
        )
    keep = {k: v for k, v in src.items() if k in own and src[k].shape == own[k].shape}
    model.load_state_dict(keep, strict=False)
