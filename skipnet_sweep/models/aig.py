"""The ConvNet-AIG gate (Veit & Belongie, ECCV 2018, §3.1), as the official code builds it.

Citations are to andreasveit/convnet-aig @ 47633cd4 (``convnet_aig.py``), as read in
docs/peer_code.md.

The gate reads the gated block's input: global average pool, a 1x1 convolution (on a 1x1
map: a linear layer) ``C -> 16`` with bias, batch norm, ReLU, and a 1x1 convolution
``16 -> 2`` giving the logits of [off, on] (L78-81, L91-93). A two-class Gumbel-softmax over
[off, on] is a sigmoid of ``on - off`` plus logistic noise (``models.gates.decide``'s
``gumbel`` mode), so the last layer here is one logit, ``on - off``: the same function,
half the output layer's multiply-adds (16 instead of 32 per gate).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from skipnet_sweep.models.gates import global_pool

HIDDEN = 16  # fc1's width (convnet_aig.py L79)
# fc2's bias is set to [0.1, 2] "for initial opening rate of the gate of about 85%"
# (L82-85): the one logit's bias is their difference, sigmoid(1.9) = 0.87.
OPEN_BIAS = 2.0 - 0.1
# fc2's weight is drawn from N(0, 0.001) (L223-227); the difference of two independent rows
# has std 0.001 * sqrt(2).
OUT_STD = 0.001 * math.sqrt(2.0)


class AIGGate(nn.Module):
    """One ConvNet-AIG gate: ``fc(relu(bn(fc1(pool(x)))))``, the logit of "execute".

    The official code applies ``BatchNorm1d`` to an (N, 16, 1, 1) tensor (L80, L92), which
    current PyTorch refuses; on the pooled (N, 16) vector it is the same normalisation.

    Args:
        channels: the gated block's input width.
        hidden: the hidden width (16 in the official code).
    """

    def __init__(self, channels: int, hidden: int = HIDDEN):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc = nn.Linear(hidden, 1)  # every design names its logit layer ``fc``
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official CIFAR init: fc1 and BN at PyTorch's defaults (the CIFAR ResNet only
        re-draws fc2, L223-227; a 1x1 conv's default init is a linear layer's), fc2's weight
        N(0, 0.001) per logit and its bias [0.1, 2], i.e. gates about 87% open."""
        self.fc1.reset_parameters()
        self.bn.reset_parameters()
        nn.init.normal_(self.fc.weight, 0.0, OUT_STD)
        nn.init.constant_(self.fc.bias, OPEN_BIAS)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn(self.fc1(global_pool(x))))
        return self.fc(h).squeeze(1)


def build_aig_gates(widths: list[int]) -> nn.ModuleList:
    """One ``AIGGate`` per gated block (the builder ``register_gate("aig")`` takes)."""
    return nn.ModuleList(AIGGate(w) for w in widths)
