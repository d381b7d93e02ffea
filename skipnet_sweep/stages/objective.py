"""What a method decides about its stage's training: the ``Objective``.

The one training loop (``stages.loop``) asks the objective, at each point where a method
may differ, and does the rest itself (batches, precision, accumulation, logs, checkpoints):

- ``gate_mode``: how the network's gates decide while training;
- ``begin(model)``: once before a fresh (not resumed) run;
- ``owned()``: parameters the objective trains beside the network (a learned baseline),
  moved to the device, optimised and checkpointed with it;
- ``configure_optimizer(model, params, cfg, total)``: its optimiser and schedule (BlockDrop's
  policy trains with Adam), or None for the loop's SGD recipe of ``cfg``;
- ``at_step(step, total, epoch)``: before each optimiser step (a curriculum);
- ``forward(model, x)``: the training forward, inside autocast; may run more than one
  (BlockDrop's greedy baseline) and return what it needs in ``SkipOutput.extras``;
- ``__call__(out, target)``: the loss and the scalars worth logging.

Like timm's task objects: the model returns data, the objective owns the loss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from skipnet_sweep.models import SkipOutput
from skipnet_sweep.stages.config import TrainConfig


@dataclass
class LossResult:
    """A stage's loss for one batch and the scalars worth logging.

    ``logs`` hold detached 0-dim tensors on the loss's device: reading them as numbers would
    wait for the device at every step, so the loop sums them there and reads them once per
    evaluation.
    """

    loss: Tensor
    logs: dict[str, Tensor]


Optimisation = tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]


class Objective(ABC):
    """Base class of a stage's objective; subclasses implement ``__call__`` and override the
    hooks they need (every hook has a default that changes nothing)."""

    gate_mode: str = "hard"

    @abstractmethod
    def __call__(self, out: SkipOutput, target: Tensor) -> LossResult:
        """The loss of one batch and the scalars worth logging."""

    def begin(self, model: nn.Module) -> None:  # noqa: B027 (optional hook)
        """Called once before a fresh run (not a resumed one), after the model is built."""

    def owned(self) -> nn.Module | None:
        """Parameters this objective trains beside the network's (None: none)."""
        return None

    def configure_optimizer(
        self, model: nn.Module, params: Iterable[nn.Parameter], cfg: TrainConfig, total: int
    ) -> Optimisation | None:
        """The optimiser over ``params`` (the network's and ``owned()``'s) and its schedule
        (stepped once per optimiser step) for a run of ``total`` steps; None for the loop's
        SGD recipe of ``cfg``. ``model`` lets an objective form parameter groups."""
        return None

    def at_step(self, step: int, total: int, epoch: float) -> None:  # noqa: B027 (optional hook)
        """Called before each optimiser step: ``step`` steps done of ``total``, ``epoch``
        passes over the data (fractional)."""

    def forward(self, model: nn.Module, x: Tensor) -> SkipOutput:
        """The training forward of one batch (inside autocast)."""
        return model(x, mode=self.gate_mode, path="masked")


class _Callable(Objective):
    """A plain ``objective(out, target)`` callable with a ``gate_mode`` (the plugin API before
    the ``Objective`` class), and its optional ``begin``."""

    def __init__(self, fn: Callable[[SkipOutput, Tensor], Any]):
        self.fn = fn
        self.gate_mode = getattr(fn, "gate_mode", "hard")

    def __call__(self, out: SkipOutput, target: Tensor) -> LossResult:
        return self.fn(out, target)

    def begin(self, model: nn.Module) -> None:  # noqa: B027 (optional hook)
        begin = getattr(self.fn, "begin", None)
        if begin is not None:
            begin(model)


def as_objective(obj: Objective | Callable) -> Objective:
    """``obj`` as an ``Objective`` (a plain callable is wrapped)."""
    return obj if isinstance(obj, Objective) else _Callable(obj)
