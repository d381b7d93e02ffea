"""The search-space schema: a frozen dataclass per section of a space file, and ``Space``.

The optimisation sections take their fields from the stage configs (``stages.config``), so a
field and its default are declared once, where the stage reads it. README.md ("Search-space
files") describes every field.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import Any

from skipnet_sweep.errors import SpaceError
from skipnet_sweep.identity import HASH_WHEN_SET, hashed_dict
from skipnet_sweep.methods.halting import LR as HALTING_LR
from skipnet_sweep.methods.halting import RECIPE_FIELDS as HALTING_RECIPE
from skipnet_sweep.stages.config import (
    HRL,
    OPTIM,
    SP,
    DataConfig,
    FieldError,
    LatencyConfig,
    TrainConfig,
    group_fields,
)
from skipnet_sweep.sweep.space.build import NOT_A_KEY, build, convert, join, key_name, kind
from skipnet_sweep.yamlio import show

DISTRIBUTIONS = ("uniform", "loguniform")
# How a sweep is executed, not what it computes: changing these resumes the same sweep.
EXECUTION_FIELDS = ("max_concurrent_trials", "max_failures", "resources", "mlflow", "latency")
# Where things are, not what is computed: left out of the sweep id, so that the same
# command run from another folder (relative paths resolve differently) is the same sweep.
LOCATION_FIELDS = ("storage_path", "dataset.root")


@dataclass(frozen=True)
class ChangedDefault:
    """A default that changed after spaces were written against the old one: a space that
    leaves the field out now trains differently, so the sweep says so before it starts."""

    section: str
    name: str
    old: str
    new: str
    meaning: str  # what the new default does differently, in a few words

    def notice(self) -> str:
        dotted = f"{self.section}.{self.name}"
        return (
            f"note: {dotted} is not set; its default is now {self.new!r} ({self.meaning}), it was "
            f"{self.old!r}; set {dotted}: {self.old} for the earlier meaning, or {dotted}: "
            f"{self.new} to keep the new one and silence this"
        )


CHANGED_DEFAULTS = (
    # A space written before the official CIFAR reduction became the default (docs/fidelity.md).
    ChangedDefault(
        "hrl",
        "rl_reduction",
        "mean",
        "sum",
        "the REINFORCE term is summed over the batch as the official CIFAR code does, so "
        "rl_weight weighs every image: batch_size times heavier than averaged",
    ),
)


def changed_default_notices(raw: dict) -> tuple[str, ...]:
    """One line per ``CHANGED_DEFAULTS`` entry that the raw space (overrides applied)
    leaves out."""
    notices = []
    for changed in CHANGED_DEFAULTS:
        section = raw.get(changed.section)
        if not isinstance(section, dict) or changed.name not in section:
            notices.append(changed.notice())
    return tuple(notices)


@dataclass(frozen=True)
class Values:
    """A swept number: a grid of values or a distribution (for adaptive search).

    Written in YAML as a number, a list (a grid), or a mapping
    ``{distribution: loguniform, low: 0.01, high: 4}``.
    """

    grid: tuple[float, ...] = ()
    distribution: str | None = None
    low: float | None = None
    high: float | None = None

    @property
    def is_grid(self) -> bool:
        return self.distribution is None

    @classmethod
    def from_space(cls, data: Any, where: str) -> Values:
        """Read from a number, a list or a mapping (``build`` calls this)."""
        if isinstance(data, bool):
            raise SpaceError(f"{where}: expected a number, a list or a distribution, got {data!r}")
        if isinstance(data, int | float):  # one number: the same check as each item of a list
            return cls(grid=(convert(float, data, where),))
        if isinstance(data, list):
            if not data:
                raise SpaceError(f"{where}: the list of values is empty")
            return cls(grid=tuple(convert(float, v, f"{where}[{i}]") for i, v in enumerate(data)))
        if isinstance(data, dict):
            return cls._from_mapping(data, where)
        raise SpaceError(f"{where}: expected a number, a list or a distribution, got {kind(data)}")

    @classmethod
    def _from_mapping(cls, data: dict, where: str) -> Values:
        if "grid" in data and len(data) == 1:
            grid = data["grid"]
            if not isinstance(grid, list):
                raise SpaceError(
                    f"{join(where, 'grid')}: expected a list of numbers, got {kind(grid)}"
                )
            return cls.from_space(grid, join(where, "grid"))
        allowed = {"distribution", "low", "high"}
        unknown = sorted(set(data) - allowed, key=str)
        if unknown:
            raise SpaceError(
                f"{join(where, key_name(unknown[0]))}: unknown field; allowed: grid, or distribution/low/high"
            )
        dist = data.get("distribution")
        if dist not in DISTRIBUTIONS:
            raise SpaceError(
                f"{join(where, 'distribution')}: {show(dist)} is not allowed; allowed: {', '.join(DISTRIBUTIONS)}"
            )
        low = convert(float, data.get("low"), join(where, "low"))
        high = convert(float, data.get("high"), join(where, "high"))
        if not low < high:
            raise SpaceError(f"{where}: low must be below high, got {low} and {high}")
        return cls(distribution=dist, low=low, high=high)


def _section(
    name: str,
    doc: str,
    source: type,
    names: tuple[str, ...],
    *,
    bases: tuple[type, ...] = (),
    rename: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
    own: tuple[tuple[str, Any, Any], ...] = (),
    methods: dict[str, Any] | None = None,
) -> type:
    """A frozen dataclass of the fields ``names`` of the stage config ``source``, with its
    types and defaults: a field is declared once, where the stage reads it, and a space
    section offers it under the same name (or its ``rename``). A ``recipe`` field (see
    ``stages.config``) is optional with None, the method's default; ``defaults`` replaces a
    default; ``own`` adds the section's own fields as (name, type, ``dataclasses.field``);
    ``methods`` are the class's methods."""
    hints = typing.get_type_hints(source)
    rename, defaults = rename or {}, defaults or {}
    spec = []
    for f in fields(source):
        if f.name not in names:
            continue
        tp = hints[f.name]
        if f.name in defaults:
            default = field(default=defaults[f.name])
        elif f.metadata.get("recipe"):
            tp, default = tp | None, field(default=None)
        elif f.default_factory is not MISSING:
            default = field(default_factory=f.default_factory)
        else:
            default = field(default=f.default)
        spec.append((rename.get(f.name, f.name), tp, default))
    cls = make_dataclass(name, [*spec, *own], bases=bases, namespace=methods, frozen=True)
    cls.__module__, cls.__doc__ = __name__, doc  # found by pickle, as Ray ships plans
    return cls


def _to_data_config(self) -> DataConfig:
    """The stages' ``DataConfig``: the same fields, the file's ``name`` as ``dataset``."""
    fields_ = asdict(self)
    split = fields_["val_split"]
    if split is not None and split >= 1 and float(split).is_integer():
        fields_["val_split"] = int(split)  # a count of images
    try:
        return DataConfig(dataset=fields_.pop("name"), **fields_)
    except FieldError as err:  # "val_split must be ..." -> "dataset.val_split: must be ..."
        raise SpaceError(f"dataset.{err.field}: {err.reason}") from None


DatasetSpec = _section(
    "DatasetSpec",
    "The data every stage of the sweep reads: ``stages.DataConfig``'s fields, its ``dataset``"
    " written ``name``.",
    DataConfig,
    tuple(f.name for f in fields(DataConfig)),
    rename={"dataset": "name"},
    methods={"to_data_config": _to_data_config},
)

OptimSpec = _section(
    "OptimSpec",
    "Optimisation of one stage: ``stages.TrainConfig``'s optimiser fields; its recipe fields"
    " (lr, lr_milestones) None for the method's recipe (e.g. HRL's lr 1e-4, constant).",
    TrainConfig,
    group_fields(OPTIM),
)

SPSpec = _section(
    "SPSpec",
    "Supervised pre-training (and the plain baseline's recipe unless it has its own): the"
    " optimiser, SP's own TrainConfig fields, and ``from_baseline``: SP starts from the trained"
    " plain ResNet of its backbone (its gates fresh) instead of from scratch as in the paper.",
    TrainConfig,
    group_fields(SP),
    bases=(OptimSpec,),
    own=(("from_baseline", bool, field(default=False)),),
)

HRLSpec = _section(
    "HRLSpec",
    "Hybrid-RL fine-tuning: the optimiser, HRL's own TrainConfig fields, and ``variants``, the"
    " §4.3 ablations (HRL from scratch, pure RL).",
    TrainConfig,
    group_fields(HRL),
    bases=(OptimSpec,),
    own=(("variants", tuple[str, ...], field(default=("hrl+sp",))),),
)

HaltingSpec = _section(
    "HaltingSpec",
    "An ACT or SACT fan-out: its cost weight tau (swept, so a ``Values``) and its fine-tuning"
    " recipe (``methods.halting.RECIPE_FIELDS``, with that method's learning rate).",
    TrainConfig,
    HALTING_RECIPE,
    defaults={"lr": HALTING_LR},
    own=(("tau", Values, field(default_factory=lambda: Values(grid=(0.01,)))),),
)


@dataclass(frozen=True)
class SearchSpec:
    """How alpha (and the other swept values) are explored."""

    algorithm: str = "grid"
    sampler: str = "tpe"
    num_samples: int = 1


@dataclass(frozen=True)
class SchedulerSpec:
    """Early stopping of HRL trials on top-1 (ASHA)."""

    type: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2


@dataclass(frozen=True)
class WorkerResources:
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class SPResources(WorkerResources):
    workers: int = 1

    @property
    def data_parallel(self) -> bool:
        """Shared jobs train on Ray Train's workers (inside their trial); with one worker
        they train in the trial's own process (sweep/trials.py)."""
        return self.workers > 1


@dataclass(frozen=True)
class ResourcesSpec:
    """Per SP worker (and how many) and per HRL trial."""

    sp: SPResources = field(default_factory=SPResources)
    trial: WorkerResources = field(default_factory=WorkerResources)


@dataclass(frozen=True)
class MlflowSpec:
    tracking_uri: str | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class BaselinesSpec:
    act: HaltingSpec | None = None
    sact: HaltingSpec | None = None


@dataclass(frozen=True)
class Space:
    """A whole sweep. See README.md ("Search-space files") for every field."""

    name: str
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    backbones: tuple[str, ...] = ("cifar_resnet38",)
    gates: tuple[str, ...] = ("rnn",)
    backbone_gates: dict = field(default_factory=dict)
    backbone_weights: dict = field(default_factory=dict)
    # Per gate design, the std of its fresh logit layer's init (``ModelConfig.gate_out_std``);
    # a design left out gets He fan-out.
    gate_out_std: dict = field(default_factory=dict, metadata=HASH_WHEN_SET)
    # Per backbone, optimiser fields that replace those of ``sp`` and ``baseline_recipe`` in
    # that backbone's jobs (``recipe_for``): e.g. the ResNet paper's warm-up for ResNet-110.
    backbone_recipe: dict = field(default_factory=dict, metadata=HASH_WHEN_SET)
    baseline: bool = True
    # The plain ResNet's own recipe when it differs from SP's (e.g. a longer one, with SP
    # then a short fine-tune from it: sp.from_baseline); None: the sp recipe.
    baseline_recipe: OptimSpec | None = None
    sp: SPSpec = field(default_factory=SPSpec)
    hrl: HRLSpec = field(default_factory=HRLSpec)
    alpha: Values = field(default_factory=lambda: Values(grid=(0.1,)))
    search: SearchSpec = field(default_factory=SearchSpec)
    scheduler: SchedulerSpec | None = None
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_concurrent_trials: int | None = None
    max_failures: int = 1
    storage_path: str = "./runs"
    mlflow: MlflowSpec = field(default_factory=MlflowSpec)
    baselines: BaselinesSpec = field(default_factory=BaselinesSpec)
    seed: int = 0
    # How every finished network is timed beside the plain ResNet (batch sizes, warm-up,
    # repeats); how a sweep is measured, not what it trains.
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    # Sections of plugin methods, by their ``space_key`` (each read into the method's own
    # settings dataclass); the built-in methods' settings are the fields above.
    methods: dict = field(default_factory=dict, metadata=NOT_A_KEY)
    source: str = field(default="", metadata=NOT_A_KEY)  # the file it was read from
    # Lines to print before the sweep starts: the defaults it relies on that have changed
    # (``changed_default_notices``; not a YAML key).
    notices: tuple[str, ...] = field(default=(), metadata=NOT_A_KEY)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("source")
        d.pop("notices")
        return d

    def identity(self) -> dict:
        """What the sweep computes, hashed into its id: everything but how it is executed
        (``EXECUTION_FIELDS``) and where things are (``LOCATION_FIELDS``). Weights files
        enter by file name, not by path: torchvision names its files by their content hash
        (``resnet50-0676ba61.pth``), and a path would depend on the working directory.
        A field added after ids were handed out enters only when set (``identity.py``)."""
        d = hashed_dict(self)
        d.pop("source")
        d.pop("notices")
        for k in EXECUTION_FIELDS:
            d.pop(k)
        for dotted in LOCATION_FIELDS:
            *parents, last = dotted.split(".")
            node = d
            for part in parents:
                node = node[part]
            node.pop(last)
        d["backbone_weights"] = {
            arch: Path(p).name if isinstance(p, str) else p
            for arch, p in self.backbone_weights.items()
        }
        return d

    def recipe_for(self, arch: str, spec: Any) -> Any:
        """``spec`` (the ``sp`` or ``baseline_recipe`` section) as ``arch`` trains it: with the
        fields its ``backbone_recipe`` entry gives, typed as the section types them."""
        given = self.backbone_recipe.get(arch)
        if not given:
            return spec
        typed = build(OptimSpec, given, f"backbone_recipe.{arch}")
        return replace(spec, **{name: getattr(typed, name) for name in given})

    def gates_for(self, arch: str) -> tuple[str, ...]:
        """The gate designs swept on ``arch``: its ``backbone_gates`` entry, else ``gates``."""
        return tuple(self.backbone_gates.get(arch, self.gates))

    @property
    def uses_gpu(self) -> bool:
        return self.resources.sp.gpu > 0 or self.resources.trial.gpu > 0
