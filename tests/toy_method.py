"""The toy method of the plugin tests: the plain ResNet fine-tuned with label smoothing,
defined here in the tests only (no edit under ``skipnet_sweep/``). ``tests/test_methods.py``
plans it; ``tests/test_sweep.py`` runs it through Ray Tune, MLflow and the report inside its
tiny sweep, beside SkipNet."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import Job, Method, PlanContext, make_job
from skipnet_sweep.methods.plain import baseline_job
from skipnet_sweep.stages import StageConfig, TrainConfig
from skipnet_sweep.stages.objectives import LossResult


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
    stages = ("smooth",)
    weight = "smoothing"
    space_key = "smooth"
    settings = SmoothSettings

    def jobs(self, ctx: PlanContext) -> list[Job]:
        opts = self.options(ctx.space)
        jobs = []
        for arch in ctx.space.backbones:
            base = baseline_job(ctx, arch)
            jobs.append(base)
            for s in opts.smoothing:
                train = TrainConfig(
                    stage="smooth",
                    iterations=opts.iterations,
                    lr=opts.lr,
                    batch_size=opts.batch_size,
                    lr_milestones=(),
                    seed=ctx.space.seed,
                )
                stage = StageConfig(base.stage.model, ctx.data, train, options={"smoothing": s})
                jobs.append(
                    make_job(
                        self.name,
                        stage,
                        [("backbone", arch), ("smoothing", s)],
                        curve="smooth",
                        needs=base.id,
                        weight="smoothing",
                        sweep_id=ctx.sweep_id,
                    )
                )
        return jobs

    def objective(self, cfg: StageConfig, costs) -> SmoothCE:
        return SmoothCE(cfg.options["smoothing"])
