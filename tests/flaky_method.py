"""A method whose jobs fail while their fault files exist (a full disk stood in), for the
whole-sweep test of failed jobs retried once the fault has passed (tests/test_failed_job.py).
Defined in the tests only (no edit under ``skipnet_sweep/``).

Per backbone, ``pairs`` pairs of a shared pre-training job (the plain ResNet from scratch,
cross-entropy, cached as SP is) and a trial that fine-tunes it. The pre-training job of pair
``i`` fails while ``<faults>/pre<i>`` exists, its trial while ``<faults>/trial<i>`` does."""

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

    faults: str = ""  # the folder of the fault files
    pairs: int = 1
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
    phases = ("flakypre", "flaky")
    space_key = "flaky"
    settings = FlakySettings

    def jobs(self, ctx: PlanContext) -> list[Job]:
        opts = self.options(ctx.space)
        jobs = []
        for arch in ctx.space.backbones:
            model = baseline_job(ctx, arch).config.model  # the plain ResNet of ``arch``
            for pair in range(opts.pairs):
                configs = {}
                for phase in self.phases:
                    train = TrainConfig(
                        phase=phase,
                        iterations=opts.iterations,
                        lr=opts.lr,
                        batch_size=opts.batch_size,
                        lr_milestones=(),
                        seed=ctx.space.seed,
                    )
                    fault = os.path.join(
                        opts.faults, f"{phase.removeprefix('flaky') or 'trial'}{pair}"
                    )
                    configs[phase] = StageConfig(model, ctx.data, train, options={"fault": fault})
                coords = [("backbone", arch), ("pair", pair)]
                pre = make_job(
                    self.name, configs["flakypre"], coords, curve="flakypre", shared=True
                )
                trial = make_job(
                    self.name, configs["flaky"], coords, curve=self.name, needs=pre.id,
                    sweep_id=ctx.sweep_id,
                )  # fmt: skip
                jobs += [pre, trial]
        return jobs

    def objective(self, cfg: StageConfig, costs) -> CrossEntropy:
        if os.path.exists(cfg.options["fault"]):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), cfg.options["fault"])
        return CrossEntropy()
