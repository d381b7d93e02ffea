"""From a validated space to a plan: the SP (and baseline) jobs, then the trials.

Data flows one way: ``Space`` -> ``Plan`` -> SP jobs on Ray Train -> trials on Ray Tune.
Everything here is plain data (no Ray), so ``--dry-run`` and the tests can inspect a plan.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

from skipnet_sweep import metrics as M
from skipnet_sweep.models import ModelConfig
from skipnet_sweep.stages.config import DataConfig, StageConfig, TrainConfig
from skipnet_sweep.stages.runner import complete_model_config
from skipnet_sweep.sweep.space import OptimSpec, Space, SpaceError

# Defaults of the paper's recipes where the space leaves a field empty.
SP_LR, SP_MILESTONES = 0.1, (0.5, 0.75)  # ResNet paper: lr 0.1, /10 at 50% and 75%
HRL_LR = 1e-4  # §4.1: "decreased learning rate of 0.0001", constant


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class SPJob:
    """One supervised job: the SP stage of a (backbone, gate), or a plain-ResNet baseline.

    Attributes:
        kind: ``sp`` or ``baseline``.
        stage: the stage config; its ``key()`` is the cache key of the result.
        trial_id: stable id (MLflow idempotency tag, Ray run name).
    """

    kind: str
    stage: StageConfig

    @property
    def key(self) -> str:
        return self.stage.key()

    @property
    def backbone(self) -> str:
        return self.stage.model.arch

    @property
    def gate(self) -> str | None:
        return self.stage.model.gate

    @property
    def trial_id(self) -> str:
        return f"{self.kind}-{self.backbone}-{self.gate or 'plain'}-{self.key[:8]}"

    def checkpoint(self, storage: str | Path) -> Path:
        """Where the cached result of this job lives (shared storage)."""
        return Path(storage) / "cache" / self.kind / self.key / "model.pt"


@dataclass(frozen=True)
class Point:
    """One trial's coordinates in the space: a method, a backbone and its cost weight."""

    stage: str  # hrl | act | sact
    backbone: str
    gate: str | None  # ff1 / ff2 / rnn for HRL, None for ACT/SACT
    variant: str  # hrl+sp | hrl+s | rl | act | sact
    weight: float  # alpha (HRL) or tau (ACT/SACT)

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "backbone": self.backbone,
            "gate": self.gate,
            "variant": self.variant,
            "weight": self.weight,
        }

    @classmethod
    def from_config(cls, config: dict) -> Point:
        """The point of a Tune trial config (a grid entry or an Optuna sample)."""
        d = config.get("point", config)
        return cls(d["stage"], d["backbone"], d.get("gate"), d["variant"], float(d["weight"]))

    def trial_id(self, sweep_id: str) -> str:
        h = _hash([sweep_id, self.to_dict()])[:6]
        if self.stage == "hrl":
            return f"hrl-{self.backbone}-{self.gate}-{self.variant}-alpha{self.weight:g}-{h}"
        return f"{self.stage}-{self.backbone}-tau{self.weight:g}-{h}"

    @property
    def method(self) -> str:
        return M.method_of(self.stage, self.gate)


def _train_config(stage: str, spec: OptimSpec, lr: float, milestones, **extra) -> TrainConfig:
    kw = dict(
        stage=stage,
        iterations=spec.iterations,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        lr=spec.lr if spec.lr is not None else lr,
        momentum=spec.momentum,
        weight_decay=spec.weight_decay,
        nesterov=spec.nesterov,
        lr_milestones=spec.lr_milestones if spec.lr_milestones is not None else milestones,
        lr_decay=spec.lr_decay,
        eval_every=spec.eval_every,
        eval_path=spec.eval_path,
    )
    kw.update(extra)
    try:
        return TrainConfig(**kw)
    except ValueError as err:
        where = {"baseline": "sp", "act": "baselines.act", "sact": "baselines.sact"}.get(
            stage, stage
        )
        msg = str(err)
        name = msg.split(" ", 1)[0]
        if name in kw:  # "iterations must be >= 1" -> "sp.iterations: must be >= 1"
            raise SpaceError(f"{where}.{name}:{msg[len(name) :]}") from None
        raise SpaceError(f"{where}: {msg}") from None


@dataclass(frozen=True)
class Plan:
    """What a sweep will run.

    Attributes:
        space: the validated space.
        sweep_id: stable id of this sweep (space name + hash of its content): a re-run of the
            same space resumes it; a changed space is a new sweep (SP results are still
            reused through their cache keys).
        sp_jobs: SP jobs and baselines, one per distinct stage config.
        points: the grid of trials (empty for an Optuna search, which samples them).
    """

    space: Space
    sweep_id: str
    sp_jobs: tuple[SPJob, ...]
    points: tuple[Point, ...]

    @property
    def storage(self) -> Path:
        return Path(self.space.storage_path)

    @property
    def data(self) -> DataConfig:
        return self.space.dataset.to_data_config()

    def sp_job(self, kind: str, backbone: str, gate: str | None) -> SPJob:
        for job in self.sp_jobs:
            if (job.kind, job.backbone, job.gate) == (kind, backbone, gate):
                return job
        raise KeyError(f"no {kind} job for {backbone}/{gate}")

    def trial_stage(self, point: Point) -> StageConfig:
        """The stage config of one trial (HRL from its SP checkpoint, ACT/SACT from the
        plain-ResNet baseline, HRL+S and RL from scratch)."""
        space = self.space
        if point.stage in ("act", "sact"):
            spec = getattr(space.baselines, point.stage)
            train = TrainConfig(
                stage=point.stage,
                tau=point.weight,
                iterations=spec.iterations,
                epochs=spec.epochs,
                batch_size=spec.batch_size,
                lr=spec.lr,
                lr_milestones=(),
                seed=space.seed,
            )
            base = self.sp_job("baseline", point.backbone, None)
            model = replace(base.stage.model, gate=point.stage)
            return StageConfig(model, self.data, train, init=str(base.checkpoint(self.storage)))
        hrl = space.hrl
        reward = dict(
            alpha=point.weight,
            gamma=hrl.gamma,
            rl_weight=hrl.rl_weight,
            cost=hrl.cost,
            reward_baseline=hrl.reward_baseline,
            supervised=point.variant != "rl",
            seed=space.seed,
        )
        sp = self.sp_job("sp", point.backbone, point.gate)
        if point.variant == "hrl+sp":
            train = _train_config("hrl", hrl, HRL_LR, (), **reward)
            init = str(sp.checkpoint(self.storage))
            return StageConfig(sp.stage.model, self.data, train, init=init)
        # HRL+S and RL train from scratch for as long as SP + HRL together (§4.3.1), with the
        # SP recipe's learning rate.
        train = replace(sp.stage.train, stage="hrl", **reward, **_sum_lengths(space))
        return StageConfig(sp.stage.model, self.data, train)

    def describe(self) -> str:
        """The plan as a person reads it (``--dry-run``)."""
        s = self.space
        res = s.resources
        lines = [
            f"sweep {self.sweep_id} from {s.source}",
            f"  data: {s.dataset.name} (root: {s.dataset.root or 'default'})",
            f"  storage: {self.storage}",
            f"  SP/baseline jobs ({len(self.sp_jobs)}), each on {res.sp.workers} worker(s) x "
            f"{res.sp.cpu:g} CPU, {res.sp.gpu:g} GPU:",
        ]
        for job in self.sp_jobs:
            cached = " [cached]" if job.checkpoint(self.storage).is_file() else ""
            lines.append(f"    {job.trial_id}{cached}")
        if s.search.algorithm == "optuna":
            a = s.alpha
            lines.append(
                f"  HRL trials: {s.search.num_samples} Optuna samples ({s.search.sampler}) over "
                f"backbone {list(s.backbones)}, gate {list(s.gates)}, alpha "
                + (
                    f"{a.distribution}[{a.low:g}, {a.high:g}]"
                    if not a.is_grid
                    else str(list(a.grid))
                )
            )
        lines.append(
            f"  grid trials ({len(self.points)}), each {res.trial.cpu:g} CPU, {res.trial.gpu:g} GPU, "
            f"at most {s.max_concurrent_trials or 'unlimited'} at once:"
        )
        for p in self.points:
            lines.append(f"    {p.trial_id(self.sweep_id)}")
        return "\n".join(lines)


def _sum_lengths(space: Space) -> dict:
    sp, hrl = space.sp, space.hrl
    if sp.iterations is not None and hrl.iterations is not None:
        return {"iterations": sp.iterations + hrl.iterations, "epochs": None}
    if sp.epochs is not None and hrl.epochs is not None:
        return {"epochs": sp.epochs + hrl.epochs, "iterations": None}
    raise SpaceError(
        "hrl.variants: hrl+s and rl train as long as sp + hrl together; give sp and hrl both in "
        "iterations or both in epochs"
    )


def make_plan(space: Space) -> Plan:
    """Expand a space into its jobs and (grid) trials.

    Raises:
        SpaceError: a combination the stages refuse.
    """
    data = Plan(space, "", (), ()).data
    sp_spec = space.sp
    jobs: list[SPJob] = []
    needs_baseline = space.baseline or any(
        getattr(space.baselines, k) is not None for k in ("act", "sact")
    )
    for arch in space.backbones:
        weights = space.backbone_weights.get(arch)
        if needs_baseline:
            train = _train_config("baseline", sp_spec, SP_LR, SP_MILESTONES, seed=space.seed)
            stage = complete_model_config(
                StageConfig(ModelConfig(arch, None), data, train, backbone_weights=weights)
            )
            jobs.append(SPJob("baseline", stage))
        for gate in space.gates_for(arch):
            train = _train_config(
                "sp", sp_spec, SP_LR, SP_MILESTONES, gating=sp_spec.gating, seed=space.seed
            )
            stage = complete_model_config(
                StageConfig(ModelConfig(arch, gate), data, train, backbone_weights=weights)
            )
            jobs.append(SPJob("sp", stage))
    points: list[Point] = []
    if space.search.algorithm == "grid":
        for arch in space.backbones:
            for gate in space.gates_for(arch):
                for variant in space.hrl.variants:
                    for alpha in space.alpha.grid:
                        points.append(Point("hrl", arch, gate, variant, alpha))
    for kind in ("act", "sact"):
        spec = getattr(space.baselines, kind)
        if spec is None:
            continue
        if not spec.tau.is_grid:
            raise SpaceError(
                f"baselines.{kind}.tau: give a list of values (ACT/SACT run as a grid)"
            )
        for arch in space.backbones:
            for tau in spec.tau.grid:
                points.append(Point(kind, arch, None, kind, tau))
    if "hrl+s" in space.hrl.variants or "rl" in space.hrl.variants:
        _sum_lengths(space)
    sweep_id = f"{space.name}-{_hash(space.identity())}"
    plan = Plan(space, sweep_id, tuple(jobs), tuple(points))
    for p in points:  # build every trial's config now: a bad combination fails before Ray
        plan.trial_stage(p)
    return plan
