"""Search-space files: a typed schema, validated once, before anything starts.

A space is a YAML file (``search_spaces/*.yaml``) that becomes a ``Space``. Every problem
is reported as one line naming the file, the field and what is allowed, as a ``SpaceError``;
``run`` turns that into exit code 2 before Ray is started or anything is written.
"""

from __future__ import annotations

import math
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from skipnet_sweep.data import dataset_info, list_datasets
from skipnet_sweep.models import GATE_DESIGNS, list_models
from skipnet_sweep.stages.config import DataConfig

SEARCH_ALGORITHMS = ("grid", "optuna")
OPTUNA_SAMPLERS = ("tpe", "nsga2", "random")
DISTRIBUTIONS = ("uniform", "loguniform")
HRL_VARIANTS = ("hrl+sp", "hrl+s", "rl")
SYNTHETIC_KEYS = ("size", "channels", "image_size", "classes")
# How a sweep is executed, not what it computes: changing these resumes the same sweep.
EXECUTION_FIELDS = ("max_concurrent_trials", "max_failures", "resources", "mlflow")
SCHEDULERS = ("asha",)

# Bundled spaces live beside the package (a source checkout or an editable install).
SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"


class SpaceError(ValueError):
    """A search space that cannot run; the message is one line."""


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


@dataclass(frozen=True)
class DatasetSpec:
    """The data every stage of the sweep reads (see ``stages.DataConfig``)."""

    name: str = "fashion_mnist"
    root: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    num_workers: int = 0
    download: bool = False
    synthetic: dict = field(default_factory=dict)

    def to_data_config(self) -> DataConfig:
        """The stages' ``DataConfig``: the same fields, the file's ``name`` as ``dataset``."""
        fields_ = asdict(self)
        return DataConfig(dataset=fields_.pop("name"), **fields_)


@dataclass(frozen=True)
class OptimSpec:
    """Optimisation of one stage (``stages.TrainConfig`` fields; None keeps the default)."""

    iterations: int | None = None
    epochs: float | None = None
    batch_size: int = 128
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    lr_milestones: tuple[float, ...] | None = None
    lr_decay: float = 0.1
    eval_every: int | None = None
    eval_path: str = "sparse"


@dataclass(frozen=True)
class SPSpec(OptimSpec):
    """Supervised pre-training (and the plain-ResNet baseline, which uses the same recipe)."""

    gating: str = "hard"


@dataclass(frozen=True)
class HRLSpec(OptimSpec):
    """Hybrid-RL fine-tuning; ``variants`` adds the §4.3 ablations (HRL from scratch, pure RL)."""

    gamma: float = 1.0
    rl_weight: float = 0.01
    cost: str = "uniform"
    reward_baseline: bool = False
    variants: tuple[str, ...] = ("hrl+sp",)


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
class HaltingSpec:
    """An ACT or SACT fan-out: its cost weight tau and its fine-tuning recipe."""

    tau: Values = field(default_factory=lambda: Values(grid=(0.01,)))
    iterations: int | None = None
    epochs: float | None = None
    lr: float = 0.01
    batch_size: int = 128


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
    baseline: bool = True
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
    # Sections of plugin methods, by their ``space_key`` (each read into the method's own
    # settings dataclass); the built-in methods' settings are the fields above.
    methods: dict = field(default_factory=dict)
    source: str = ""  # the file it was read from (not a YAML key)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("source")
        return d

    def identity(self) -> dict:
        """What the sweep computes: everything but how it is executed (``EXECUTION_FIELDS``)."""
        d = self.to_dict()
        for k in EXECUTION_FIELDS:
            d.pop(k)
        return d

    def gates_for(self, arch: str) -> tuple[str, ...]:
        """The gate designs swept on ``arch``: its ``backbone_gates`` entry, else ``gates``."""
        return tuple(self.backbone_gates.get(arch, self.gates))

    @property
    def uses_gpu(self) -> bool:
        return self.resources.sp.gpu > 0 or self.resources.trial.gpu > 0


def find_space(name_or_path: str) -> Path:
    """A space file by path, or a bundled one by name (``quickstart`` or ``quickstart.yaml``)."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    stem = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
    bundled = SPACES_DIR / stem
    if bundled.is_file():
        return bundled
    names = sorted(f.stem for f in SPACES_DIR.glob("*.yaml"))
    raise SpaceError(
        f"{name_or_path}: no such space file; bundled spaces: {', '.join(names) or 'none found'}"
    )


def load_space(name_or_path: str, overrides: dict[str, Any] | None = None) -> Space:
    """Read, type-check and validate a space file.

    Args:
        name_or_path: a path or a bundled space's name.
        overrides: dotted keys to replace after reading (``{"hrl.iterations": 50}``).

    Raises:
        SpaceError: one line naming the file, the field and what is allowed.
    """
    path = find_space(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpaceError(f"{path}:{where} not valid YAML") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping of fields at the top level")
    raw.setdefault("name", path.stem)
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    try:
        space = _build(Space, _without_plugins(raw), "")
        space = replace(space, methods=_plugin_sections(raw))
        space = _absolute_paths(space, str(path))
        validate(space)
    except SpaceError as err:
        raise SpaceError(f"{path}: {err}") from None
    return space


def _without_plugins(raw: dict) -> dict:
    from skipnet_sweep.methods import plugin_keys

    return {k: v for k, v in raw.items() if k not in plugin_keys()}


def _plugin_sections(raw: dict) -> dict:
    """The sections of registered plugin methods, each typed by the method's settings."""
    from skipnet_sweep.methods import plugin_keys

    return {
        key: _build(method.settings, raw[key] if raw[key] is not None else {}, key)
        for key, method in plugin_keys().items()
        if key in raw
    }


def _absolute_paths(space: Space, source: str) -> Space:
    """Resolve relative paths against the directory the command runs in, once: Ray runs
    trials in other working directories, where ``./runs`` would mean something else."""

    def absolute(p: str | None) -> str | None:
        return None if p is None else str(Path(p).expanduser().resolve())

    dataset = replace(space.dataset, root=absolute(space.dataset.root))
    weights = {
        arch: absolute(p) if isinstance(p, str) else p for arch, p in space.backbone_weights.items()
    }
    return replace(
        space,
        source=source,
        storage_path=absolute(space.storage_path),
        dataset=dataset,
        backbone_weights=weights,
    )


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpaceError(f"override {key}: {part} is not a mapping")
    node[parts[-1]] = value


# --- typed construction -------------------------------------------------------------------


def _build(cls, data: Any, where: str):
    """Build dataclass ``cls`` from ``data``, checking keys and types."""
    if cls is Values:
        return _values(data, where)
    if not isinstance(data, dict):
        raise SpaceError(f"{where or 'top level'}: expected a mapping, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.name not in ("source", "methods")}
    if cls is Space:  # plugin methods' sections are fields too
        from skipnet_sweep.methods import plugin_keys

        known |= set(plugin_keys())
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpaceError(
            f"{_join(where, unknown[0])}: unknown field; allowed: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise SpaceError(f"{_join(where, f.name)}: required field is missing")
            continue
        kwargs[f.name] = _convert(hints[f.name], data[f.name], _join(where, f.name))
    return cls(**kwargs)


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
            raise SpaceError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpaceError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpaceError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise SpaceError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpaceError(f"{where}: expected a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported schema type {tp}")


def _values(data: Any, where: str) -> Values:
    if isinstance(data, bool):
        raise SpaceError(f"{where}: expected a number, a list or a distribution, got {data!r}")
    if isinstance(data, int | float):
        return Values(grid=(float(data),))
    if isinstance(data, list):
        if not data:
            raise SpaceError(f"{where}: the list of values is empty")
        return Values(grid=tuple(_convert(float, v, f"{where}[{i}]") for i, v in enumerate(data)))
    if isinstance(data, dict):
        if "grid" in data and len(data) == 1:
            return _values(list(data["grid"]), _join(where, "grid"))
        allowed = {"distribution", "low", "high"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise SpaceError(
                f"{_join(where, unknown[0])}: unknown field; allowed: grid, or distribution/low/high"
            )
        dist = data.get("distribution")
        if dist not in DISTRIBUTIONS:
            raise SpaceError(
                f"{_join(where, 'distribution')}: {dist!r} is not allowed; allowed: {', '.join(DISTRIBUTIONS)}"
            )
        low = _convert(float, data.get("low"), _join(where, "low"))
        high = _convert(float, data.get("high"), _join(where, "high"))
        if not low < high:
            raise SpaceError(f"{where}: low must be below high, got {low} and {high}")
        return Values(distribution=dist, low=low, high=high)
    raise SpaceError(f"{where}: expected a number, a list or a distribution, got {_kind(data)}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _kind(value: Any) -> str:
    return {list: "a list", dict: "a mapping", str: "a string"}.get(type(value), repr(value))


# --- semantic validation ------------------------------------------------------------------


def _choice(where: str, value: str, allowed) -> None:
    if value not in allowed:
        raise SpaceError(f"{where}: {value!r} is not allowed; allowed: {', '.join(allowed)}")


def validate(space: Space) -> None:
    """Check what types alone cannot: names, ranges and combinations."""
    if not space.name or any(c in space.name for c in "/\\ "):
        raise SpaceError(f"name: {space.name!r} must be a non-empty word without spaces or slashes")
    _choice("dataset.name", space.dataset.name, list_datasets())
    for key, value in space.dataset.synthetic.items():
        _choice(f"dataset.synthetic.{key}", key, SYNTHETIC_KEYS)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpaceError(f"dataset.synthetic.{key}: expected a positive integer, got {value!r}")
    if space.dataset.synthetic and space.dataset.name != "synthetic":
        raise SpaceError("dataset.synthetic: only for dataset.name: synthetic")
    _no_duplicates("backbones", space.backbones)
    _no_duplicates("gates", space.gates)
    _no_duplicates("hrl.variants", space.hrl.variants)
    _no_duplicates("alpha", space.alpha.grid)
    if space.dataset.root is not None and not Path(space.dataset.root).expanduser().exists():
        raise SpaceError(f"dataset.root: {space.dataset.root} does not exist")
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
        if not isinstance(path, str) or not Path(path).expanduser().is_file():
            raise SpaceError(f"backbone_weights.{arch}: {path} is not a file")
    if space.backbone_gates and space.search.algorithm == "optuna":
        raise SpaceError("backbone_gates: only the grid search takes per-backbone gates; use gates")
    for arch, gates in space.backbone_gates.items():
        _choice("backbone_gates", arch, space.backbones)
        if not isinstance(gates, list) or not gates:
            raise SpaceError(f"backbone_gates.{arch}: expected a non-empty list of gate designs")
        for i, gate in enumerate(gates):
            _choice(f"backbone_gates.{arch}[{i}]", gate, GATE_DESIGNS)
    for where, spec in (("sp", space.sp), ("hrl", space.hrl)):
        if (spec.iterations is None) == (spec.epochs is None):
            raise SpaceError(f"{where}: give exactly one of iterations or epochs")
        if spec.batch_size < 1:
            raise SpaceError(f"{where}.batch_size: must be >= 1")
        _choice(f"{where}.eval_path", spec.eval_path, ("sparse", "masked"))
    _choice("sp.gating", space.sp.gating, ("hard", "soft"))
    _choice("hrl.cost", space.hrl.cost, ("uniform", "flops"))
    for i, v in enumerate(space.hrl.variants):
        _choice(f"hrl.variants[{i}]", v, HRL_VARIANTS)
    _check_values("alpha", space.alpha, space.search.algorithm)
    _choice("search.algorithm", space.search.algorithm, SEARCH_ALGORITHMS)
    _choice("search.sampler", space.search.sampler, OPTUNA_SAMPLERS)
    if space.search.num_samples < 1:
        raise SpaceError("search.num_samples: must be >= 1")
    if space.scheduler is not None:
        _choice("scheduler.type", space.scheduler.type, SCHEDULERS)
        if space.search.algorithm == "optuna":
            raise SpaceError(
                "scheduler: ASHA stops trials on top-1 alone and cannot serve the multi-objective "
                "optuna search; remove scheduler or use search.algorithm: grid"
            )
    for where, res in (
        ("resources.sp", space.resources.sp),
        ("resources.trial", space.resources.trial),
    ):
        if res.cpu < 0 or res.gpu < 0:
            raise SpaceError(f"{where}: cpu and gpu must be >= 0")
    if space.resources.sp.workers < 1:
        raise SpaceError("resources.sp.workers: must be >= 1")
    if space.max_concurrent_trials is not None and space.max_concurrent_trials < 1:
        raise SpaceError("max_concurrent_trials: must be >= 1")
    if space.max_failures < 0:
        raise SpaceError("max_failures: must be >= 0")
    for kind in ("act", "sact"):
        spec = getattr(space.baselines, kind)
        if spec is None:
            continue
        _check_values(f"baselines.{kind}.tau", spec.tau, space.search.algorithm)
        _no_duplicates(f"baselines.{kind}.tau", spec.tau.grid)
        if (spec.iterations is None) == (spec.epochs is None):
            raise SpaceError(f"baselines.{kind}: give exactly one of iterations or epochs")
    info = dataset_info(space.dataset.name)
    del info  # the name is valid; shapes are resolved when the plan is made


def _no_duplicates(where: str, items) -> None:
    seen = set()
    for i, item in enumerate(items):
        if item in seen:
            raise SpaceError(f"{where}[{i}]: {item!r} is listed twice; each value once")
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
