"""ACT and SACT (Figurnov et al., CVPR 2017) on the same backbones: each fine-tunes the
plain ResNet of its backbone with a halting branch per residual unit, over the ponder-cost
weight tau (their counterpart of alpha). One method class, two registrations."""

from __future__ import annotations

from dataclasses import replace

from skipnet_sweep.errors import SpaceError
from skipnet_sweep.methods import register_method
from skipnet_sweep.methods.base import Job, Method, PlanContext, optimiser_fields, recipe
from skipnet_sweep.methods.plain import finetune_jobs
from skipnet_sweep.stages.config import StageConfig
from skipnet_sweep.stages.ponder import PonderObjective

# The fine-tuning recipe a space's ``baselines.act``/``baselines.sact`` section sets: which
# TrainConfig fields it offers (their types and defaults are TrainConfig's) and its own
# default learning rate, constant (the SACT paper fine-tunes its ResNets at 0.01). The other
# TrainConfig fields keep their defaults. Widening this set would change the sweep id of
# every space with a halting section (``Space.identity`` holds each section's fields).
RECIPE_FIELDS = ("iterations", "epochs", "lr", "batch_size")
LR = 0.01


class Halting(Method):
    """ACT (per sample) or SACT (per position): ``kind`` is the network's halting kind."""

    phases: tuple[str, ...]
    cost_weight = "tau"

    @property
    def kind(self) -> str:
        return self.name

    def spec(self, space):
        return getattr(space.baselines, self.kind)

    def enabled(self, space) -> bool:
        return self.spec(space) is not None

    def jobs(self, ctx: PlanContext) -> list[Job]:
        space, spec = ctx.space, self.spec(ctx.space)
        if not spec.tau.is_grid:
            raise SpaceError(
                f"baselines.{self.kind}.tau: give a list of values ({self.label} runs as a grid)"
            )
        train = {
            tau: recipe(f"baselines.{self.kind}", self.kind, spec, LR, (), tau=tau, seed=space.seed)
            for tau in spec.tau.grid
        }

        def config_of(base: Job, tau: float) -> StageConfig:
            return StageConfig(replace(base.config.model, gate=self.kind), ctx.data, train[tau])

        return finetune_jobs(ctx, self, spec.tau.grid, config_of)

    def phase_gate(self, phase: str) -> str:
        return self.kind

    def train_fields(self, phase: str) -> tuple[str, ...]:
        return (*optimiser_fields(), "tau")

    def objective(self, cfg, costs):
        return PonderObjective(cfg.train.tau)


@register_method
class ACT(Halting):
    name = "act"
    label = "ACT"
    marker = "^"
    phases = ("act",)


@register_method
class SACT(Halting):
    name = "sact"
    label = "SACT"
    marker = "v"
    phases = ("sact",)
