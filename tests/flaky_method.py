"""A method whose pre-training job fails while a fault file exists (a full disk stood in),
for the whole-sweep test of a failed job that blocks another and is retried once the fault
has passed (tests/test_failed_job.py). Defined in the tests only (no edit under
``skipnet_sweep/``).

Per backbone, a shared pre-training job (the plain ResNet, trained from scratch with
cross-entropy, cached as SP is) and a trial that fine-tunes it."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

import torch.nn.functional as F

from skipnet_sweep import metrics as M
from skipnet_sweep.methods import Job, Method, PlanContext
from skipnet_sweep.methods.base import make_job
from skipnet_sweep.methods.plain import baseline_job
from skipnet_sweep.stages import StageConfig, TrainConfig
from skipnet_sweep.stages.objective import LossResult


@dataclass(frozen=True)
class FlakySettings:
    """The method's section of a space (``flaky:``)."""

    fault: str = ""  # while this file exists, the pre-training job fails as on a full disk
    iterations: int = 2
    lr: float = 0.01
    batch_size: int = 32


class CrossEntropy:
    gate_mode = "threshold"

    def __call__(self, out, target) -> LossResult:
        loss = F.cross_entropy(out.logits, target)
        return LossResult(loss, {M.TRAIN_LOSS: float(loss)})


class Flaky(Method):
    name = "flaky"
    label = "Flaky"
    marker = "v"
    stages = ("flakypre", "flaky")
    space_key = "flaky"
    settings = FlakySettings

    def jobs(self, ctx: PlanContext) -> list[Job]:
        opts = self.options(ctx.space)
        jobs = []
        for arch in ctx.space.backbones:
            model = baseline_job(ctx, arch).stage.model  # the plain ResNet of ``arch``
            stages = {}
            for stage in self.stages:
                train = TrainConfig(
                    stage=stage,
                    iterations=opts.iterations,
                    lr=opts.lr,
                    batch_size=opts.batch_size,
                    lr_milestones=(),
                    seed=ctx.space.seed,
                )
                options = {"fault": opts.fault} if stage == "flakypre" else {}
                stages[stage] = StageConfig(model, ctx.data, train, options=options)
            coords = [("backbone", arch)]
            pre = make_job(self.name, stages["flakypre"], coords, curve="flakypre", shared=True)
            trial = make_job(
                self.name, stages["flaky"], coords, curve=self.name, needs=pre.id,
                sweep_id=ctx.sweep_id,
            )  # fmt: skip
            jobs += [ctx.add_shared(("flakypre", arch), pre), trial]
        return jobs

    def objective(self, cfg: StageConfig, costs) -> CrossEntropy:
        fault = cfg.options.get("fault")
        if fault and os.path.exists(fault):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), fault)
        return CrossEntropy()
