"""The one training loop shared by every stage (baseline, SP, HRL and the ablations).

It knows nothing of Ray or MLflow: callers observe it through ``on_eval`` and wrap the model
and loader (e.g. for DDP) before handing them in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from skipnet_sweep import metrics as M
from skipnet_sweep.stages.config import TrainConfig


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


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Optimiser steps of a run configured by iterations or (fractional) epochs."""
    if cfg.iterations is not None:
        return cfg.iterations
    return max(1, math.ceil(cfg.epochs * steps_per_epoch))


def make_optimizer(model: nn.Module, cfg: TrainConfig, total: int):
    """SGD with momentum and step decay at ``lr_milestones`` (fractions of ``total``)."""
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov and cfg.momentum > 0,
    )
    milestones = sorted({max(1, int(f * total)) for f in cfg.lr_milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=cfg.lr_decay)
    return opt, sched


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
) -> LoopState:
    """Train ``model`` with ``objective`` for ``cfg``'s number of steps.

    Args:
        model: the network (possibly DDP-wrapped); it is put in training mode.
        objective: maps (SkipOutput, targets) to a ``LossResult``; its ``gate_mode`` says how
            gates decide.
        loader: training batches.
        cfg: optimisation settings.
        device: where to run.
        on_eval: called every ``cfg.eval_every`` steps (default once per epoch) and at the
            last step, with the loop state and the mean training logs since the last call.
        resume: optimiser/scheduler state and ``step`` from a checkpoint, to continue a run.
        progress: show a progress bar per epoch.
        set_epoch: called with the epoch number before each pass (a DistributedSampler's
            ``set_epoch``).

    Returns:
        the final loop state.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite.
    """
    per_epoch = len(loader)
    total = total_steps(cfg, per_epoch)
    every = cfg.eval_every or per_epoch
    opt, sched = make_optimizer(model, cfg, total)
    step = 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        step = int(resume["step"])
    state = LoopState(step, total, model, opt, sched)
    sums: dict[str, float] = {}
    count = 0
    model.train()
    epoch = step // per_epoch
    while step < total:
        if set_epoch is not None:
            set_epoch(epoch)
        steps_now = min(per_epoch, total - step)
        bar = tqdm(
            total=steps_now,
            desc=f"{cfg.stage} epoch {epoch + 1}/{math.ceil(total / per_epoch)}",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            try:
                out = model(x, mode=objective.gate_mode, path="masked")
            except FloatingPointError as err:
                raise NonFiniteLossError(
                    f"{cfg.stage} loss became non-finite at step {step + 1} ({err})"
                ) from None
            res = objective(out, y)
            if not torch.isfinite(res.loss):
                raise NonFiniteLossError(
                    f"{cfg.stage} loss became {res.loss.item()} at step {step + 1}"
                )
            opt.zero_grad(set_to_none=True)
            res.loss.backward()
            opt.step()
            sched.step()
            step += 1
            count += 1
            for k, v in res.logs.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.update(1)
            bar.set_postfix(loss=f"{res.logs.get(M.TRAIN_LOSS, res.loss.item()):.3f}")
            if step % every == 0 or step == total:
                state.step = step
                if on_eval is not None:
                    logs = {k: v / count for k, v in sums.items()}
                    logs[M.LR] = opt.param_groups[0]["lr"]
                    logs[M.EPOCH] = step / per_epoch
                    model.eval()
                    on_eval(state, logs)
                    model.train()
                sums, count = {}, 0
            if step >= total:
                break
        bar.close()
        epoch += 1
    state.step = step
    return state
