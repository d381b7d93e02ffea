"""The one training loop shared by every phase (baseline, SP, HRL and the ablations).

It knows nothing of Ray or MLflow: callers observe it through ``on_eval`` and wrap the model
and loader (e.g. for DDP) before handing them in.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from skipnet_sweep import metrics as M
from skipnet_sweep.metrics import IMAGES_PER_S, PEAK_MEM_MB
from skipnet_sweep.models import input_layout, model_input
from skipnet_sweep.stages.config import TrainConfig
from skipnet_sweep.stages.objective import Objective, as_objective
from skipnet_sweep.stages.streams import rng_state, set_rng_state

# Training curves get at least this many points whatever a stage's length (the quickstart's
# 30-step stages draw 15), and a point at least every LOG_EVERY_MAX steps on long stages;
# each point is one device sync and one report, so never every step.
LOG_POINTS = 20
LOG_EVERY_MAX = 100

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training cannot continue meaningfully."""


@dataclass
class LoopState:
    """Where the loop is, handed to ``on_eval`` so a caller can checkpoint it."""

    step: int
    total: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    # The fp16 loss scaler (disabled in other precisions); its state resumes a run.
    scaler: torch.amp.GradScaler | None = None
    # The loop's batches: where the data order stands and the streams it started from.
    batches: _Batches | None = field(default=None, repr=False)
    # The stage's objective; what it owns (``Objective.owned``) is checkpointed too.
    objective: Objective | None = field(default=None, repr=False)

    def objective_state(self) -> dict | None:
        """The state of the parameters the objective owns, for a checkpoint (None if none)."""
        owned = self.objective.owned() if self.objective is not None else None
        return None if owned is None else owned.state_dict()

    def streams(self) -> dict | None:
        """The random streams and where the data order stands, for a checkpoint: ``resume``
        (key ``"streams"``) then continues exactly as this run goes on."""
        return None if self.batches is None else self.batches.streams()


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Optimiser steps of a run configured by iterations or (fractional) epochs."""
    if cfg.iterations is not None:
        return cfg.iterations
    return max(1, math.ceil(cfg.epochs * steps_per_epoch))


def log_interval(total: int) -> int:
    """Steps between two training-log points of a stage of ``total`` steps (``on_log``)."""
    return max(1, min(LOG_EVERY_MAX, math.ceil(total / LOG_POINTS)))


def cpu_bf16_flags() -> tuple[str, ...]:
    """The flags by which this machine's CPU says it computes bf16 natively (Linux's
    ``/proc/cpuinfo``: ``amx_bf16``, ``avx512_bf16``); empty elsewhere. Without them PyTorch
    emulates bf16 and runs slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(
                (line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []
            )
    except OSError:
        return ()
    return tuple(flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision ``auto`` or ``fast`` stands for on ``device``; other values are returned
    as they are.

    ``auto``: bf16 autocast on CUDA devices that support it (Ampere and later), fp16 with
    loss scaling on older CUDA devices, fp32 elsewhere (on most CPUs low precision is slower).
    ``fast``: the same, but bf16 on a CPU that computes it natively (``cpu_bf16_flags``),
    where it trained ResNet-20 1.5-2.8x faster than fp32 (docs/benchmarks.md).
    """
    if precision not in ("auto", "fast"):
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fast" and device.type == "cpu" and cpu_bf16_flags():
        return "bf16"
    return "fp32"


def describe_precision(precision: str) -> str | None:
    """One line saying what ``fast`` means on this machine's CPU (None for other values)."""
    if precision != "fast":
        return None
    flags = cpu_bf16_flags()
    if flags:
        return f"precision fast: bf16 autocast on this CPU ({', '.join(flags)}); fp32 on CPUs without them"
    return (
        "precision fast: fp32 on this CPU (no amx_bf16 or avx512_bf16 flag): training takes "
        "1.5-2.8x longer than on a CPU that computes bf16 (docs/benchmarks.md)"
    )


def make_optimizer(model: nn.Module | Iterable[nn.Parameter], cfg: TrainConfig, total: int):
    """SGD with momentum (over ``model``'s parameters, or the parameters given), an optional constant warm-up, then the ``lr_schedule``: step decay
    at ``lr_milestones`` (fractions of ``total``) or a one-cycle triangle.

    Step ``s`` (0-based) runs at ``warmup_lr`` while ``s < warmup_iterations``, as the
    official ``adjust_learning_rate`` does (``lr = 0.01`` while ``_iter < 400``, ucbdrive/skipnet
    cifar/train_sp.py L378-379), then at ``lr * lr_decay ** (milestones passed)``, or, for
    ``one_cycle``, at ``lr * (s + 1) / peak`` up to the peak step and ``lr * (total - s) /
    (total - peak)`` after it (the last step's rate is ``lr / (total - peak)``, not 0).
    """
    opt = torch.optim.SGD(
        model.parameters() if isinstance(model, nn.Module) else model,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov and cfg.momentum > 0,
    )
    milestones = sorted({max(1, int(f * total)) for f in cfg.lr_milestones})
    warmup, warm_factor = cfg.warmup_iterations, cfg.warmup_lr / cfg.lr if cfg.lr else 1.0
    peak = int(cfg.one_cycle_peak * total)

    def factor(s: int) -> float:
        if s < warmup:
            return warm_factor
        if cfg.lr_schedule == "one_cycle":
            return (s + 1) / peak if s < peak else (total - s) / (total - peak)
        return cfg.lr_decay ** bisect.bisect_right(milestones, s)

    # A function (not an object) so the scheduler's state_dict holds only its step count.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return opt, sched


def _load_scheduler(sched: torch.optim.lr_scheduler.LambdaLR, state: dict) -> None:
    # Checkpoints written before the warm-up hold a MultiStepLR's state, without the
    # ``lr_lambdas`` entry LambdaLR expects; its step count is what matters.
    sched.load_state_dict({"lr_lambdas": [None] * len(sched.lr_lambdas), **state})


class _Batches:
    """Batches without end: ``per_pass`` of each pass over ``loader``, ``set_epoch`` first,
    and what a checkpoint needs to draw them again (``streams``, ``resume``).

    A pass's order and augmentation come from the random streams as they were when the pass
    started (the loader's generator, or torch's without one), so the state at that moment is
    kept until the pass ends.
    """

    def __init__(
        self,
        loader: DataLoader,
        per_pass: int,
        epoch: int,
        set_epoch: Callable[[int], None] | None,
        device: torch.device,
    ) -> None:
        self.loader, self.per_pass, self.epoch, self.set_epoch = loader, per_pass, epoch, set_epoch
        self.device = device
        self.generator = getattr(loader, "generator", None)  # shuffles a DataLoader's passes
        self.left = 0  # batches left in the pass in progress
        self.started: dict | None = None  # the streams when that pass started
        self.current: Iterator | None = None

    def __next__(self):
        if self.left == 0:
            if self.set_epoch is not None:
                self.set_epoch(self.epoch)
            self.started = rng_state(self.device, self.generator)
            self.current = iter(self.loader)
            self.left = self.per_pass
            self.epoch += 1
        self.left -= 1
        return next(self.current)

    def streams(self) -> dict:
        """The random streams now and when the pass in progress started (None between
        passes): checkpoint data for ``resume``."""
        return {
            "now": rng_state(self.device, self.generator),
            "pass_start": self.started if self.left else None,
        }

    def resume(self, streams: dict | None, done: int) -> None:
        """Continue a run whose pass in progress had drawn ``done`` batches when ``streams``
        were saved: draw that pass again from its start and drop its first ``done`` batches
        (the data is read again, not trained on: workers and augmentation then draw what they
        drew), then set the streams to where they were. Without ``streams`` (a checkpoint
        from before they were saved) the pass's order is a new one."""
        if streams is not None and streams["pass_start"] is not None:
            set_rng_state(streams["pass_start"], self.device, self.generator)
        for _ in range(done):
            next(self)
        if streams is not None:
            set_rng_state(streams["now"], self.device, self.generator)


class _DeviceLogs:
    """Training logs and the non-finite-loss watch, kept on the device between reads.

    Summing 0-dim tensors queues additions; reading them (``read``, ``check``) waits for the
    device, which the loop does at every log point and evaluation and once per
    ``nan_check_every`` steps.

    Args:
        cost: per-sample MACs from a batch's execution decisions (``CostTable.per_sample``);
            with it, a gated network's running skip ratio and MACs are logged too.
    """

    def __init__(self, cost: Callable[[Tensor], Tensor] | None = None) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.bad_step: Tensor | None = None  # first step with a non-finite loss, 0 if none
        self.bad_value: Tensor | None = None
        self.cost = cost
        self.executed: Tensor | None = None  # per gate, the summed share of samples it ran

    def add_executed(self, executed: Tensor) -> None:
        """One batch's decisions (B, G); a network without gates (G = 0) adds nothing."""
        if executed.dim() != 2 or executed.shape[1] == 0:
            return
        share = executed.detach().float().mean(0)
        self.executed = share if self.executed is None else self.executed + share

    def add(self, loss: Tensor, logs: dict[str, Tensor], step: int) -> None:
        loss = loss.detach().float()
        if self.bad_step is None:
            self.bad_step = torch.zeros((), dtype=torch.long, device=loss.device)
            self.bad_value = torch.zeros((), device=loss.device)
        first = ~torch.isfinite(loss) & (self.bad_step == 0)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_value = torch.where(first, loss, self.bad_value)
        for k, v in logs.items():
            v = torch.as_tensor(v, device=loss.device).detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.count += 1

    def check(self, phase: str) -> None:
        """Raise ``NonFiniteLossError`` naming the first step whose loss was not finite."""
        if self.bad_step is not None and (bad := int(self.bad_step)):
            raise NonFiniteLossError(f"{phase} loss became {self.bad_value.item()} at step {bad}")

    def read(self) -> dict[str, float]:
        """Mean of each log since the last read (one device sync), then start afresh."""
        keys = list(self.sums)
        values = torch.stack([self.sums[k] for k in keys]).tolist() if keys else []
        out = {k: v / self.count for k, v in zip(keys, values, strict=True)}
        if self.executed is not None:
            # ``add`` counts micro-batches, as ``add_executed`` does.
            share = (self.executed / self.count).cpu()
            out[M.TRAIN_SKIP_RATIO] = 1.0 - share.mean().item()
            if self.cost is not None:
                # A SkipNet's MACs are linear in its decisions: the MACs of the mean decisions
                # are the mean MACs (for ACT/SACT, whose halting heads count once a unit
                # runs at all, a close estimate).
                out[M.TRAIN_MACS_MEAN] = self.cost(share[None]).item()
        self.sums, self.count, self.executed = {}, 0, None
        return out


def train_loop(
    model: nn.Module,
    objective: Callable,
    loader: DataLoader,
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    on_eval: Callable[[LoopState, dict[str, float]], None] | None = None,
    resume: dict | None = None,
    progress: bool = True,
    set_epoch: Callable[[int], None] | None = None,
    on_log: Callable[[LoopState, dict[str, float]], None] | None = None,
    log_every: int | None = None,
    cost: Callable[[Tensor], Tensor] | None = None,
) -> LoopState:
    """Train ``model`` with ``objective`` for ``cfg``'s number of steps.

    Each optimiser step accumulates the gradients of ``cfg.accum_steps`` batches, in
    ``cfg.precision``; an epoch is ``len(loader) // accum_steps`` steps (the remaining
    batches of a pass are not used).

    Args:
        model: the network (possibly DDP-wrapped); it is put in training mode. On CUDA an
            unwrapped model is converted to channels-last (convert before wrapping in DDP).
        objective: the stage's ``Objective`` (or a plain ``objective(out, targets) ->
            LossResult`` callable with a ``gate_mode``): its forward, loss, optimiser,
            owned parameters, and the hooks before a fresh run and before each step.
        loader: training batches.
        cfg: optimisation settings.
        device: where to run.
        on_eval: called every ``cfg.eval_every`` steps (default once per epoch) and at the
            last step, with the loop state and the mean training logs since the last call
            or log point (plus ``metrics.LR``, ``metrics.EPOCH``, ``IMAGES_PER_S`` and, on CUDA,
            ``PEAK_MEM_MB``).
        resume: optimiser/scheduler (and optional ``scaler``) state, ``step`` and
            ``streams`` (``LoopState.streams``) from a checkpoint, to continue a run: the
            same batches in the same order and the same random draws as if it had not
            stopped (without ``streams``, an older checkpoint's, the pass in progress is
            shuffled anew); ``objective``: the state of what the objective owns.
        progress: show a progress bar.
        set_epoch: called with the epoch number before each pass (a DistributedSampler's
            ``set_epoch``).
        on_log: called every ``log_every`` steps between evaluations with the mean training
            logs since the last call or evaluation (the same keys ``on_eval`` gets); the
            training curves. The model stays in training mode.
        log_every: steps between ``on_log`` calls; default ``log_interval(total)``.
        cost: per-sample MACs from execution decisions (the stage's cost table's
            ``per_sample``): gated networks then log ``TRAIN_SKIP_RATIO`` and
            ``TRAIN_MACS_MEAN``, the running skip ratio and MACs of the training batches.

    Returns:
        the final loop state.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (checked every
            ``cfg.nan_check_every`` steps and before every evaluation; the message names the
            first such step).
        ValueError: ``accum_steps`` exceeds the batches of one pass.
    """
    device = torch.device(device)
    k = cfg.accum_steps
    if len(loader) < k:
        raise ValueError(
            f"accum_steps ({k}) exceeds the {len(loader)} batches of one pass over the data"
        )
    per_epoch = len(loader) // k
    total = total_steps(cfg, per_epoch)
    precision = resolve_precision(cfg.precision, device)
    if device.type == "cuda":
        # Fixed input sizes: let cuDNN pick the fastest kernels once.
        torch.backends.cudnn.benchmark = True
    fixed = _Fixed(device, k, per_epoch, total, input_layout(model), _AMP_DTYPES.get(precision))
    objective = as_objective(objective)
    opt, sched = _optimiser(model, objective, cfg, total, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step = _restore(resume, model, objective, opt, sched, scaler)
    batches = _Batches(loader, per_epoch * k, step // per_epoch, set_epoch, device)
    if resume is not None:
        batches.resume(resume.get("streams"), (step % per_epoch) * k)
    state = LoopState(step, total, model, opt, sched, scaler, batches, objective)
    logs = _DeviceLogs(cost)
    every, log_every = cfg.eval_every or per_epoch, log_every or log_interval(total)
    model.train()
    bar = tqdm(total=total, initial=step, desc=cfg.phase, disable=not progress, leave=False)
    meter = _Meter(device)
    while state.step < total:
        meter.images += _optimiser_step(state, logs, fixed, cfg.phase)
        state.step += 1
        bar.update(1)
        evaluate = state.step % every == 0 or state.step == total
        log = on_log is not None and not evaluate and state.step % log_every == 0
        if evaluate or log or state.step % cfg.nan_check_every == 0:
            logs.check(cfg.phase)
        if evaluate or log:
            means = meter.means(logs, state, per_epoch)
            if M.TRAIN_LOSS in means:
                bar.set_postfix(loss=f"{means[M.TRAIN_LOSS]:.3f}")
            if log:
                on_log(state, means)
            elif on_eval is not None:
                model.eval()
                on_eval(state, means)
                model.train()
            # Neither evaluation nor reporting is part of the next interval's throughput or
            # memory peak.
            meter.restart()
    bar.close()
    return state


@dataclass(frozen=True)
class _Fixed:
    """What stays the same through one run of the loop."""

    device: torch.device
    k: int  # batches per optimiser step
    per_epoch: int  # optimiser steps per pass over the data
    total: int  # optimiser steps of the run
    layout: torch.memory_format  # of the batches (``model_input``)
    amp_dtype: torch.dtype | None  # autocast's, None in fp32


def _optimiser(
    model: nn.Module, objective: Objective, cfg: TrainConfig, total: int, device: torch.device
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The objective's optimiser and schedule, else ``make_optimizer``'s, over the model's
    parameters and those the objective owns (moved to ``device``, in training mode)."""
    owned = objective.owned()
    params = list(model.parameters())
    if owned is not None:
        owned.to(device).train()
        params += list(owned.parameters())
    return objective.configure_optimizer(model, params, cfg, total) or make_optimizer(
        params, cfg, total
    )


def _restore(
    resume: dict | None,
    model: nn.Module,
    objective: Objective,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler,
) -> int:
    """The step to start from: a checkpoint's, with the optimiser, schedule, loss scaler
    and the objective's own parameters as they were; 0 for a fresh run, after the
    objective's ``begin``."""
    if resume is None:
        objective.begin(model)
        return 0
    opt.load_state_dict(resume["optimizer"])
    _load_scheduler(sched, resume["scheduler"])
    if resume.get("scaler") is not None:
        scaler.load_state_dict(resume["scaler"])
    owned = objective.owned()
    if owned is not None and resume.get("objective") is not None:
        owned.load_state_dict(resume["objective"])
    return int(resume["step"])


def _optimiser_step(state: LoopState, logs: _DeviceLogs, fixed: _Fixed, phase: str) -> int:
    """One optimiser step over ``fixed.k`` batches (the objective's hook first, the logs
    kept on the device); returns the images it saw."""
    model, objective, step, k = state.model, state.objective, state.step, fixed.k
    objective.at_step(step, fixed.total, step / fixed.per_epoch)
    state.optimizer.zero_grad(set_to_none=True)
    no_sync = getattr(model, "no_sync", contextlib.nullcontext)
    images = 0
    for micro in range(k):
        x, y = next(state.batches)
        x = model_input(x, fixed.device, fixed.layout, non_blocking=True)
        y = y.to(fixed.device, non_blocking=True)
        images += x.shape[0]
        # Data-parallel: all-reduce gradients only on the last batch of the step.
        with no_sync() if micro < k - 1 else contextlib.nullcontext():
            amp = fixed.amp_dtype
            with torch.autocast(fixed.device.type, dtype=amp, enabled=amp is not None):
                try:
                    out = objective.forward(model, x)
                except FloatingPointError as err:
                    raise NonFiniteLossError(
                        f"{phase} loss became non-finite at step {step + 1} ({err})"
                    ) from None
            logs.add_executed(out.executed)
            # The objective runs outside autocast and casts to float32 itself.
            res = objective(out, y)
            # Mean losses over k batches of b equal the mean over one batch of k * b.
            state.scaler.scale(res.loss / k if k > 1 else res.loss).backward()
        logs.add(res.loss, res.logs, step + 1)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    return images


class _Meter:
    """The images seen and the time since the last log point, and the CUDA memory peak."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.cuda = device, device.type == "cuda"
        self.restart()

    def restart(self) -> None:
        self.images, self.since = 0, time.perf_counter()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def means(self, logs: _DeviceLogs, state: LoopState, per_epoch: int) -> dict[str, float]:
        """The interval's mean training logs, learning rate, epoch, throughput and (CUDA)
        memory peak."""
        means = logs.read()  # waits for the device: the interval's time is complete
        elapsed = time.perf_counter() - self.since
        means[M.LR] = state.optimizer.param_groups[0]["lr"]
        means[M.EPOCH] = state.step / per_epoch
        means[IMAGES_PER_S] = self.images / elapsed if elapsed > 0 else float("nan")
        if self.cuda:
            means[PEAK_MEM_MB] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return means
