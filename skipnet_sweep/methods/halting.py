"""ACT and SACT (Figurnov et al., CVPR 2017) on the same backbones: each fine-tunes the
plain ResNet of its backbone with a halting branch per residual unit, over the ponder-cost
weight tau (their counterpart of alpha). One method class, two registrations."""

from __future__ import annotations

from dataclasses import replace

from skipnet_sweep.methods import register_method
from skipnet_sweep.methods.base import Job, Method, PlanContext, make_job, optimiser_fields
from skipnet_sweep.methods.plain import baseline_job


class Halting(Method):
    """ACT (per sample) or SACT (per position): ``kind`` is the network's halting kind."""

    stages: tuple[str, ...]
    weight = "tau"

    @property
    def kind(self) -> str:
        return self.name

    def spec(self, space):
        return getattr(space.baselines, self.kind)

    def enabled(self, space) -> bool:
        return self.spec(space) is not None

    def jobs(self, ctx: PlanContext) -> list[Job]:
        from skipnet_sweep.stages.config import StageConfig, TrainConfig
        from skipnet_sweep.sweep.space import SpaceError

        space, spec = ctx.space, self.spec(ctx.space)
        if not spec.tau.is_grid:
            raise SpaceError(
                f"baselines.{self.kind}.tau: give a list of values ({self.label} runs as a grid)"
            )
        jobs = []
        for arch in space.backbones:
            base = baseline_job(ctx, arch)
            jobs.append(base)
            for tau in spec.tau.grid:
                train = TrainConfig(
                    stage=self.kind,
                    tau=tau,
                    iterations=spec.iterations,
                    epochs=spec.epochs,
                    batch_size=spec.batch_size,
                    lr=spec.lr,
                    lr_milestones=(),
                    seed=space.seed,
                )
                model = replace(base.stage.model, gate=self.kind)
                jobs.append(
                    make_job(
                        self.name,
                        StageConfig(model, ctx.data, train),
                        [("backbone", arch), ("tau", tau)],
                        curve=self.name,
                        needs=base.id,
                        weight="tau",
                        sweep_id=ctx.sweep_id,
                    )
                )
        return jobs

    def train_fields(self, stage: str) -> tuple[str, ...]:
        return (*optimiser_fields(), "tau")

    def objective(self, cfg, costs):
        from skipnet_sweep.stages.ponder import PonderObjective

        return PonderObjective(cfg.train.tau)


@register_method
class ACT(Halting):
    name = "act"
    label = "ACT"
    marker = "^"
    stages = ("act",)


@register_method
class SACT(Halting):
    name = "sact"
    label = "SACT"
    marker = "v"
    stages = ("sact",)
