"""Search-space files: a typed schema, validated once, before anything starts.

A space is a YAML file (a path, or a bundled one in ``skipnet_sweep/spaces``) that becomes a
``Space``. Every problem is reported as one line naming the file, the field and what is
allowed, as a ``SpaceError``; ``run`` turns that into exit code 2 before Ray is started or
anything is written.
"""

from __future__ import annotations

import math
import os
import re
import types
import typing
from dataclasses import (
    MISSING,
    asdict,
    dataclass,
    field,
    fields,
    is_dataclass,
    make_dataclass,
    replace,
)
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from skipnet_sweep.data import list_datasets, val_count
from skipnet_sweep.errors import SpaceError
from skipnet_sweep.identity import HASH_WHEN_SET, hashed_dict
from skipnet_sweep.methods import plugin_keys
from skipnet_sweep.methods.base import recipe
from skipnet_sweep.methods.halting import LR as HALTING_LR
from skipnet_sweep.methods.halting import RECIPE_FIELDS as HALTING_RECIPE
from skipnet_sweep.models import GATE_DESIGNS, list_models
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
from skipnet_sweep.yamlio import YamlError, read_yaml_file, show

SEARCH_ALGORITHMS = ("grid", "optuna")
OPTUNA_SAMPLERS = ("tpe", "nsga2", "random")
DISTRIBUTIONS = ("uniform", "loguniform")
HRL_VARIANTS = ("hrl+sp", "hrl+s", "rl")
SYNTHETIC_KEYS = ("size", "channels", "image_size", "classes")
# How a sweep is executed, not what it computes: changing these resumes the same sweep.
EXECUTION_FIELDS = ("max_concurrent_trials", "max_failures", "resources", "mlflow", "latency")
# Where things are, not what is computed: left out of the sweep id, so that the same
# command run from another folder (relative paths resolve differently) is the same sweep.
LOCATION_FIELDS = ("storage_path", "dataset.root")
SCHEDULERS = ("asha",)


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
    # 1274c04 (2026-11-28) made the official CIFAR reduction the default.
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


# Names become MLflow experiment names and filter-string values ('...'), Ray experiment
# folders and file names: letters, digits and . _ + - only, no quotes or slashes.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
NAME_RULE = "1 to 100 of A-Z a-z 0-9 . _ + -, starting with a letter or digit"
# A URI with a scheme (s3://bucket/runs) is not a local path: it is neither resolved nor
# checked here.
URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

# Images per split of each dataset, as data/ builds it, for the checks and estimates that
# must not read the data (DatasetInfo does not carry sizes).
SPLIT_SIZES: dict[str, tuple[int, int]] = {
    "fashion_mnist": (60_000, 10_000),
    "cifar10": (50_000, 10_000),
    "cifar100": (50_000, 10_000),
    "svhn": (73_257 + 531_131, 26_032),  # train + extra (data.build_datasets' default)
    "imagenet": (1_281_167, 50_000),  # ILSVRC2012 train / val
}
SYNTHETIC_DEFAULT_SIZE = 512  # data.build_datasets: synthetic_size; the test set is a quarter

# Upper bounds far beyond any real run (ImageNet SP is 90 epochs, 450k steps of 256), so
# that a slip (an extra digit, a value in the wrong field) is refused before it books a
# cluster for a year. (low, high) inclusive; None for "above 0".
MAX_STEPS = 10_000_000
BOUNDS: dict[str, tuple[float | None, float]] = {
    "iterations": (1, MAX_STEPS),
    "epochs": (None, 10_000),
    "batch_size": (1, 65_536),
    "eval_every": (1, MAX_STEPS),
    "num_samples": (1, 100_000),
    "grace_period": (1, MAX_STEPS),
    "reduction_factor": (2, 100),
    "max_concurrent_trials": (1, 10_000),
    "max_failures": (0, 100),
    "workers": (1, 1_024),
    "cpu": (0, 1_024),
    "gpu": (0, 64),
    "num_workers": (0, 256),
    "seed": (0, 2**32 - 1),
    "gate_out_std": (None, 100),
}
SYNTHETIC_BOUNDS: dict[str, tuple[int, int]] = {
    "size": (1, 1_000_000),
    "channels": (1, 64),
    "image_size": (1, 1_024),
    "classes": (2, 100_000),  # make_synthetic needs two classes
}

# Bundled spaces are package data (pyproject's package-data), read through importlib.resources:
# an installed wheel has them as well as a checkout. pip installs a wheel as files, so this is
# a ``Path`` there; from a zip archive it is not, and ``load_space`` copes with both.
SPACES_DIR: Traversable = files("skipnet_sweep") / "search_spaces"
BUNDLED_PREFIX = "bundled:"  # how a bundled space that is not a file on disk is named


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
    methods: dict = field(default_factory=dict)
    source: str = ""  # the file it was read from (not a YAML key)
    # Lines to print before the sweep starts: the defaults it relies on that have changed
    # (``changed_default_notices``; not a YAML key).
    notices: tuple[str, ...] = ()

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
        typed = _build(OptimSpec, given, f"backbone_recipe.{arch}")
        return replace(spec, **{name: getattr(typed, name) for name in given})

    def gates_for(self, arch: str) -> tuple[str, ...]:
        """The gate designs swept on ``arch``: its ``backbone_gates`` entry, else ``gates``."""
        return tuple(self.backbone_gates.get(arch, self.gates))

    @property
    def uses_gpu(self) -> bool:
        return self.resources.sp.gpu > 0 or self.resources.trial.gpu > 0


def bundled_spaces() -> list[str]:
    """Names of the bundled spaces (``--space NAME``), sorted."""
    return sorted(
        f.name.removesuffix(".yaml")
        for f in SPACES_DIR.iterdir()
        if f.name.endswith(".yaml") and f.is_file()
    )


def find_space(name_or_path: str) -> Path | Traversable:
    """A space file by path, or a bundled one by name (``quickstart`` or ``quickstart.yaml``).

    Returns:
        The path given; or the bundled resource, a ``Path`` when the package is installed
        as files (a checkout, pip's install of a wheel), a ``Traversable`` from an archive.
    """
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    stem = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
    bundled = SPACES_DIR / stem
    if bundled.is_file():
        return bundled
    raise SpaceError(
        f"{name_or_path}: no such space file; bundled spaces: "
        f"{', '.join(bundled_spaces()) or 'none found'}"
    )


def load_space(
    name_or_path: str, overrides: dict[str, Any] | None = None, *, check_paths: bool = True
) -> Space:
    """Read, type-check and validate a space file.

    Args:
        name_or_path: a path or a bundled space's name.
        overrides: dotted keys to replace after reading (``{"hrl.iterations": 50}``).
        check_paths: also refuse what this machine lacks (``path_problems``: a missing
            dataset root or weights file, a storage path it cannot write); False for a dry
            run, which reports them instead.

    Raises:
        SpaceError: one line naming the file, the field and what is allowed.
    """
    found = find_space(name_or_path)
    # A file on disk is named by its path; a bundled space inside an archive by its name.
    path = found if isinstance(found, Path) else f"{BUNDLED_PREFIX}{found.name}"
    try:
        with as_file(found) as local:  # the file itself, or a temporary copy of an archive's
            raw = read_yaml_file(local)
    except YamlError as err:
        raise SpaceError(str(err).replace(str(local), str(path))) from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping of fields at the top level")
    raw.setdefault("name", found.name.removesuffix(".yaml").removesuffix(".yml"))
    try:
        for key, value in (overrides or {}).items():
            _set_dotted(raw, key, value)
        space = _build(Space, _without_plugins(raw), "")
        space = replace(space, methods=_plugin_sections(raw), notices=changed_default_notices(raw))
        validate(space)
        space = _absolute_paths(space, str(path))
        if check_paths:
            for problem in path_problems(space)[:1]:
                raise SpaceError(problem)
    except SpaceError as err:
        raise SpaceError(f"{path}: {err}") from None
    return space


def _without_plugins(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k not in plugin_keys()}


def _plugin_sections(raw: dict) -> dict:
    """The sections of registered plugin methods, each typed by the method's settings."""
    return {
        key: _build(method.settings, raw[key] if raw[key] is not None else {}, key)
        for key, method in plugin_keys().items()
        if key in raw
    }


def _absolute_paths(space: Space, source: str) -> Space:
    """Resolve relative paths against the directory the command runs in, once: Ray runs
    trials in other working directories, where ``./runs`` would mean something else. A
    URI (``s3://...``) is left as it is. The sweep id does not see these paths
    (``Space.identity``)."""

    def absolute(where: str, p: str | None) -> str | None:
        if p is None or URI_RE.match(p):
            return p
        try:
            return str(Path(p).expanduser().resolve())
        except (OSError, ValueError, RuntimeError) as err:
            raise SpaceError(f"{where}: {show(p)} is not a usable path ({err})") from None

    dataset = replace(space.dataset, root=absolute("dataset.root", space.dataset.root))
    weights = {
        arch: absolute(f"backbone_weights.{arch}", p) for arch, p in space.backbone_weights.items()
    }
    return replace(
        space,
        source=source,
        storage_path=absolute("storage_path", space.storage_path),
        dataset=dataset,
        backbone_weights=weights,
    )


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpaceError(f"override {_key(key)}: {_key(part)} is not a mapping")
    node[parts[-1]] = value


# --- typed construction -------------------------------------------------------------------


def _build(cls, data: Any, where: str):
    """Build dataclass ``cls`` from ``data``, checking keys and types."""
    if cls is Values:
        return _values(data, where)
    if not isinstance(data, dict):
        raise SpaceError(f"{where or 'top level'}: expected a mapping, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.name not in ("source", "methods", "notices")}
    if cls is Space:  # plugin methods' sections are fields too
        known |= set(plugin_keys())
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise SpaceError(
            f"{_join(where, _key(unknown[0]))}: unknown field; allowed: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise SpaceError(f"{_join(where, f.name)}: required field is missing")
            continue
        kwargs[f.name] = _convert(hints[f.name], data[f.name], _join(where, f.name))
    try:
        return cls(**kwargs)
    except ValueError as err:  # a config class that validates itself (LatencyConfig, ...)
        raise SpaceError(f"{where or 'top level'}: {err}") from None


def _convert(tp, value: Any, where: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and type(None) in typing.get_args(tp):
            return None
        return _convert(args[0], value, where)
    if value is None:
        raise SpaceError(f"{where}: must not be empty")
    if is_dataclass(tp):
        return _build(tp, value, where)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        items = value if isinstance(value, list) else [value]
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(items))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SpaceError(f"{where}: expected a mapping, got {_kind(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise SpaceError(f"{where}: expected true or false, got {show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpaceError(f"{where}: expected an integer, got {show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpaceError(f"{where}: expected a number, got {show(value)}")
        if not math.isfinite(value):
            raise SpaceError(
                f"{where}: expected a finite number, got {value}; .nan and .inf are not allowed"
            )
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpaceError(f"{where}: expected a string, got {show(value)}")
        return value
    raise AssertionError(f"unsupported schema type {tp}")


def _values(data: Any, where: str) -> Values:
    if isinstance(data, bool):
        raise SpaceError(f"{where}: expected a number, a list or a distribution, got {data!r}")
    if isinstance(data, int | float):  # one number: the same check as each item of a list
        return Values(grid=(_convert(float, data, where),))
    if isinstance(data, list):
        if not data:
            raise SpaceError(f"{where}: the list of values is empty")
        return Values(grid=tuple(_convert(float, v, f"{where}[{i}]") for i, v in enumerate(data)))
    if isinstance(data, dict):
        if "grid" in data and len(data) == 1:
            return _values(list(data["grid"]), _join(where, "grid"))
        allowed = {"distribution", "low", "high"}
        unknown = sorted(set(data) - allowed, key=str)
        if unknown:
            raise SpaceError(
                f"{_join(where, _key(unknown[0]))}: unknown field; allowed: grid, or distribution/low/high"
            )
        dist = data.get("distribution")
        if dist not in DISTRIBUTIONS:
            raise SpaceError(
                f"{_join(where, 'distribution')}: {show(dist)} is not allowed; allowed: {', '.join(DISTRIBUTIONS)}"
            )
        low = _convert(float, data.get("low"), _join(where, "low"))
        high = _convert(float, data.get("high"), _join(where, "high"))
        if not low < high:
            raise SpaceError(f"{where}: low must be below high, got {low} and {high}")
        return Values(distribution=dist, low=low, high=high)
    raise SpaceError(f"{where}: expected a number, a list or a distribution, got {_kind(data)}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _key(key: Any) -> str:
    """A mapping key as a field name in a message: as written when it is a plain word,
    else quoted and cut (a key can be a number or a whole paragraph)."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w+.-]{1,60}", key) else show(key)


def _kind(value: Any) -> str:
    return {list: "a list", dict: "a mapping", str: "a string"}.get(type(value), show(value))


# --- semantic validation ------------------------------------------------------------------


def _choice(where: str, value: str, allowed) -> None:
    if value not in allowed:
        raise SpaceError(f"{where}: {show(value)} is not allowed; allowed: {', '.join(allowed)}")


def validate(space: Space) -> None:
    """Check what types alone cannot: names, ranges and combinations (not the paths: see
    ``path_problems``)."""
    _check_name("name", space.name, "set name: in the file (the default is the file's name)")
    if space.mlflow.experiment is not None:
        _check_name("mlflow.experiment", space.mlflow.experiment)
    _choice("dataset.name", space.dataset.name, list_datasets())
    for key, value in space.dataset.synthetic.items():
        _choice(f"dataset.synthetic.{_key(key)}", key, SYNTHETIC_KEYS)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpaceError(f"dataset.synthetic.{key}: expected an integer, got {show(value)}")
        _bounded(f"dataset.synthetic.{key}", value, *SYNTHETIC_BOUNDS[key])
    if space.dataset.synthetic and space.dataset.name != "synthetic":
        raise SpaceError("dataset.synthetic: only for dataset.name: synthetic")
    _bounded("dataset.num_workers", space.dataset.num_workers, *BOUNDS["num_workers"])
    space.dataset.to_data_config()  # DataConfig's own checks, named dataset.FIELD
    for where, text in (
        ("storage_path", space.storage_path),
        ("dataset.root", space.dataset.root),
        ("mlflow.tracking_uri", space.mlflow.tracking_uri),
    ):
        # An empty path resolves to the working folder, an empty URI to the default store.
        if text is not None and not text.strip():
            raise SpaceError(
                f"{where}: {show(text)} is empty; allowed: a path or a URI, or leave it out "
                "for the default"
            )
    sizes = split_sizes(space.dataset)
    for i, split in enumerate(("train", "test")):
        subset = getattr(space.dataset, f"{split}_subset")
        if subset is None:
            continue
        total = sizes[i] if sizes else MAX_STEPS
        if not 0 < subset <= total:
            raise SpaceError(
                f"dataset.{split}_subset: {subset} is not in (0, {total}], the {split} images "
                f"of {space.dataset.name}; allowed: 1 to {total}, or leave it out for all"
            )
    _no_duplicates("backbones", space.backbones)
    _no_duplicates("gates", space.gates)
    _no_duplicates("hrl.variants", space.hrl.variants)
    _no_duplicates("alpha", space.alpha.grid)
    if not space.backbones:
        raise SpaceError("backbones: list at least one architecture")
    for i, arch in enumerate(space.backbones):
        _choice(f"backbones[{i}]", arch, list_models())
    if not space.gates:
        raise SpaceError("gates: list at least one gate design")
    for i, gate in enumerate(space.gates):
        _choice(f"gates[{i}]", gate, GATE_DESIGNS)
    for arch, path in space.backbone_weights.items():
        _choice("backbone_weights", arch, space.backbones)
        if not isinstance(path, str) or not path:
            raise SpaceError(f"backbone_weights.{arch}: expected a file path, got {show(path)}")
    if space.backbone_gates and space.search.algorithm == "optuna":
        raise SpaceError("backbone_gates: only the grid search takes per-backbone gates; use gates")
    for arch, gates in space.backbone_gates.items():
        _choice("backbone_gates", arch, space.backbones)
        if not isinstance(gates, list) or not gates:
            raise SpaceError(f"backbone_gates.{arch}: expected a non-empty list of gate designs")
        for i, gate in enumerate(gates):
            _choice(f"backbone_gates.{arch}[{i}]", gate, GATE_DESIGNS)
    swept = sorted({g for arch in space.backbones for g in space.gates_for(arch)})
    for gate, std in space.gate_out_std.items():
        _choice("gate_out_std", gate, swept)
        if isinstance(std, bool) or not isinstance(std, int | float):
            raise SpaceError(f"gate_out_std.{gate}: expected a number, got {show(std)}")
        _bounded(f"gate_out_std.{gate}", std, *BOUNDS["gate_out_std"])
    train_images = training_images(space.dataset)
    sections = [("sp", "sp", space.sp), ("hrl", "hrl", space.hrl)]
    if space.baseline_recipe is not None:
        sections.append(("baseline_recipe", "baseline", space.baseline_recipe))
    for where, stage, spec in sections:
        _check_length(where, spec, train_images)
        _bounded(f"{where}.eval_every", spec.eval_every, *BOUNDS["eval_every"])
        _check_train(where, stage, spec)
    for arch, given in space.backbone_recipe.items():
        _choice("backbone_recipe", arch, space.backbones)
        where = f"backbone_recipe.{arch}"
        if not isinstance(given, dict) or not given:
            raise SpaceError(
                f"{where}: expected a mapping of optimiser fields, e.g. "
                f"{{warmup_iterations: 400}}, got {show(given)}"
            )
        for _, stage, spec in sections[:1] + sections[2:]:  # sp, baseline_recipe: not hrl
            merged = space.recipe_for(arch, spec)
            _check_length(where, merged, train_images)
            _bounded(f"{where}.eval_every", merged.eval_every, *BOUNDS["eval_every"])
            _check_train(where, stage, merged)
    for i, v in enumerate(space.hrl.variants):
        _choice(f"hrl.variants[{i}]", v, HRL_VARIANTS)
    _check_values("alpha", space.alpha, space.search.algorithm)
    _choice("search.algorithm", space.search.algorithm, SEARCH_ALGORITHMS)
    _choice("search.sampler", space.search.sampler, OPTUNA_SAMPLERS)
    _bounded("search.num_samples", space.search.num_samples, *BOUNDS["num_samples"])
    if space.search.algorithm == "grid" and space.search.num_samples != 1:
        # Tune's grid runs each point once here; an ignored value must not change the id.
        raise SpaceError(
            "search.num_samples: only the optuna search samples; the grid runs each point "
            "once; remove it or set search.algorithm: optuna"
        )
    if space.scheduler is not None:
        _choice("scheduler.type", space.scheduler.type, SCHEDULERS)
        if space.search.algorithm == "optuna":
            raise SpaceError(
                "scheduler: ASHA stops trials on top-1 alone and cannot serve the multi-objective "
                "optuna search; remove scheduler or use search.algorithm: grid"
            )
        for name in ("grace_period", "reduction_factor"):
            _bounded(f"scheduler.{name}", getattr(space.scheduler, name), *BOUNDS[name])
    for where, res in (
        ("resources.sp", space.resources.sp),
        ("resources.trial", space.resources.trial),
    ):
        _bounded(f"{where}.cpu", res.cpu, *BOUNDS["cpu"])
        _bounded(f"{where}.gpu", res.gpu, *BOUNDS["gpu"])
        if res.cpu == 0 and res.gpu == 0:
            # Tune and Ray Train cannot place a request for nothing (an empty bundle).
            raise SpaceError(
                f"{where}: cpu 0 and gpu 0 reserve nothing, which Ray cannot schedule; "
                "allowed: cpu > 0 or gpu > 0"
            )
    _bounded("resources.sp.workers", space.resources.sp.workers, *BOUNDS["workers"])
    if space.max_concurrent_trials is not None:
        _bounded(
            "max_concurrent_trials", space.max_concurrent_trials, *BOUNDS["max_concurrent_trials"]
        )
    _bounded("max_failures", space.max_failures, *BOUNDS["max_failures"])
    _bounded("seed", space.seed, *BOUNDS["seed"])
    for kind in ("act", "sact"):
        spec = getattr(space.baselines, kind)
        if spec is None:
            continue
        _check_values(f"baselines.{kind}.tau", spec.tau, space.search.algorithm)
        _no_duplicates(f"baselines.{kind}.tau", spec.tau.grid)
        _check_length(f"baselines.{kind}", spec, train_images)
        # tau is a swept value, checked above; any value stands in for it here.
        _check_train(f"baselines.{kind}", kind, spec, tau=0.0)


def _check_train(where: str, stage: str, spec: Any, **extra: Any) -> None:
    """The section as ``stage`` reads it: ``TrainConfig``'s own checks (choices, ranges,
    combinations), reported as ``where.FIELD``. A recipe field left empty takes TrainConfig's
    default here (each method's own default is valid)."""
    default = {f.name: f.default for f in fields(TrainConfig)}
    train = recipe(where, stage, spec, default["lr"], default["lr_milestones"], **extra)
    # TrainConfig takes lr 0 (a test freezes weights with it); a sweep would run to the end
    # and learn nothing.
    if train.lr == 0:
        raise SpaceError(f"{where}.lr: 0 never changes the weights; allowed: > 0")


def _check_name(where: str, name: str, hint: str = "") -> None:
    if not NAME_RE.fullmatch(name):
        raise SpaceError(
            f"{where}: {show(name)} is not allowed; allowed: {NAME_RULE}"
            + (f"; {hint}" if hint else "")
        )


def _bounded(where: str, value: float | None, low: float | None, high: float) -> None:
    """Refuse ``value`` outside [low, high] (``low`` None: above 0); None passes."""
    if value is None:
        return
    if (value > 0 if low is None else value >= low) and value <= high:
        return
    lower = "> 0" if low is None else f">= {low}"
    raise SpaceError(f"{where}: {show(value)} is out of range; allowed: {lower} and <= {high}")


def _check_length(where: str, spec: Any, train_images: int | None) -> None:
    """A stage's length (exactly one of iterations or epochs) and batch, in range; a batch
    larger than the training set would leave no batch (the loader drops the last one)."""
    if (spec.iterations is None) == (spec.epochs is None):
        raise SpaceError(f"{where}: give exactly one of iterations or epochs")
    _bounded(f"{where}.iterations", spec.iterations, *BOUNDS["iterations"])
    _bounded(f"{where}.epochs", spec.epochs, *BOUNDS["epochs"])
    _bounded(f"{where}.batch_size", spec.batch_size, *BOUNDS["batch_size"])
    if train_images is not None and spec.batch_size > train_images:
        raise SpaceError(
            f"{where}.batch_size: {spec.batch_size} is more than the {train_images} training "
            f"images; allowed: 1 to {train_images}"
        )


def training_images(dataset: DatasetSpec) -> int | None:
    """Images each step of a stage draws from, without reading the data: the training split
    cut to ``train_subset``, less the validation split; None where the dataset's size is not
    known here.

    Raises:
        SpaceError: a validation split that leaves no training or no validation image.
    """
    sizes = split_sizes(dataset)
    if sizes is None:
        return None
    n = sizes[0] if dataset.train_subset is None else min(sizes[0], dataset.train_subset)
    split = dataset.to_data_config().val_split
    if split is None:
        return n
    try:
        return n - val_count(split, n)
    except ValueError as err:
        raise SpaceError(f"dataset.val_split: {err}") from None


def split_sizes(dataset: DatasetSpec) -> tuple[int, int] | None:
    """Images in the (train, test) splits of ``dataset`` before any subset, without reading
    it; None for a dataset whose size is not known here."""
    if dataset.name == "synthetic":
        size = dataset.synthetic.get("size", SYNTHETIC_DEFAULT_SIZE)
        return size, max(1, size // 4)
    return SPLIT_SIZES.get(dataset.name)


def path_problems(space: Space) -> list[str]:
    """What this machine lacks to run ``space``, one line each (nothing is created):
    a dataset folder or backbone weights file that is missing, of the other kind or not
    readable; a storage folder that cannot be written; a tracking store MLflow does not
    open, or a local one (sqlite) whose folder cannot be written. A URI (``s3://...``) is
    not checked."""
    problems = []
    root = space.dataset.root
    if root is not None and not URI_RE.match(root):
        why = _readable_problem(root, folder=True)
        if why:
            problems.append(f"dataset.root: {why}; pass --data-root with the dataset's folder")
    for arch, path in space.backbone_weights.items():
        why = None if URI_RE.match(path) else _readable_problem(path, folder=False)
        if why:
            problems.append(f"backbone_weights.{arch}: {why}")
    storage = _folder_problem(space.storage_path)
    if storage:
        problems.append(f"storage_path: {storage}; choose a folder you can write (--storage-path)")
    store = _store_problem(space.mlflow.tracking_uri)
    if store:
        problems.append(store)
    return problems


def _readable_problem(path: str, folder: bool) -> str | None:
    """Why ``path`` is not a readable folder (``folder``) or file; None when it is."""
    kind, other = ("folder", "file") if folder else ("file", "folder")
    if not os.path.exists(path):
        return f"{path} does not exist"
    if os.path.isdir(path) != folder:
        return f"{path} is a {other}, not a {kind}"
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        return f"{path} is not readable by this user"
    return None


def _store_problem(configured: str | None) -> str | None:
    """Why the MLflow store the sweep will use (``configured``, else the environment's, else
    ``./mlflow.db``) cannot be: a scheme MLflow does not open, or a sqlite file (with
    ``mlartifacts/`` beside it) whose folder cannot be written."""
    from skipnet_sweep.sweep.tracking import default_tracking_uri, scheme_problem, sqlite_file

    uri = default_tracking_uri(configured)
    if configured:
        where = "mlflow.tracking_uri"
    elif env_tracking_uri():
        where = "$MLFLOW_TRACKING_URI"
    else:
        where = "the default MLflow store"
    fix = "choose another with --tracking-uri"
    why = scheme_problem(uri)
    if why:
        return f"{where}: {why}"
    db = sqlite_file(uri)
    if db is None:
        return None
    if db.exists() and not (db.is_file() and os.access(db, os.R_OK | os.W_OK)):
        return f"{where}: {db} is not a file this user can read and write; {fix}"
    folder = _folder_problem(str(db.parent))
    if folder:
        return f"{where}: {folder} (for {db.name} and mlartifacts/); {fix}"
    return None


def _folder_problem(path: str) -> str | None:
    """Why ``path`` cannot become a writable folder, judged by its nearest existing
    ancestor (created later, by the driver, not here); None when it can."""
    if URI_RE.match(path):
        return None
    target = Path(path)
    while not os.path.exists(target) and target != target.parent:
        target = target.parent
    if not os.path.isdir(target):
        if str(target) == path:
            return f"{path} is a file, not a folder"
        return f"{target} is a file (to create {Path(path).relative_to(target)} in)"
    if not os.access(target, os.W_OK | os.X_OK):
        inside = "" if str(target) == path else f" (to create {Path(path).relative_to(target)})"
        return f"{target} is not writable by this user{inside}"
    return None


def _no_duplicates(where: str, items) -> None:
    seen = set()
    for i, item in enumerate(items):
        if item in seen:
            raise SpaceError(f"{where}[{i}]: {show(item)} is listed twice; each value once")
        seen.add(item)


def _check_values(where: str, values: Values, algorithm: str) -> None:
    if values.is_grid:
        for i, v in enumerate(values.grid):
            if v < 0:
                raise SpaceError(f"{where}[{i}]: must be >= 0, got {v}")
        return
    if values.low < 0:
        raise SpaceError(f"{where}.low: must be >= 0, got {values.low}")
    if values.distribution == "loguniform" and values.low <= 0:
        raise SpaceError(f"{where}.low: a loguniform distribution needs low > 0")
    if algorithm == "grid":
        raise SpaceError(
            f"{where}: a distribution needs search.algorithm: optuna; the grid search takes a list"
        )


def space_to_yaml(space: Space) -> str:
    """The validated space, as YAML (logged to the parent run)."""

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return yaml.safe_dump(plain(space.to_dict()), sort_keys=False)


def env_tracking_uri() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI")
