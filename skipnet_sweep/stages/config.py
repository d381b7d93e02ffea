"""Typed configuration of one training stage, validated once at construction.

A ``StageConfig`` is everything that determines a stage's result: the network, the data,
the phase trained and its optimisation and (for HRL) the reward. It is saved in every
checkpoint and logged to MLflow, and its ``key()`` identifies a cached SP checkpoint in a
sweep. "Stage" and "phase" are two words: README.md ("Vocabulary").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from skipnet_sweep import metrics as M
from skipnet_sweep.data import check_val_split
from skipnet_sweep.identity import hashed_as, hashed_dict, renamed
from skipnet_sweep.models import ModelConfig
from skipnet_sweep.yamlio import show

SP_GATINGS = ("hard", "soft")
COSTS = ("uniform", "flops")
RL_REDUCTIONS = ("sum", "mean")
TERMINAL_SCALES = ("one", "alpha_over_n")
PRECISIONS = ("auto", "fast", "fp32", "bf16", "fp16")
LR_SCHEDULES = ("step", "one_cycle")


class FieldError(ValueError):
    """A config field whose value a stage refuses: ``field`` names it and ``reason`` says
    why, so whoever built the config (a space file, the CLI) names its own field."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class DataConfig:
    """Which data a stage reads.

    Attributes:
        dataset: a name from ``skipnet_sweep.data.list_datasets()``.
        root: where the files are; None for the dataset's default location.
        train_subset: use only this many training images (quick runs), None for all.
        test_subset: likewise for the evaluation set.
        num_workers: DataLoader worker processes.
        download: allow torchvision's downloader where the dataset has one (off by default:
            nothing is fetched at run time unless asked for).
        synthetic: keywords of the synthetic dataset (size, channels, image size, classes).
        val_split: hold a validation set out of the training set (after ``train_subset``):
            a fraction in (0, 1) or a count of images, chosen by a permutation seeded by the
            stage's seed (the same on every process, and for SP and HRL of one sweep, which
            share the seed); None for no split. Evaluations during training, and so model
            selection, run on it; the test set is then evaluated once, at the end.
        augment: the dataset's training augmentation (random crop and flip; ImageNet's
            random resized crop); False reads training images as test images are read, which
            converges faster in schedules of an epoch or two (the quickstart).
    """

    dataset: str = "fashion_mnist"
    root: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    num_workers: int = 0
    download: bool = False
    synthetic: dict = field(default_factory=dict)
    val_split: float | int | None = None
    augment: bool = True

    def __post_init__(self) -> None:
        try:
            check_val_split(self.val_split)
        except ValueError as err:
            raise FieldError("val_split", str(err).removeprefix("val_split ")) from None
        if self.num_workers < 0:
            raise FieldError("num_workers", f"must be >= 0, got {self.num_workers}")

    @property
    def selection_set(self) -> str:
        """Where evaluations during training run: ``val`` with a split, else ``test``."""
        return M.SELECTION_TEST if self.val_split is None else M.SELECTION_VAL

    def loader_kwargs(self) -> dict:
        """Keywords of ``data.build_datasets`` plus ``num_workers`` (``val_split`` is not
        one: ``make_loaders`` takes it separately)."""
        kw = {
            "root": self.root,
            "train_subset": self.train_subset,
            "test_subset": self.test_subset,
            "num_workers": self.num_workers,
            "download": self.download,
            "augment": self.augment,
        }
        kw.update({f"synthetic_{k}": v for k, v in self.synthetic.items()})
        return kw


# What a TrainConfig field configures (its ``group`` metadata): how any phase optimises
# (OPTIM, every field without a mark), the objective of SP or of HRL (SP, HRL), or what the
# plan sets per job (JOB: the phase, the swept cost weight, the variant's supervision, the
# sweep's seed). A search space's optimisation sections offer OPTIM and their phase's own
# group (``sweep.space``), the ``train`` CLI a phase's groups (its method's
# ``train_fields``): a field declared here is in both, with no second declaration.
OPTIM, SP, HRL, JOB = "optim", "sp", "hrl", "job"


# Phase name -> the method that trains it, and that method's check of a stage's whole config
# (``Method.check_config``). The method registry fills both (``register_method``): a phase is
# a method's, and a config below the registry checks its phase and its network here.
_PHASES: dict[str, str] = {}
_PHASE_CHECKS: dict[str, Callable[[StageConfig], None]] = {}


def register_phases(
    method: str,
    phases: tuple[str, ...],
    check: Callable[[StageConfig], None] | None = None,
) -> None:
    """Record that ``method`` trains ``phases`` (replacing what it trained before), and the
    check every ``StageConfig`` of those phases must pass (raises ``ValueError``).

    Raises:
        ValueError: a phase that belongs to another method.
    """
    for phase in phases:
        owner = _PHASES.get(phase, method)
        if owner != method:
            raise ValueError(f"method {method!r}: phase {phase!r} belongs to method {owner!r}")
    unregister_phases(method)
    _PHASES.update(dict.fromkeys(phases, method))
    if check is not None:
        _PHASE_CHECKS.update(dict.fromkeys(phases, check))


def unregister_phases(method: str) -> None:
    """Forget the phases of ``method``."""
    for phase in [p for p, m in _PHASES.items() if m == method]:
        del _PHASES[phase]
        _PHASE_CHECKS.pop(phase, None)


def _field(default: Any, group: str = OPTIM, *, recipe: bool = False, **meta: Any) -> Any:
    """A TrainConfig field in ``group``; ``recipe``: its default is the SP recipe's, and each
    method's recipe has its own (HRL: lr 1e-4, constant), so a space section that leaves it
    out leaves the choice to the method. ``meta``: more metadata (``HASHED_AS``)."""
    return field(default=default, metadata={"group": group, "recipe": recipe, **meta})


@dataclass(frozen=True)
class TrainConfig:
    """The phase a stage trains, and its optimisation and objective.

    Attributes:
        phase: ``baseline`` (plain ResNet), ``sp`` (supervised pre-training, Alg. 1 step 1),
            ``hrl`` (hybrid RL, Alg. 1 step 2), ``act`` / ``sact`` (the halting baselines,
            fine-tuned with cross-entropy plus ``tau`` times the ponder cost), or another
            registered method's (``aig``, ``blockdrop``, a plugin's).
        iterations: optimiser steps; exclusive with ``epochs``.
        epochs: passes over the training set (may be fractional); exclusive with
            ``iterations``.
        batch_size: images per step (per worker under data parallelism).
        lr, momentum, weight_decay, nesterov: SGD (the ResNet recipe by default).
        lr_milestones: fractions of the run at which the learning rate is multiplied by
            ``lr_decay`` (ResNet paper: 32k and 48k of 64k iterations = 0.5 and 0.75).
        lr_decay: the step-decay factor.
        lr_schedule: ``step`` (constant ``lr``, multiplied by ``lr_decay`` at each of
            ``lr_milestones``: the ResNet paper's and the official code's) or ``one_cycle``
            (a triangle: linearly from 0 to ``lr`` over the first ``one_cycle_peak`` of the
            run, then linearly to 0 at its end; ``lr_milestones`` unused), which reaches a
            given accuracy in fewer images when a stage lasts an epoch or two.
        one_cycle_peak: where the ``one_cycle`` triangle peaks, a fraction of the run.
        gating: SP only: ``hard`` straight-through gates (Eq. 9) or ``soft`` mixing (the
            Table 3 ablation).
        alpha: HRL cost weight (Eq. 6).
        gamma: HRL discount of future gate rewards (1 in the paper).
        rl_weight: scale of the REINFORCE term.
        rl_reduction: how the REINFORCE term reduces over the batch: ``sum`` (the official
            CIFAR/SVHN code, whose ``action.reinforce(rl_weight * R)`` gives every sample its
            own unaveraged gradient) or ``mean`` (the official ImageNet code). With ``sum``
            the step size of the policy grows with the batch; ``rl_weight`` 0.01 was tuned
            with it at batch 128.
        terminal_scale: factor on the episode's terminal reward ``-CE``: ``one`` (official
            CIFAR, ``R = - pred_loss``) or ``alpha_over_n`` (official ImageNet, ``R =
            - pred_loss * alpha / N``).
        gate_sharpen: at the start of a fresh (not resumed) HRL run, multiply every gate
            logit by this factor (official ImageNet ``hotter(0.05)``: 20; CIFAR: 1, none).
        supervised: HRL with the supervised cross-entropy term (Eq. 8); False is pure RL,
            where the prediction is sampled from the softmax and is an action too.
        cost: ``uniform`` (C_i = 1, the paper) or ``flops`` (C_i = the block's share of the
            multiply-adds a skip saves, normalised to mean 1).
        reward_baseline: subtract the batch-mean return per gate (variance reduction; off
            in the paper).
        tau: ACT/SACT ponder-cost weight (their counterpart of alpha).
        eval_every: evaluate every this many steps (None: once per epoch).
        eval_path: ``sparse`` or ``masked`` execution for evaluation.
        seed: seeds weights, data order and gate sampling.
        warmup_iterations: run the first this many optimiser steps at ``warmup_lr`` (0: off).
            The ResNet paper's and official ``--warm-up`` recipe for ResNet-110/152 on CIFAR:
            lr 0.01 for 400 iterations, then the schedule.
        warmup_lr: the constant learning rate of the warm-up.
        precision: ``auto`` (bf16 autocast on CUDA devices that support it, fp16 with loss
            scaling on other CUDA devices, fp32 on the CPU), ``fast`` (as ``auto``, and bf16
            autocast on a CPU that computes bf16 natively: AMX or AVX512-BF16), ``fp32``,
            ``bf16`` or ``fp16``.
            Losses, rewards and log-probabilities are float32 in every case.
        nan_check_every: look for a non-finite loss every this many steps (and at every
            evaluation) instead of at each step, which would wait for the device each step.
        accum_steps: accumulate gradients over this many batches of ``batch_size`` per
            optimiser step (same update as one batch of ``accum_steps * batch_size``, less
            memory). ``iterations``, ``eval_every`` and the schedule count optimiser steps.
    """

    # Hashed under its first name, "stage", so that sweep ids and cache keys stay the same.
    phase: str = _field("sp", JOB, **hashed_as("stage"))
    iterations: int | None = None
    epochs: float | None = None
    batch_size: int = 128
    lr: float = _field(0.1, recipe=True)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    lr_milestones: tuple[float, ...] = _field((0.5, 0.75), recipe=True)
    lr_decay: float = 0.1
    lr_schedule: str = "step"
    one_cycle_peak: float = 0.15
    gating: str = _field("hard", SP)
    alpha: float = _field(0.1, JOB)
    gamma: float = _field(1.0, HRL)
    rl_weight: float = _field(0.01, HRL)
    rl_reduction: str = _field("sum", HRL)
    terminal_scale: str = _field("one", HRL)
    gate_sharpen: float = _field(1.0, HRL)
    supervised: bool = _field(True, JOB)
    cost: str = _field("uniform", HRL)
    reward_baseline: bool = _field(False, HRL)
    tau: float = _field(0.01, JOB)
    eval_every: int | None = None
    eval_path: str = "sparse"
    seed: int = _field(0, JOB)
    warmup_iterations: int = 0
    warmup_lr: float = 0.01
    precision: str = "auto"
    nan_check_every: int = 50
    accum_steps: int = 1

    def __post_init__(self) -> None:
        if self.phase not in _PHASES:
            allowed = ", ".join(_PHASES)
            raise FieldError(
                "phase", f"{self.phase!r} is not registered; allowed: {allowed}"
            ) from None
        _check_choice("gating", self.gating, SP_GATINGS)
        _check_choice("cost", self.cost, COSTS)
        _check_choice("eval_path", self.eval_path, ("sparse", "masked"))
        _check_choice("rl_reduction", self.rl_reduction, RL_REDUCTIONS)
        _check_choice("terminal_scale", self.terminal_scale, TERMINAL_SCALES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if not 0 <= self.one_cycle_peak < 1:
            raise FieldError("one_cycle_peak", f"must be in [0, 1), got {self.one_cycle_peak}")
        if (self.iterations is None) == (self.epochs is None):
            raise FieldError("iterations", "(or epochs): give exactly one of iterations or epochs")
        if self.iterations is not None and self.iterations < 1:
            raise FieldError("iterations", f"must be >= 1, got {self.iterations}")
        if self.epochs is not None and self.epochs <= 0:
            raise FieldError("epochs", f"must be > 0, got {self.epochs}")
        for name in ("batch_size", "nan_check_every", "accum_steps"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        for name in (
            "lr",
            "weight_decay",
            "alpha",
            "rl_weight",
            "momentum",
            "tau",
            "warmup_iterations",
            "warmup_lr",
        ):
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.warmup_iterations and self.lr == 0:
            raise FieldError("warmup_iterations", "needs lr > 0 (the warm-up is a factor on lr)")
        if self.gate_sharpen <= 0:
            raise FieldError(
                "gate_sharpen",
                f"must be > 0 (1 leaves the gates as they are), got {self.gate_sharpen}",
            )
        if not 0 <= self.gamma <= 1:
            raise FieldError("gamma", f"must be in [0, 1], got {self.gamma}")
        if self.eval_every is not None and self.eval_every < 1:
            raise FieldError(
                "eval_every", f"must be >= 1 (or None for once per epoch), got {self.eval_every}"
            )
        if not 0 < self.lr_decay <= 1:
            raise FieldError("lr_decay", f"must be in (0, 1], got {self.lr_decay}")
        if any(not 0 < m < 1 for m in self.lr_milestones):
            raise FieldError("lr_milestones", f"are fractions in (0, 1), got {self.lr_milestones}")
        object.__setattr__(self, "lr_milestones", tuple(self.lr_milestones))

    @property
    def variant(self) -> str:
        """The paper's name for what this phase trains (``hrl+s`` is decided by the caller,
        which knows whether an SP checkpoint is loaded)."""
        if self.phase == "sp":
            return "soft" if self.gating == "soft" else "sp"
        if self.phase == "hrl":
            return "hrl" if self.supervised else "rl"
        return self.phase

    def __setstate__(self, state: dict) -> None:
        # A config pickled before ``stage`` was renamed ``phase`` (a sweep's saved Tune state).
        self.__dict__.update(renamed(state, "stage", "phase"))


def hrl_defaults(**overrides) -> TrainConfig:
    """The paper's HRL recipe (§4.1): the SP optimiser with lr 1e-4, constant, for 10k
    iterations (the official CIFAR defaults, cifar/train_rl.py L56-67, whose REINFORCE sums
    over the batch and whose terminal reward is unscaled: ``rl_reduction`` and
    ``terminal_scale`` keep their CIFAR defaults; ImageNet overrides them in its space)."""
    kw = {"phase": "hrl", "lr": 1e-4, "lr_milestones": (), "iterations": 10_000}
    kw.update(overrides)
    if "epochs" in overrides:
        kw.pop("iterations")
    return TrainConfig(**kw)


@dataclass(frozen=True)
class LatencyConfig:
    """How the finished network's latency is measured (``skipnet_sweep.latency``).

    Attributes:
        batch_sizes: batch sizes to time; () measures nothing.
        warmup: untimed calls of each network per batch size first.
        repeats: timed calls of each network per batch size; the median is reported.
    """

    batch_sizes: tuple[int, ...] = (1, 64)
    warmup: int = 5
    repeats: int = 20

    def __post_init__(self) -> None:
        sizes = tuple(self.batch_sizes)
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
            raise ValueError(f"latency batch_sizes must be whole numbers >= 1, got {sizes}")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"latency batch_sizes must not repeat, got {sizes}")
        if self.warmup < 0:
            raise ValueError(f"latency warmup must be >= 0, got {self.warmup}")
        if self.repeats < 1:
            raise ValueError(f"latency repeats must be >= 1, got {self.repeats}")
        object.__setattr__(self, "batch_sizes", sizes)


@dataclass(frozen=True)
class StageConfig:
    """One stage: one run of one phase's training on one machine (model + data + the phase
    and its optimisation).

    Attributes:
        model: the network to train.
        data: the dataset.
        train: the phase and its optimisation.
        init: checkpoint to start from (SP checkpoint for HRL+SP, baseline for ACT/SACT),
            or None for fresh weights.
        backbone_weights: a torchvision-format ResNet state_dict on disk to initialise the
            backbone from when there is no ``init`` (e.g. ImageNet-pretrained weights).
        options: settings of the phase's method beyond ``train`` (a plugin's own knobs),
            JSON-able; part of the stage's key like every other field.
        latency: how the finished network is timed against the plain ResNet.
    """

    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    init: str | None = None
    backbone_weights: str | None = None
    options: dict = field(default_factory=dict)
    latency: LatencyConfig = field(default_factory=LatencyConfig)

    def __post_init__(self) -> None:
        check = _PHASE_CHECKS.get(self.train.phase)
        if check is not None:
            check(self)

    @property
    def variant(self) -> str:
        if self.train.phase == "hrl" and self.train.supervised:
            return "hrl+sp" if self.init else "hrl+s"
        return self.train.variant

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> StageConfig:
        """The config ``to_dict`` gave, or one saved before ``phase`` was renamed."""
        train = renamed(d["train"], "stage", "phase")
        train["lr_milestones"] = tuple(train.get("lr_milestones", ()))
        return cls(
            model=ModelConfig(**d["model"]),
            data=DataConfig(**d["data"]),
            train=TrainConfig(**train),
            init=d.get("init"),
            backbone_weights=d.get("backbone_weights"),
            options=dict(d.get("options") or {}),
            # Configs saved before latency was measured lack it: they get the default.
            latency=LatencyConfig(**d.get("latency", {})),
        )

    def key(self) -> str:
        """A short hash of everything that determines the result of this stage (how the
        finished network is timed does not: ``latency`` is left out; a field added after keys
        were handed out enters only when set, ``identity.py``)."""
        d = hashed_dict(self)
        d.pop("latency", None)
        blob = json.dumps(d, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_train(self, **changes) -> StageConfig:
        return replace(self, train=replace(self.train, **changes))


def saved_phase(d: dict) -> str | None:
    """The phase of a saved ``StageConfig.to_dict()`` (a checkpoint's ``stage_config``), under
    its name or its name before the rename; None if it has none."""
    return renamed(d.get("train") or {}, "stage", "phase").get("phase")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise FieldError(name, f"{show(value)} is not allowed; allowed: {', '.join(allowed)}")


def group_fields(*groups: str) -> tuple[str, ...]:
    """Names of TrainConfig's fields in ``groups`` (``OPTIM``, ``SP``, ``HRL``, ``JOB``), in
    declaration order."""
    return tuple(f.name for f in fields(TrainConfig) if f.metadata.get("group", OPTIM) in groups)


def recipe_fields() -> tuple[str, ...]:
    """TrainConfig's fields whose default each method's recipe sets (see ``_field``)."""
    return tuple(f.name for f in fields(TrainConfig) if f.metadata.get("recipe"))


def field_names(cls) -> list[str]:
    """Names of a config dataclass's fields (used to reject unknown keys)."""
    return [f.name for f in fields(cls)]
