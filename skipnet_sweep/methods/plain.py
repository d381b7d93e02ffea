"""The plain ResNet: the reference accuracy and MACs of every figure, and the weights ACT
and SACT start from. One shared job per backbone, on the SP recipe (the ResNet paper's)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from skipnet_sweep.methods import register_method
from skipnet_sweep.methods.base import Job, Method, PlanContext, make_job, recipe
from skipnet_sweep.models import ModelConfig
from skipnet_sweep.stages.config import StageConfig
from skipnet_sweep.stages.network import complete_model_config
from skipnet_sweep.stages.objectives import Supervised

# The ResNet paper's recipe where the space leaves a field empty: lr 0.1, /10 at 50% and 75%.
SP_LR, SP_MILESTONES = 0.1, (0.5, 0.75)


def baseline_job(ctx: PlanContext, arch: str) -> Job:
    """The plain-ResNet job of ``arch`` (made once per plan, shared by every method that
    starts from it)."""
    key = ("baseline", arch)
    if key in ctx.shared:
        return ctx.shared[key]
    space = ctx.space
    # Its own recipe, else SP's without SkipNet's own knob (soft gating is an ablation of
    # the gates).
    where, spec = (
        ("baseline_recipe", space.baseline_recipe) if space.baseline_recipe else ("sp", space.sp)
    )
    spec = space.recipe_for(arch, spec)
    train = recipe(where, "baseline", spec, SP_LR, SP_MILESTONES, seed=space.seed, gating="hard")
    weights = space.backbone_weights.get(arch)
    config = complete_model_config(
        StageConfig(ModelConfig(arch, None), ctx.data, train, backbone_weights=weights)
    )
    job = make_job("plain", config, [("backbone", arch)], curve="plain", shared=True)
    return ctx.add_shared(key, job)


def finetune_jobs(
    ctx: PlanContext,
    method: Method,
    values: Iterable[float],
    config_of: Callable[[Job, float], StageConfig],
) -> list[Job]:
    """Per backbone, the plain ResNet's job, then one job of ``method`` per value of its cost
    weight, each fine-tuning that ResNet (ACT, SACT, BlockDrop): ``config_of(base, value)``
    is the job's config."""
    jobs = []
    for arch in ctx.space.backbones:
        base = baseline_job(ctx, arch)
        jobs.append(base)
        for value in values:
            jobs.append(
                make_job(
                    method.name,
                    config_of(base, value),
                    [("backbone", arch), (method.cost_weight, value)],
                    curve=method.name,
                    needs=base.id,
                    cost_weight=method.cost_weight,
                    sweep_id=ctx.sweep_id,
                )
            )
    return jobs


@register_method
class Plain(Method):
    name = "plain"
    label = "ResNet"
    marker = "s"
    phases = ("baseline",)

    def enabled(self, space) -> bool:
        return space.baseline

    def jobs(self, ctx: PlanContext) -> list[Job]:
        return [baseline_job(ctx, arch) for arch in ctx.space.backbones]

    def objective(self, cfg, costs):
        return Supervised("threshold")
