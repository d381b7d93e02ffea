"""What both families' cost tables share: the totals derived from their parts, and the
measurement of those parts.

A SkipNet's table (``flops.CostTable``) and a halting network's (``models.halting.
HaltingCostTable``) both hold per-sample MACs of the stem, of each residual block run
everywhere, of each gate or halting branch (convolution and linear parts apart) and of the
classifier. The totals are derived here once; each table says what one sample costs from its
own decisions (``per_sample``, ``skip_savings``).

MACs are counted as the paper counts them (§4.2.1): a convolution
``out_elements * (C_in / groups) * k_h * k_w``, a linear layer ``in * out``, an LSTM cell its
two matmuls ``4H * (I + H)``; batch-norm, activations and pooling are not counted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MacTable", "trace_macs"]


class MacTable(ABC):
    """Per-sample MACs of a network at one input size, with every part run everywhere.

    A subclass is a dataclass with ``stem`` and ``head`` fields and says which of its lists
    are the blocks and the gates (``_parts``).
    """

    stem: int
    head: int

    @abstractmethod
    def _parts(self) -> tuple[list[int], list[int], list[int]]:
        """``(block, gate_conv, gate_linear)``: convolution MACs of each block (its shortcut
        included), and the convolution and linear MACs of each gate or halting branch."""

    @property
    @abstractmethod
    def num_gates(self) -> int:
        """Gates (or halting branches) the network has."""

    @abstractmethod
    def skip_savings(self) -> list[int]:
        """MACs a sample saves by not running each block."""

    @abstractmethod
    def per_sample(self, executed: Tensor, *, conv_only: bool = False) -> Tensor:
        """(B,) float64 MACs of each sample from its execution decisions."""

    @property
    def gate_total(self) -> int:
        """MACs of all gates of one sample with every block run everywhere."""
        _, gate_conv, gate_linear = self._parts()
        return sum(gate_conv) + sum(gate_linear)

    @property
    def plain_conv(self) -> int:
        """Convolution MACs of the same ResNet without gates."""
        return self.stem + sum(self._parts()[0])

    @property
    def plain_total(self) -> int:
        return self.plain_conv + self.head

    @property
    def full_conv(self) -> int:
        """Convolution MACs with every block run everywhere, gates included."""
        return self.plain_conv + sum(self._parts()[1])

    @property
    def full_total(self) -> int:
        return self.plain_total + self.gate_total

    def _to_dict(
        self, *, lead: dict[str, Any] | None = None, after_blocks: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The table as ``to_dict`` gives it; ``lead`` and ``after_blocks`` are a subclass's own
        entries, at the front and after ``block_macs``."""
        block, gate_conv, gate_linear = self._parts()
        return {
            **(lead or {}),
            "conv_macs": self.full_conv,
            "total_macs": self.full_total,
            "gate_macs": self.gate_total,
            "gate_conv_macs": sum(gate_conv),
            "plain_conv_macs": self.plain_conv,
            "plain_total_macs": self.plain_total,
            "gate_share_pct": 100.0 * self.gate_total / self.full_total,
            "num_blocks": len(block),
            "num_gates": self.num_gates,
            "block_macs": block,
            **(after_blocks or {}),
            "gate_macs_each": [c + lin for c, lin in zip(gate_conv, gate_linear, strict=True)],
            "head_macs": self.head,
            "stem_macs": self.stem,
        }


def _conv_macs(module: nn.Conv2d, out: Tensor) -> int:
    per_out = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
    return out[0].numel() * per_out


def _linear_macs(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    # LSTMCell: input-to-hidden and hidden-to-hidden matmuls for the four gates.
    return 4 * module.hidden_size * (module.input_size + module.hidden_size)


def trace_macs(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    run: Callable[[nn.Module, Tensor], Any],
) -> list[tuple[str, bool, int]]:
    """The MACs of every layer call while ``run(model, x)`` runs one zero sample.

    Spatial sizes depend on the input, so what is measured holds for ``input_shape`` only.
    The model runs in eval mode without gradients and gets its mode back afterwards.

    Args:
        model: the network.
        input_shape: (C, H, W) of one sample.
        run: calls the model on ``x`` (1, C, H, W) so that every layer is evaluated.

    Returns:
        ``(layer name, is a convolution, MACs)`` of each call of a ``Conv2d``, ``Linear`` or
        ``LSTMCell``, in call order.
    """
    names = {m: n for n, m in model.named_modules()}
    events: list[tuple[str, bool, int]] = []

    def hook(module: nn.Module, _inp, out) -> None:
        if isinstance(module, nn.Conv2d):
            events.append((names[module], True, _conv_macs(module, out)))
        else:
            events.append((names[module], False, _linear_macs(module)))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear | nn.LSTMCell)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
            run(model, x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return events
