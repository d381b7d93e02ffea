"""The ACT/SACT objective (Figurnov et al., CVPR 2017, Eq. 7): cross-entropy plus ``tau``
times the ponder cost the halting network returns (``skipnet_sweep.models.halting``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from skipnet_sweep import metrics as M
from skipnet_sweep.metrics import PONDER
from skipnet_sweep.models import SkipOutput
from skipnet_sweep.stages.objective import LossResult, Objective


class PonderObjective(Objective):
    """``mean CE + tau * mean ponder``.

    Args:
        tau: weight of the ponder cost; larger trades accuracy for fewer units run.
    """

    # Halting is deterministic; the mode is only passed through to the network.
    gate_mode = "threshold"

    def __init__(self, tau: float):
        if tau < 0:
            raise ValueError(f"tau must be non-negative, got {tau}")
        self.tau = tau

    def __call__(self, out: SkipOutput, target: Tensor) -> LossResult:
        if out.ponder is None:
            raise ValueError("the ponder objective needs a halting network (out.ponder is None)")
        ce = F.cross_entropy(out.logits.float(), target)
        ponder = out.ponder.float().mean()
        loss = ce + self.tau * ponder
        return LossResult(
            loss, {M.TRAIN_LOSS: ce.detach(), PONDER: ponder.detach(), M.LOSS: loss.detach()}
        )
