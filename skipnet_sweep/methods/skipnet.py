"""SkipNet (Wang et al., ECCV 2018): supervised pre-training of the gated network (SP,
Eq. 9), then hybrid-RL fine-tuning over the cost weight alpha (HRL, Eq. 5-8), with the
§4.3 ablations as options of the same method: HRL from scratch (``hrl+s``), pure RL
(``rl``) and soft gating in SP (``sp.gating: soft``, Table 3).

One shared SP job per (backbone, gate); one trial per (backbone, gate, variant, alpha),
``hrl+sp`` starting from its SP checkpoint, ``hrl+s``/``rl`` from scratch.
"""

from __future__ import annotations

from dataclasses import replace

from skipnet_sweep.errors import SpaceError
from skipnet_sweep.methods import register_method
from skipnet_sweep.methods.base import (
    Job,
    Method,
    PlanContext,
    make_job,
    optimiser_fields,
    recipe,
)
from skipnet_sweep.methods.plain import SP_LR, SP_MILESTONES, baseline_job
from skipnet_sweep.models import ModelConfig, list_gates
from skipnet_sweep.stages.config import (
    HRL,
    SP,
    StageConfig,
    TrainConfig,
    group_fields,
    hrl_defaults,
)
from skipnet_sweep.stages.network import complete_model_config
from skipnet_sweep.stages.objectives import HybridRL, Supervised, gate_costs

HRL_LR = 1e-4  # §4.1: "decreased learning rate of 0.0001", constant
VARIANTS = ("hrl+sp", "hrl+s", "rl")


def _rl_fields() -> tuple[str, ...]:
    """The HRL section's objective fields (gamma, rl_weight, ...): the ``TrainConfig``
    fields of the HRL group, beyond the optimiser's."""
    return group_fields(HRL)


def sp_job(ctx: PlanContext, arch: str, gate: str) -> Job:
    """The SP job of (``arch``, ``gate``), made once per plan."""
    key = ("sp", arch, gate)
    if key in ctx.shared:
        return ctx.shared[key]
    space = ctx.space
    spec = space.recipe_for(arch, space.sp)
    train = recipe("sp", "sp", spec, SP_LR, SP_MILESTONES, gating=spec.gating, seed=space.seed)
    weights = space.backbone_weights.get(arch)
    base = baseline_job(ctx, arch) if space.sp.from_baseline else None
    config = complete_model_config(
        StageConfig(
            ModelConfig(arch, gate, gate_out_std=space.gate_out_std.get(gate)),
            ctx.data,
            train,
            backbone_weights=None if base else weights,
            # What it starts from is part of what it is (its cache key).
            options={"from": base.key} if base else {},
        )
    )
    job = make_job(
        "skipnet",
        config,
        [("backbone", arch), ("gate", gate)],
        curve=f"skipnet-{gate}",
        shared=True,
        needs=base.id if base else None,
    )
    return ctx.add_shared(key, job)


def _sum_lengths(space, arch: str) -> dict:
    sp, hrl = space.recipe_for(arch, space.sp), space.hrl
    if sp.iterations is not None and hrl.iterations is not None:
        return {"iterations": sp.iterations + hrl.iterations, "epochs": None}
    if sp.epochs is not None and hrl.epochs is not None:
        return {"epochs": sp.epochs + hrl.epochs, "iterations": None}
    raise SpaceError(
        "hrl.variants: hrl+s and rl train as long as sp + hrl together; give sp and hrl both in "
        "iterations or both in epochs"
    )


@register_method
class SkipNet(Method):
    name = "skipnet"
    label = "SkipNet"
    marker = "o"
    phases = ("sp", "hrl")
    cost_weight = "alpha"

    def enabled(self, space) -> bool:
        return True  # the platform's subject: every space trains SkipNets

    def jobs(self, ctx: PlanContext) -> list[Job]:
        space = ctx.space
        jobs = []
        for arch in space.backbones:
            if space.sp.from_baseline:
                jobs.append(baseline_job(ctx, arch))
            for gate in space.gates_for(arch):
                jobs.append(sp_job(ctx, arch, gate))
                if space.search.algorithm != "grid":
                    continue
                for variant in space.hrl.variants:
                    for alpha in space.alpha.grid:
                        jobs.append(self._trial(ctx, arch, gate, variant, alpha))
        return jobs

    def _trial(self, ctx: PlanContext, arch: str, gate: str, variant: str, alpha: float) -> Job:
        space = ctx.space
        hrl = space.hrl
        sp = sp_job(ctx, arch, gate)
        if variant == "hrl+sp":
            train = recipe(
                "hrl", "hrl", hrl, HRL_LR, (), alpha=alpha, supervised=True, seed=space.seed
            )
            config, needs = StageConfig(sp.config.model, ctx.data, train), sp.id
        else:
            # HRL+S and RL train from scratch for as long as SP + HRL together (§4.3.1), with
            # the SP recipe's optimiser and HRL's objective.
            reward = {k: getattr(hrl, k) for k in _rl_fields()}
            train = replace(
                sp.config.train,
                phase="hrl",
                alpha=alpha,
                supervised=variant != "rl",
                **reward,
                **_sum_lengths(space, arch),
            )
            config, needs = StageConfig(sp.config.model, ctx.data, train), None
        return make_job(
            self.name,
            config,
            [("backbone", arch), ("gate", gate), ("variant", variant), ("alpha", alpha)],
            curve=f"skipnet-{gate}",
            needs=needs,
            cost_weight="alpha",
            sweep_id=ctx.sweep_id,
        )

    def validate(self, space) -> None:
        if "hrl+s" in space.hrl.variants or "rl" in space.hrl.variants:
            for arch in space.backbones:
                _sum_lengths(space, arch)

    def search_space(self, space) -> dict | None:
        if space.search.algorithm != "optuna":
            return None
        a = space.alpha
        alpha = (
            ("categorical", list(a.grid))
            if a.is_grid
            else ("float", a.low, a.high, a.distribution == "loguniform")
        )
        return {
            "backbone": ("categorical", list(space.backbones)),
            "gate": ("categorical", list(space.gates)),
            "alpha": alpha,
        }

    def sampled_job(self, ctx: PlanContext, sample: dict) -> Job:
        return self._trial(ctx, sample["backbone"], sample["gate"], "hrl+sp", sample["alpha"])

    def phase_gate(self, phase: str) -> tuple[str, ...]:
        return ("rnn", "ff1", "ff2")  # the paper's designs; RNNGate its default (§4.1)

    def check_config(self, cfg: StageConfig) -> None:
        # Any registered gate design: a plugin's design trains through SP and HRL too.
        if cfg.model.gate not in list_gates():
            raise ValueError(
                f"the {cfg.train.phase} phase needs a gate ({', '.join(list_gates())})"
            )

    def train_config(self, phase: str, given: dict) -> TrainConfig:
        return hrl_defaults(**given) if phase == "hrl" else TrainConfig(phase=phase, **given)

    def train_fields(self, phase: str) -> tuple[str, ...]:
        if phase == "sp":
            return (*optimiser_fields(), *group_fields(SP))
        return (*optimiser_fields(), "alpha", "supervised", *_rl_fields())

    def objective(self, cfg, costs):
        train = cfg.train
        if train.phase == "sp":
            return Supervised(train.gating)
        savings = costs.skip_savings()
        return HybridRL(train, gate_costs(savings if train.cost == "flops" else None, len(savings)))

    def params(self, job: Job) -> dict:
        t = job.config.train
        if t.phase != "hrl":
            return {"gating": t.gating}
        return {"gamma": t.gamma, "rl_weight": t.rl_weight, "cost": t.cost}
