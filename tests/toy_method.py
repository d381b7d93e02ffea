"""The toy methods of the plugin tests, defined here in the tests only (no edit under
``skipnet_sweep/``):

- ``LabelSmoothing``: the plain ResNet fine-tuned with label smoothing, a method that adds a
  loss to an existing network;
- ``ToyRouted``: a method that brings its own gate design (``toygate``), network kind
  (``toynet``) and an objective that owns parameters, picks its optimiser and sees each step.

``tests/test_methods.py`` plans them; ``tests/test_sweep.py`` runs both through Ray Tune,
MLflow, model registration, ``train eval`` and the report; ``tests/test_sweep_resume.py``
loads them with ``--plugin tests/toy_plugin.py`` in a driver it kills and resumes."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import Job, Method, Objective, PlanContext
from skipnet_sweep.methods.plain import finetune_jobs
from skipnet_sweep.models import ModelConfig, build_model, register_gate, register_network
from skipnet_sweep.models.gates import per_block
from skipnet_sweep.stages import StageConfig, TrainConfig
from skipnet_sweep.stages.objective import LossResult


@dataclass(frozen=True)
class SmoothSettings:
    """The toy method's section of a space (``smooth:``)."""

    smoothing: tuple[float, ...] = (0.1,)
    iterations: int = 3
    lr: float = 0.01
    batch_size: int = 32


class SmoothCE:
    """Cross-entropy with label smoothing (the toy objective)."""

    gate_mode = "threshold"

    def __init__(self, smoothing: float):
        self.smoothing = smoothing

    def __call__(self, out, target) -> LossResult:
        loss = F.cross_entropy(out.logits, target, label_smoothing=self.smoothing)
        return LossResult(loss, {M.TRAIN_LOSS: float(loss)})


class LabelSmoothing(Method):
    name = "smooth"
    label = "Label smoothing"
    marker = "P"
    phases = ("smooth",)
    cost_weight = "smoothing"
    space_key = "smooth"
    settings = SmoothSettings

    def jobs(self, ctx: PlanContext) -> list[Job]:
        opts = self.options(ctx.space)

        def config_of(base: Job, smoothing: float) -> StageConfig:
            train = TrainConfig(
                phase="smooth",
                iterations=opts.iterations,
                lr=opts.lr,
                batch_size=opts.batch_size,
                lr_milestones=(),
                seed=ctx.space.seed,
            )
            return StageConfig(base.config.model, ctx.data, train, options={"smoothing": smoothing})

        return finetune_jobs(ctx, self, opts.smoothing, config_of)

    def objective(self, cfg: StageConfig, costs) -> SmoothCE:
        return SmoothCE(cfg.options["smoothing"])


# --- a method that brings its own gate, network and parameter-owning objective ------------


class ToyGate(nn.Module):
    """The toy's gate design: one linear layer on the block input's mean over positions,
    opening at first (bias 2)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, 1)
        nn.init.constant_(self.fc.bias, 2.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean((2, 3))).squeeze(1)


def build_toynet(cfg: ModelConfig) -> nn.Module:
    """The toy's network kind: the registered backbone gated by the toy's own gates."""
    net = build_model(
        cfg.arch, num_classes=cfg.num_classes, in_channels=cfg.in_channels, gate="toygate"
    )
    net.config = cfg
    return net


@dataclass(frozen=True)
class RoutedSettings:
    """The toy routed method's section of a space (``toyroute:``)."""

    rate: tuple[float, ...] = (0.5,)
    iterations: int = 3
    lr: float = 0.01
    batch_size: int = 32


@dataclass(frozen=True)
class RoutedOptions:
    """The toy routed phase's own knob (a ``train toyroute`` flag).

    Attributes:
        rate: weight of the mean gate value in the loss.
    """

    rate: float = 0.5


class RoutedObjective(Objective):
    """Cross-entropy on logits times a temperature the objective owns and trains with its
    own optimiser (Adam, two parameter groups), plus ``rate`` times the mean straight-through
    gate value; counts the steps it saw."""

    gate_mode = "hard"

    def __init__(self, rate: float):
        self.rate = rate
        self.temperature = nn.Module()
        self.temperature.log_t = nn.Parameter(torch.zeros(()))
        self.steps_seen: list[int] = []

    def owned(self) -> nn.Module:
        return self.temperature

    def configure_optimizer(self, model, params, cfg, total):
        net = list(model.parameters())
        opt = torch.optim.Adam(
            [{"params": net, "lr": cfg.lr}, {"params": self.temperature.parameters(), "lr": 0.1}]
        )
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    def at_step(self, step: int, total: int, epoch: float) -> None:
        self.steps_seen.append(step)

    def __call__(self, out, target) -> LossResult:
        logits = out.logits * self.temperature.log_t.exp()
        ce = F.cross_entropy(logits, target)
        rate = out.gate_values.mean()
        loss = ce + self.rate * rate
        return LossResult(loss, {M.TRAIN_LOSS: ce.detach()})


class ToyRouted(Method):
    name = "toyroute"
    label = "Toy routing"
    marker = "X"
    phases = ("toyroute",)
    cost_weight = "rate"
    space_key = "toyroute"
    settings = RoutedSettings

    def register_parts(self) -> None:
        register_gate("toygate", replace=True)(per_block(ToyGate))
        register_network("toynet", build_toynet, replace=True)

    def phase_gate(self, phase: str) -> str:
        return "toynet"

    def phase_options(self, phase: str) -> type:
        return RoutedOptions

    def jobs(self, ctx: PlanContext) -> list[Job]:
        opts = self.options(ctx.space)

        def config_of(base: Job, rate: float) -> StageConfig:
            train = TrainConfig(
                phase="toyroute",
                iterations=opts.iterations,
                lr=opts.lr,
                batch_size=opts.batch_size,
                lr_milestones=(),
                seed=ctx.space.seed,
            )
            model = replace(base.config.model, gate="toynet")
            return StageConfig(model, ctx.data, train, options={"rate": rate})

        return finetune_jobs(ctx, self, opts.rate, config_of)

    def objective(self, cfg: StageConfig, costs) -> RoutedObjective:
        return RoutedObjective(cfg.options["rate"])
