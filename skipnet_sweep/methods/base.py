"""What a method is: the object a sweep asks everything about one method.

A method (the plain ResNet, SkipNet, ACT, SACT, and next ones such as ConvNet-AIG or
BlockDrop) is one small object in the registry (``skipnet_sweep.methods``), as timm's
``register_model`` plus ``timm/task``: it turns its part of a search space into jobs, says
what each job starts from, builds its network, owns its objective and its FLOP accounting,
and names its MLflow params and its curve in figures. The plan, the Ray layer, tracking,
the ``train`` CLI and the report iterate the registry instead of naming methods.

A method may live outside this package (a plugin, or a test file): ``register_method`` takes
any ``Method`` subclass, and a sweep ships the methods it uses to its Ray workers with the
plan, so nothing has to be installed on the nodes. A method that brings its own gate design
or network kind registers them in ``register_parts``, which ``register_method`` calls (in
the driver, and in every worker that adopts the shipped method).

Every network of a method, fresh or from a checkpoint (resume, model logging, ``train
eval``, FLOPs, latency), is made by its ``build_network``; its loss, optimiser and training
hooks are its ``Objective`` (``skipnet_sweep.stages.objective``).
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol

from torch import Tensor, nn

from skipnet_sweep.errors import SpaceError
from skipnet_sweep.flops import count_costs
from skipnet_sweep.identity import renamed
from skipnet_sweep.models import ModelConfig, build_from_config
from skipnet_sweep.stages.checkpoint import load_model
from skipnet_sweep.stages.config import OPTIM, FieldError, StageConfig, TrainConfig, group_fields
from skipnet_sweep.stages.network import build_stage_model
from skipnet_sweep.stages.objective import Objective

# A parsed search space (``skipnet_sweep.sweep.space.Space``). Methods sit below the sweep
# layer, which plans through them: they read the space, they never import it.
Space = Any


def short_hash(obj: Any, n: int = 10) -> str:
    """A stable short hash of a JSON-able object (sweep ids, trial ids)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


class CostAccounting(Protocol):
    """What every family's cost table offers (``flops.CostTable`` for SkipNets,
    ``models.halting.HaltingCostTable`` for ACT/SACT): exact per-sample MACs from each
    sample's own execution, and the references a computation percentage needs."""

    @property
    def plain_total(self) -> int: ...

    @property
    def full_total(self) -> int: ...

    def skip_savings(self) -> list[int]: ...

    def per_sample(self, executed: Tensor, *, conv_only: bool = False) -> Tensor: ...


@dataclass(frozen=True)
class Job:
    """One unit of work of a sweep: one Tune trial, one MLflow child run, one stage.

    Attributes:
        method: the registered method's name.
        config: the stage the runner trains (its ``init`` is filled in by the plan from
            ``needs``: ``Plan.config_of``).
        coords: where the job sits in the space, in order (backbone, gate, variant, the
            method's cost weight...): MLflow params, run names and figure labels.
        shared: a pre-training job (plain baseline, SkipNet SP): trained once per stage key
            (on Ray Train's data-parallel workers, or in its trial's process with one worker),
            cached in storage and reused by every sweep whose job has the same key.
        needs: the id of the shared job whose final weights this job starts from.
        curve: the curve the run belongs to in figures (MLflow ``method`` tag).
        cost_weight: the name of the coordinate that trades accuracy for cost (``alpha``,
            ``tau``, a target rate), if the job has one.
        id: stable id: MLflow idempotency tag, Tune trial name, Ray Train run name.
    """

    method: str
    config: StageConfig
    coords: tuple[tuple[str, Any], ...]
    shared: bool
    needs: str | None
    curve: str
    cost_weight: str | None
    id: str

    @property
    def key(self) -> str:
        """The cache key of a shared job (everything that determines its result)."""
        return self.config.key()

    def __setstate__(self, state: dict) -> None:
        # A job pickled before ``stage`` was renamed ``config`` (a sweep's saved Tune state).
        self.__dict__.update(renamed(state, "stage", "config"))

    def coord(self, name: str, default: Any = None) -> Any:
        return dict(self.coords).get(name, default)

    @property
    def backbone(self) -> str:
        return self.config.model.arch

    @property
    def cost_weight_value(self) -> float | None:
        return None if self.cost_weight is None else float(self.coord(self.cost_weight))


def make_job(
    method: str,
    config: StageConfig,
    coords: Sequence[tuple[str, Any]],
    *,
    curve: str,
    shared: bool = False,
    needs: str | None = None,
    cost_weight: str | None = None,
    sweep_id: str = "",
) -> Job:
    """A ``Job`` with its stable id: a shared job is named by its stage key (so every sweep
    finds the same cache entry); a trial by its coordinates and the sweep."""
    coords = tuple(coords)
    words = [config.train.phase] + [
        f"{k}{v:g}" if k == cost_weight else str(v) for k, v in coords if v is not None
    ]
    if shared:
        tail = config.key()[:8]
    else:
        tail = short_hash([sweep_id, method, [list(c) for c in coords]], 6)
    job_id = "-".join([*words, tail])
    return Job(method, config, coords, shared, needs, curve, cost_weight, job_id)


@dataclass
class PlanContext:
    """What a method sees while the plan is made: the space, the data every stage reads,
    and the shared jobs made so far (so a method can start from another's, e.g. ACT from
    the plain baseline)."""

    space: Space
    sweep_id: str
    shared: dict[tuple, Job] = field(default_factory=dict)

    @property
    def data(self):
        return self.space.dataset.to_data_config()

    def add_shared(self, lookup: tuple, job: Job) -> Job:
        """Register a shared job under ``lookup`` (e.g. ``("sp", arch, gate)``), once."""
        return self.shared.setdefault(lookup, job)


class Method(ABC):
    """Base class of a registered method. Subclasses set the class attributes and
    implement ``jobs`` and ``objective``; the other hooks have working defaults.

    Attributes:
        name: registry name (also the ``train`` subcommand's family).
        label: legend label in figures.
        marker: matplotlib marker in figures.
        phases: the ``TrainConfig.phase`` values this method trains (the ``train`` CLI's
            subcommands, the MLflow tag ``stage``).
        cost_weight: the coordinate that trades accuracy for cost (MLflow param), if any.
        space_key: the search-space key holding this method's settings (plugins); None for
            the built-in methods, whose settings are the space's own fields.
        settings: the dataclass the ``space_key`` section is read into (typed, validated
            once, like every other field of a space).
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    marker: ClassVar[str] = "o"
    phases: ClassVar[tuple[str, ...]] = ()
    cost_weight: ClassVar[str | None] = None
    space_key: ClassVar[str | None] = None
    settings: ClassVar[type | None] = None

    # --- the plan -----------------------------------------------------------------------

    def enabled(self, space: Space) -> bool:
        """Whether ``space`` asks for this method (a plugin: its ``space_key`` is present)."""
        return self.space_key is not None and self.space_key in space.methods

    def options(self, space: Space) -> Any:
        """This method's settings in ``space`` (an instance of ``settings``)."""
        return space.methods.get(self.space_key) if self.space_key else None

    @abstractmethod
    def jobs(self, ctx: PlanContext) -> list[Job]:
        """Expand the space into this method's jobs, the shared jobs they start from
        included (the plan keeps each shared job once)."""

    def validate(self, space: Space) -> None:  # noqa: B027 (optional hook, nothing by default)
        """Check what the settings' types cannot (raise ``SpaceError`` naming the field)."""

    def search_space(self, space: Space) -> dict | None:
        """Adaptive (Optuna) search over this method, if the space asks for one: a mapping
        ``name -> ("categorical", choices) | ("float", low, high, log)``."""
        return None

    def sampled_job(self, ctx: PlanContext, sample: dict) -> Job:
        """The job of one adaptive-search sample (see ``search_space``)."""
        raise ValueError(f"method {self.name!r} has no adaptive search")

    # --- the phases ---------------------------------------------------------------------

    def phase_gate(self, phase: str) -> str | tuple[str, ...] | None:
        """The ``ModelConfig.gate`` of the network ``phase`` trains: a fixed kind (None: the
        plain ResNet), or the gate designs it may choose from, the default first (the
        ``train`` CLI's ``--gate``)."""
        return None

    def check_config(self, cfg: StageConfig) -> None:
        """Refuse a config of one of this method's phases that it cannot train (``ValueError``,
        one line); every ``StageConfig`` of the phase runs it. By default the network must be
        the kind ``phase_gate`` names (a tuple of designs is the ``train`` CLI's choice, not a
        limit)."""
        phase, want, gate = cfg.train.phase, self.phase_gate(cfg.train.phase), cfg.model.gate
        if want is None and gate is not None:
            raise ValueError(f"the {phase} phase trains the plain ResNet: set gate to none")
        if isinstance(want, str) and gate != want:
            raise ValueError(f"the {phase} phase trains a {want} network: set gate to {want}")

    def phase_options(self, phase: str) -> type | None:
        """The dataclass of ``phase``'s own settings beyond ``TrainConfig`` (a target rate, a
        penalty), held in ``StageConfig.options`` as its ``asdict``; the ``train`` CLI offers
        its fields as flags (type, default and help from the dataclass). None: no options."""
        return None

    def train_config(self, phase: str, given: dict[str, Any]) -> TrainConfig:
        """The ``TrainConfig`` of ``phase`` from the fields given (the ``train`` CLI's flags),
        the rest at this method's defaults."""
        return TrainConfig(phase=phase, **given)

    def train_fields(self, phase: str) -> tuple[str, ...]:
        """The ``TrainConfig`` fields ``phase`` reads (the ``train`` CLI's flags): by default
        the optimiser's, as a space's optimisation section has them."""
        return optimiser_fields()

    @abstractmethod
    def objective(self, cfg: StageConfig, costs: CostAccounting) -> Objective:
        """The objective of a stage of one of this method's phases (``cfg.train.phase``): its
        loss and training hooks (an ``Objective``; a plain ``(out, target)`` callable also
        works)."""

    def register_parts(self) -> None:  # noqa: B027 (optional hook, nothing by default)
        """Register the gate designs (``models.register_gate``) and network kinds
        (``models.register_network``) this method brings, in this process. Called by
        ``register_method``: in the driver and in every Ray worker the method is shipped to."""

    def build_network(self, model: ModelConfig) -> nn.Module:
        """The network of ``model``, freshly initialised: every network of this method,
        fresh or rebuilt from a checkpoint, is made here. By default the model registry's."""
        return build_from_config(model)

    def build_model(self, cfg: StageConfig) -> nn.Module:
        """The stage's network with its initial weights (fresh, from ``cfg.init``, or from
        torchvision-format backbone weights)."""
        return build_stage_model(cfg, build=self.build_network)

    def load_network(
        self, path: str | os.PathLike, expect: ModelConfig | None = None
    ) -> tuple[nn.Module, dict[str, Any]]:
        """The network a checkpoint of this method holds, and the checkpoint's payload
        (``stages.checkpoint.load_model``, built by ``build_network``)."""
        return load_model(path, expect, build=self.build_network)

    def count_costs(self, model: nn.Module, input_shape: tuple[int, int, int]) -> CostAccounting:
        """The network's exact per-sample MAC table at ``input_shape``."""
        return count_costs(model, input_shape)

    # --- tracking -----------------------------------------------------------------------

    def params(self, job: Job) -> dict[str, Any]:
        """MLflow params of one job, beyond the common ones (its config, coordinates)."""
        return {}

    def __repr__(self) -> str:
        return f"<method {self.name}>"


def optimiser_fields() -> tuple[str, ...]:
    """The ``TrainConfig`` fields of a space's optimisation section, and the seed."""
    return (*group_fields(OPTIM), "seed")


def recipe(where: str, phase: str, spec: Any, lr: float, milestones, **extra) -> TrainConfig:
    """A ``TrainConfig`` for ``phase`` from a space's optimisation section ``spec`` (its
    fields that are TrainConfig's; an empty recipe field takes the method's default ``lr``
    or ``milestones``); ``extra`` sets the rest (the swept weight, the seed...).

    Raises:
        SpaceError: naming the space field (``where.field``) that the phase refuses.
    """
    # The section's fields that are TrainConfig's (all but e.g. HRL's ``variants``).
    train_fields = {f.name for f in fields(TrainConfig)}
    kw = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name in train_fields}
    kw["phase"] = phase
    if kw.get("lr") is None:
        kw["lr"] = lr
    if kw.get("lr_milestones") is None:
        kw["lr_milestones"] = milestones
    kw.update(extra)
    try:
        return TrainConfig(**kw)
    except FieldError as err:  # named by TrainConfig: the space's field is where.field
        raise SpaceError(f"{where}.{err.field}: {err.reason}") from None
