"""What types alone cannot check: names, choices, ranges and combinations of a typed
``Space``, one section at a time, the first problem raised as one line (the paths are
``paths.path_problems``'s)."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from skipnet_sweep.data import list_datasets
from skipnet_sweep.errors import SpaceError
from skipnet_sweep.methods.base import recipe
from skipnet_sweep.models import GATE_DESIGNS, list_models
from skipnet_sweep.stages.config import TrainConfig
from skipnet_sweep.sweep.space.build import key_name
from skipnet_sweep.sweep.space.schema import Space, Values
from skipnet_sweep.sweep.space.sizes import split_sizes, training_images
from skipnet_sweep.yamlio import show

SEARCH_ALGORITHMS = ("grid", "optuna")
OPTUNA_SAMPLERS = ("tpe", "nsga2", "random")
HRL_VARIANTS = ("hrl+sp", "hrl+s", "rl")
SYNTHETIC_KEYS = ("size", "channels", "image_size", "classes")
SCHEDULERS = ("asha",)

# Names become MLflow experiment names and filter-string values ('...'), Ray experiment
# folders and file names: letters, digits and . _ + - only, no quotes or slashes.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
NAME_RULE = "1 to 100 of A-Z a-z 0-9 . _ + -, starting with a letter or digit"

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


def validate(space: Space) -> None:
    """Check what types alone cannot: names, ranges and combinations (not the paths: see
    ``path_problems``). The sections are checked in this order, and the first problem found
    is the one reported."""
    _check_names(space)
    _check_dataset(space)
    _check_paths_given(space)
    _check_subsets(space)
    _check_lists(space)
    _check_per_backbone(space)
    train_images = training_images(space.dataset)
    _check_recipes(space, train_images)
    _check_search(space)
    _check_execution(space)
    _check_baselines(space, train_images)


def _check_names(space: Space) -> None:
    _check_name("name", space.name, "set name: in the file (the default is the file's name)")
    if space.mlflow.experiment is not None:
        _check_name("mlflow.experiment", space.mlflow.experiment)


def _check_dataset(space: Space) -> None:
    _choice("dataset.name", space.dataset.name, list_datasets())
    for key, value in space.dataset.synthetic.items():
        _choice(f"dataset.synthetic.{key_name(key)}", key, SYNTHETIC_KEYS)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpaceError(f"dataset.synthetic.{key}: expected an integer, got {show(value)}")
        _bounded(f"dataset.synthetic.{key}", value, *SYNTHETIC_BOUNDS[key])
    if space.dataset.synthetic and space.dataset.name != "synthetic":
        raise SpaceError("dataset.synthetic: only for dataset.name: synthetic")
    _bounded("dataset.num_workers", space.dataset.num_workers, *BOUNDS["num_workers"])
    space.dataset.to_data_config()  # DataConfig's own checks, named dataset.FIELD


def _check_paths_given(space: Space) -> None:
    """The paths and URIs the file gives, not empty (whether they exist: ``path_problems``)."""
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


def _check_subsets(space: Space) -> None:
    """``train_subset`` and ``test_subset`` within their split, where its size is known."""
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


def _check_lists(space: Space) -> None:
    """The swept lists: each value once; at least one backbone and one gate design, each
    registered."""
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


def _check_per_backbone(space: Space) -> None:
    """The mappings keyed by backbone (weights, gates) or by gate design (gate_out_std):
    their keys among those swept, their values of the right kind."""
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


def _check_recipes(space: Space, train_images: int | None) -> None:
    """Every optimisation section as its phase reads it, and each backbone's own recipe
    merged into the sections it changes."""
    sections = [("sp", "sp", space.sp), ("hrl", "hrl", space.hrl)]
    if space.baseline_recipe is not None:
        sections.append(("baseline_recipe", "baseline", space.baseline_recipe))
    for where, phase, spec in sections:
        _check_length(where, spec, train_images)
        _bounded(f"{where}.eval_every", spec.eval_every, *BOUNDS["eval_every"])
        _check_train(where, phase, spec)
    for arch, given in space.backbone_recipe.items():
        _choice("backbone_recipe", arch, space.backbones)
        where = f"backbone_recipe.{arch}"
        if not isinstance(given, dict) or not given:
            raise SpaceError(
                f"{where}: expected a mapping of optimiser fields, e.g. "
                f"{{warmup_iterations: 400}}, got {show(given)}"
            )
        for _, phase, spec in sections[:1] + sections[2:]:  # sp, baseline_recipe: not hrl
            merged = space.recipe_for(arch, spec)
            _check_length(where, merged, train_images)
            _bounded(f"{where}.eval_every", merged.eval_every, *BOUNDS["eval_every"])
            _check_train(where, phase, merged)


def _check_search(space: Space) -> None:
    """What is swept and how: HRL variants, alpha, the search and the scheduler."""
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


def _check_execution(space: Space) -> None:
    """How the sweep runs: resources, concurrency, retries and the seed."""
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


def _check_baselines(space: Space, train_images: int | None) -> None:
    """The ACT and SACT fan-outs: tau and their recipe."""
    for kind in ("act", "sact"):
        spec = getattr(space.baselines, kind)
        if spec is None:
            continue
        _check_values(f"baselines.{kind}.tau", spec.tau, space.search.algorithm)
        _no_duplicates(f"baselines.{kind}.tau", spec.tau.grid)
        _check_length(f"baselines.{kind}", spec, train_images)
        # tau is a swept value, checked above; any value stands in for it here.
        _check_train(f"baselines.{kind}", kind, spec, tau=0.0)


def _choice(where: str, value: str, allowed) -> None:
    if value not in allowed:
        raise SpaceError(f"{where}: {show(value)} is not allowed; allowed: {', '.join(allowed)}")


def _check_train(where: str, phase: str, spec: Any, **extra: Any) -> None:
    """The section as ``phase`` reads it: ``TrainConfig``'s own checks (choices, ranges,
    combinations), reported as ``where.FIELD``. A recipe field left empty takes TrainConfig's
    default here (each method's own default is valid)."""
    default = {f.name: f.default for f in fields(TrainConfig)}
    train = recipe(where, phase, spec, default["lr"], default["lr_milestones"], **extra)
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
