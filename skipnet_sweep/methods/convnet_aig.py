"""ConvNet-AIG (Veit & Belongie, "Convolutional Networks with Adaptive Inference Graphs",
ECCV 2018) on the project's backbones: a small gate per residual block trained with
straight-through Gumbel-softmax and a target-rate loss, thresholded at inference and run by
the sparse executor. Its target rate is the sweep axis.

Where the paper is silent the official code decides; citations are to
andreasveit/convnet-aig @ 47633cd4 (``convnet_aig.py``, ``gumbelmodule.py``, ``train.py``),
as read in docs/peer_code.md. What differs from it, and why, is in docs/convnet_aig.md.

A space asks for it with its own section::

    convnet_aig:
      target: [0.4, 0.6, 0.8]   # one job per (backbone, target)
      lossfact: 2
      init: scratch             # or baseline: fine-tune the plain ResNet of the backbone
      epochs: 349
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch.nn.functional as F
from torch import Tensor

from skipnet_sweep import metrics as M
from skipnet_sweep.errors import SpaceError
from skipnet_sweep.methods import register_method
from skipnet_sweep.methods.base import Job, Method, PlanContext, make_job, recipe
from skipnet_sweep.methods.plain import baseline_job
from skipnet_sweep.models import ModelConfig, SkipOutput, register_gate
from skipnet_sweep.models.aig import build_aig_gates
from skipnet_sweep.stages.config import StageConfig, TrainConfig
from skipnet_sweep.stages.network import complete_model_config
from skipnet_sweep.stages.objective import LossResult, Objective

GATE = "aig"  # the registered gate design and the phase's network
PHASE = "aig"  # the ``train`` subcommand
CURVE = "convnet-aig"  # the figures' curve: reporting/style.py's and baselines/convnet_aig.csv's
INITS = ("scratch", "baseline")

# Official CIFAR recipe (train.py): SGD momentum 0.9, lr 0.1, weight decay 5e-4, batch 256
# (L35-46), from scratch (no pretrained loading, only --resume, L97-113), 349 epochs
# (--epochs 350 from start_epoch 1, L133), lr x0.1 at epoch 150 and at 250 (L375-386; the
# docstring says 225, the code 250): after 149 and 249 of the 349 epochs.
LR = 0.1
WEIGHT_DECAY = 5e-4
BATCH_SIZE = 256
MILESTONES = (round(149 / 349, 4), round(249 / 349, 4))
# Fine-tuning the plain ResNet (``init: baseline``, not in the official CIFAR code): the
# halting baselines' constant lr (methods/halting.py), a tenth of the from-scratch lr.
FINETUNE_LR = 0.01
# Official defaults: ``--lossfact 2``, ``--target 0.6`` (train.py L30-34).
LOSSFACT = 2.0
TARGET = 0.6

RATE_LOSS = "rate_loss"  # lossfact * mean over gated layers of (target - layer rate)^2
GATE_RATE = "train_gate_rate"  # mean straight-through gate value of the batch (executed share)


def _check_rate(where: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{where}: {value} is not a rate; allowed: 0 to 1")


def _check_lossfact(where: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{where}: {value} must be a finite number >= 0")


@dataclass(frozen=True)
class AIGOptions:
    """The ``aig`` phase's own knobs (``StageConfig.options``; ``train aig`` flags).

    Attributes:
        target: the execution rate every gated layer is pulled toward (ConvNet-AIG's t;
            official default 0.6, train.py L30-34).
        lossfact: weight of the target-rate loss against the cross-entropy (official lambda,
            default 2, train.py L30-34).
    """

    target: float = TARGET
    lossfact: float = LOSSFACT

    def __post_init__(self) -> None:
        _check_rate("target", self.target)
        _check_lossfact("lossfact", self.lossfact)


@dataclass(frozen=True)
class AIGSettings:
    """A space's ``convnet_aig:`` section.

    Attributes:
        target: the target rates swept, one job per (backbone, target).
        lossfact: the target-rate loss weight (official 2).
        init: ``scratch`` (official) or ``baseline``: fine-tune the plain ResNet of the
            backbone (trained once per plan, shared with ACT/SACT), cheaper.
        iterations, epochs: the run's length (exactly one; the official CIFAR run is 349
            epochs).
        lr: SGD learning rate (default 0.1 from scratch as official, 0.01 fine-tuning).
        lr_milestones: fractions of the run at which lr is multiplied by 0.1 (default: the
            official epochs 150 and 250 of 349 from scratch; none fine-tuning).
        batch_size: images per step (official 256).
        weight_decay: SGD weight decay, gates included (official 5e-4).
    """

    target: tuple[float, ...] = (TARGET,)
    lossfact: float = LOSSFACT
    init: str = "scratch"
    iterations: int | None = None
    epochs: float | None = None
    lr: float | None = None
    lr_milestones: tuple[float, ...] | None = None
    batch_size: int = BATCH_SIZE
    weight_decay: float = WEIGHT_DECAY


class TargetRateObjective(Objective):
    """Cross-entropy plus the target-rate loss (train.py L187-199)::

        L = CE + lossfact * (1 / L_n) * sum_l (t - mean_i g_{l,i})^2

    over the gated layers ``l``, with ``g`` the straight-through Gumbel gate values (hard 0/1
    forward, the soft sample's gradient: gumbelmodule.py L58-63). Gumbel at temperature 1
    (the official code ignores its temperature argument, gumbelmodule.py L65-71).

    Args:
        target: t, the same for every gated layer (as on CIFAR: one target for all gates).
        lossfact: the loss weight.
    """

    gate_mode = "gumbel"

    def __init__(self, target: float = TARGET, lossfact: float = LOSSFACT):
        _check_rate("target", target)
        _check_lossfact("lossfact", lossfact)
        self.target = target
        self.lossfact = lossfact

    def rate_loss(self, gate_values: Tensor) -> Tensor:
        """``lossfact`` times the mean over layers of the squared distance between each
        layer's batch execution rate and the target; ``gate_values`` is (B, G)."""
        rates = gate_values.float().mean(0)
        return self.lossfact * (self.target - rates).pow(2).mean()

    def __call__(self, out: SkipOutput, target: Tensor) -> LossResult:
        ce = F.cross_entropy(out.logits.float(), target)
        if out.gate_values is None or out.gate_values.shape[1] == 0:
            raise ValueError("the target-rate loss needs a gated network (no gate values)")
        rate_loss = self.rate_loss(out.gate_values)
        loss = ce + rate_loss
        return LossResult(
            loss,
            {
                M.TRAIN_LOSS: ce.detach(),
                RATE_LOSS: rate_loss.detach(),
                GATE_RATE: out.gate_values.detach().float().mean(),
                M.LOSS: loss.detach(),
            },
        )


@register_method
class ConvNetAIG(Method):
    name = "convnet_aig"
    label = "ConvNet-AIG"
    marker = "h"  # reporting/style.py's entry for the curve ``convnet-aig``
    phases = (PHASE,)
    cost_weight = "target"
    space_key = "convnet_aig"
    settings = AIGSettings

    # --- the plan -----------------------------------------------------------------------

    def validate(self, space) -> None:
        opts = self.options(space)
        where = self.space_key
        if not opts.target:
            raise SpaceError(f"{where}.target: list at least one target rate")
        if len(set(opts.target)) != len(opts.target):
            raise SpaceError(f"{where}.target: a rate is listed twice")
        try:
            for i, t in enumerate(opts.target):
                _check_rate(f"{where}.target[{i}]", t)
            _check_lossfact(f"{where}.lossfact", opts.lossfact)
        except ValueError as err:
            raise SpaceError(str(err)) from None
        if opts.init not in INITS:
            raise SpaceError(
                f"{where}.init: {opts.init!r} is not a start; allowed: {', '.join(INITS)}"
            )
        self._train(space, opts)  # the recipe's own checks, named convnet_aig.FIELD

    def _train(self, space, opts: AIGSettings) -> TrainConfig:
        scratch = opts.init == "scratch"
        return recipe(
            self.space_key,
            PHASE,
            opts,
            LR if scratch else FINETUNE_LR,
            MILESTONES if scratch else (),
            seed=space.seed,
        )

    def jobs(self, ctx: PlanContext) -> list[Job]:
        space, opts = ctx.space, self.options(ctx.space)
        jobs = []
        for arch in space.backbones:
            base = baseline_job(ctx, arch) if opts.init == "baseline" else None
            if base is not None:
                jobs.append(base)
                model = replace(base.config.model, gate=GATE)
            else:
                model = ModelConfig(arch, GATE)
            for t in opts.target:
                config = complete_model_config(
                    StageConfig(
                        model,
                        ctx.data,
                        self._train(space, opts),
                        backbone_weights=None if base else space.backbone_weights.get(arch),
                        options={"target": t, "lossfact": opts.lossfact},
                    )
                )
                jobs.append(
                    make_job(
                        self.name,
                        config,
                        [("backbone", arch), ("target", t)],
                        curve=CURVE,
                        needs=base.id if base else None,
                        cost_weight="target",
                        sweep_id=ctx.sweep_id,
                    )
                )
        return jobs

    # --- the phase ----------------------------------------------------------------------

    def register_parts(self) -> None:
        register_gate(GATE, label="AIG gate")(build_aig_gates)

    def phase_gate(self, phase: str) -> str:
        return GATE

    def phase_options(self, phase: str) -> type:
        return AIGOptions

    def train_config(self, phase: str, given: dict) -> TrainConfig:
        """The official CIFAR recipe where the flags leave a field out (``train aig``)."""
        kw = {
            "lr": LR,
            "weight_decay": WEIGHT_DECAY,
            "batch_size": BATCH_SIZE,
            "lr_milestones": MILESTONES,
            **given,
        }
        return TrainConfig(phase=phase, **kw)

    def objective(self, cfg: StageConfig, costs) -> TargetRateObjective:
        opts = AIGOptions(**cfg.options)
        return TargetRateObjective(opts.target, opts.lossfact)

    # --- tracking -----------------------------------------------------------------------

    def params(self, job: Job) -> dict:
        opts = AIGOptions(**job.config.options)
        return {
            "target": opts.target,
            "lossfact": opts.lossfact,
            "init": "baseline" if job.needs else "scratch",
        }


__all__ = ["AIGOptions", "AIGSettings", "ConvNetAIG", "TargetRateObjective"]
