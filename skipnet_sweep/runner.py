"""Run one stage end to end on one machine: data, model, initial weights, the training loop,
evaluation and the final checkpoint. Ray wraps this; it never imports Ray itself.

Above the method registry (it asks the registry for the stage's method) and the stages'
building blocks it puts together."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from skipnet_sweep import metrics as M
from skipnet_sweep.data import make_loaders
from skipnet_sweep.flops import CostTable
from skipnet_sweep.latency import measure_latency
from skipnet_sweep.methods import Method, method_for_stage
from skipnet_sweep.models import input_layout
from skipnet_sweep.pareto import TOO_NOISY, speedup_verdict
from skipnet_sweep.routing import describe_routing
from skipnet_sweep.stages.checkpoint import make_payload, save_checkpoint, unwrap
from skipnet_sweep.stages.config import StageConfig
from skipnet_sweep.stages.evaluate import EvalResult, evaluate
from skipnet_sweep.stages.loop import LoopState, train_loop
from skipnet_sweep.stages.network import build_stage_model, complete_model_config

# on_report(step, metrics, save) is called at every evaluation; save(path) writes a
# resumable checkpoint of the current state there (None on non-main processes).
Reporter = Callable[[int, dict[str, float], Callable[[str | os.PathLike], Path] | None], None]
# on_log(step, total, logs) is called between evaluations with the training logs (the
# curves) and the stage's total of steps; logs are empty on non-main processes.
Logger = Callable[[int, int, dict[str, float]], None]


@dataclass
class StageResult:
    """The outcome of ``run_stage``.

    Attributes:
        metrics: the last training logs, the final evaluation on the selection set under the
            plain names (``top1``, ``flops_mean``, ...), the final test evaluation under
            ``test_*`` names and the latency metrics (``latency_ms_b1``, ...); see
            ``skipnet_sweep.metrics``.
        evaluation: the final test ``EvalResult`` (per-sample data for the paper's
            figures); None on processes other than the main one.
        checkpoint: where the final checkpoint was written, if anywhere.
        history: metrics of every evaluation during training (selection set), in order.
        selection_set: the set those evaluations ran on: ``val`` or ``test`` (no split).
    """

    metrics: dict[str, float]
    evaluation: EvalResult | None
    checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    selection_set: str = M.SELECTION_TEST


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch: a run on CPU is then repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_stage(
    cfg: StageConfig,
    out: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    on_report: Reporter | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    prepare: Callable[[nn.Module, object], tuple[nn.Module, object]] | None = None,
    is_main: bool = True,
    artifacts: str | os.PathLike | None = None,
    method: Method | None = None,
    on_log: Logger | None = None,
) -> StageResult:
    """Train and evaluate one stage.

    Every evaluation during training runs on the selection set: the validation split
    (``cfg.data.val_split``) or, without one, the test set. At the end the test set is
    evaluated once (without a split that is the final selection evaluation itself) and the
    network is timed against the plain ResNet (``cfg.latency``).

    Args:
        cfg: the stage (``complete_model_config`` is applied).
        out: where to write the final checkpoint (only on the main process).
        device: where to run.
        on_report: called at every evaluation, as ``on_report(step, metrics, save)``, with
            the selection metrics; on processes other than the main one with empty metrics
            and ``save=None``.
        resume: a checkpoint written by ``save`` in ``on_report``, to continue from.
        progress: a progress bar while training, then a line on stderr before each step
            that follows it (evaluating, timing latency).
        prepare: wraps (model, train_loader) before training, e.g. for DDP.
        is_main: whether this process evaluates, reports and writes files.
        artifacts: folder for the final test evaluation's per-sample files.
        method: the registered method that owns ``cfg.train.stage`` (its network, objective
            and cost accounting); by default the one the registry names for the stage. A
            sweep passes the method it shipped with its plan (plugins included).
        on_log: called every few steps between evaluations (``loop.log_interval``) as
            ``on_log(step, total, logs)`` with the training logs since the last call: loss,
            learning rate, throughput and, for gated networks, the running skip ratio and
            MACs; on processes other than the main one with empty logs.

    Returns:
        a ``StageResult``.
    """
    cfg = complete_model_config(cfg)
    seed_everything(cfg.train.seed)
    loaders = make_loaders(
        cfg.data.dataset,
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        device=device,
        val_split=cfg.data.val_split,
        **cfg.data.loader_kwargs(),
    )
    train_loader, test_loader, info = loaders.train, loaders.test, loaders.info
    select_loader = loaders.val if loaders.val is not None else test_loader
    selection_set = cfg.data.selection_set
    if method is None:
        method = method_for_stage(cfg.train.stage)
    resume_payload = None
    if resume is None:
        model = method.build_model(cfg)
    else:
        # The run's own state holds every weight: its initial checkpoint is not read (a
        # resume must not depend on a cache entry that may have changed since).
        model = method.build_model(replace(cfg, init=None, backbone_weights=None))
        resumed, resume_payload = method.load_network(resume, cfg.model)
        model.load_state_dict(resumed.state_dict())
    # The layout ``model_input`` gives the batches in; before any data-parallel wrapper,
    # which keeps the layout it is handed.
    model.to(device, memory_format=input_layout(model))
    input_shape = (info.in_channels, *info.input_size)
    costs = method.count_costs(model, input_shape)
    objective = method.objective(cfg, costs)
    stage_dict = cfg.to_dict()
    history: list[dict[str, float]] = []
    last: dict[str, float] = {}

    def say(text: str) -> None:
        # Above the bar, which stays put; the evaluations and timing after it take minutes
        # on a large test set.
        if progress and is_main:
            tqdm.write(text, file=sys.stderr)

    last_eval: list[tuple[int, EvalResult]] = []

    train_model, loader = (model, train_loader)
    if prepare is not None:
        train_model, loader = prepare(model, train_loader)
    sampler = getattr(loader, "sampler", None)
    set_epoch = getattr(sampler, "set_epoch", None)

    def report(state: LoopState, logs: dict[str, float]) -> None:
        if not is_main:
            # Data-parallel reporting is a barrier: other ranks report too, with nothing.
            if on_report is not None:
                on_report(state.step, {}, None)
            return
        say(
            f"step {state.step}/{state.total}: evaluating on the "
            f"{M.split_name(selection_set)} ({len(select_loader.dataset):,} images)"
        )
        result = evaluate(
            train_model, select_loader, costs, path=cfg.train.eval_path, device=device
        )
        merged = {**logs, **result.metrics}
        history.append(merged)
        last.clear()
        last.update(merged)
        last_eval[:] = [(state.step, result)]

        def save(path: str | os.PathLike) -> Path:
            payload = make_payload(
                state.model,
                stage_dict,
                metrics=merged,
                step=state.step,
                optimizer=state.optimizer,
                scheduler=state.scheduler,
                input_shape=input_shape,
                streams=state.streams(),
                objective=state.objective_state(),
            )
            return save_checkpoint(path, payload)

        if on_report is not None:
            on_report(state.step, merged, save)

    def log(state: LoopState, logs: dict[str, float]) -> None:
        on_log(state.step, state.total, logs if is_main else {})

    state = train_loop(
        train_model,
        objective,
        loader,
        cfg.train,
        device=device,
        on_eval=report,
        resume=resume_payload,
        progress=progress and is_main,
        set_epoch=set_epoch,
        on_log=log if on_log is not None else None,
        cost=costs.per_sample,
    )
    net = unwrap(state.model)
    if not is_main:
        return StageResult({}, None, None, history, selection_set)
    if last_eval and last_eval[0][0] == state.step:
        final = last_eval[0][1]  # the loop always evaluates at its last step
    else:
        final = evaluate(net, select_loader, costs, path=cfg.train.eval_path, device=device)
    if loaders.val is None:
        test = final  # the selection set is the test set: evaluated once already
    else:
        say(f"evaluating on the test set ({len(test_loader.dataset):,} images)")
        test = evaluate(net, test_loader, costs, path=cfg.train.eval_path, device=device)
    if cfg.latency.batch_sizes:
        say(
            "timing latency beside the plain ResNet: batch "
            + ", ".join(str(b) for b in cfg.latency.batch_sizes)
            + f"; {cfg.latency.warmup} warm-up and {cfg.latency.repeats} timed rounds each"
        )
    metrics = {
        **last,
        **final.metrics,
        **{M.final_test(k): v for k, v in test.metrics.items()},
        **_latency(net, cfg, input_shape, test_loader.dataset, device),
    }
    path = None
    if out is not None:
        payload = make_payload(
            net, stage_dict, metrics=metrics, step=state.step, input_shape=input_shape
        )
        path = save_checkpoint(out, payload)
    if artifacts is not None:
        say(f"writing the test set's per-sample files to {artifacts}")
        test.write_artifacts(
            artifacts,
            test_loader.dataset,
            mean=info.mean,
            std=info.std,
            class_name=info.class_name,
        )
    return StageResult(metrics, test, path, history, selection_set)


def _latency(
    net: nn.Module, cfg: StageConfig, input_shape: tuple[int, ...], images, device
) -> dict[str, float]:
    """The finished network timed against the plain ResNet on the first test images (a
    SkipNet's decisions, and so its time, depend on what it sees)."""
    sizes = cfg.latency.batch_sizes
    if not sizes:
        return {}
    n = min(max(sizes), len(images))
    sample = torch.stack([images[i][0] for i in range(n)])
    return measure_latency(
        net,
        input_shape,
        device=device,
        batch_sizes=sizes,
        warmup=cfg.latency.warmup,
        repeats=cfg.latency.repeats,
        images=sample,
    )


def summary_line(cfg: StageConfig, metrics: dict[str, float]) -> str:
    """One line a person reads at the end of a stage, every accuracy with its split."""
    split = cfg.data.selection_set
    parts = [
        f"{cfg.variant} {cfg.model.arch}" + (f"+{cfg.model.gate}" if cfg.model.gate else ""),
        f"{M.accuracy_label(split)} {metrics[M.TOP1]:.2f}%",
        f"{split} top-5 {metrics[M.TOP5]:.2f}%",
        f"MACs {metrics[M.FLOPS_MEAN] / 1e6:.2f}M ± {metrics[M.FLOPS_STD] / 1e6:.2f}M",
        f"{metrics[M.COMPUTATION_PCT]:.1f}% of the plain ResNet "
        f"(reduction {metrics[M.REDUCTION_PCT]:.1f}%)",
    ]
    if split == M.SELECTION_VAL and M.TEST_TOP1 in metrics:
        parts.insert(2, f"{M.accuracy_label(M.SELECTION_TEST)} {metrics[M.TEST_TOP1]:.2f}%")
    speedups = [b for b in cfg.latency.batch_sizes if M.speedup(b) in metrics]
    if speedups:
        parts.append(
            "speed-up over plain "
            + ", ".join(f"{_speedup(metrics, b)} at batch {b}" for b in speedups)
            + f" (median and interquartile range of {cfg.latency.repeats} rounds)"
        )
    if cfg.model.gate:
        parts.append(f"skipped {metrics[M.SKIPPED_MEAN]:.2f} blocks/sample")
        if M.ROUTING_SHARE in metrics:
            parts.append(describe_routing(metrics))
    return " | ".join(parts)


def _speedup(metrics: dict[str, float], batch: int) -> str:
    """``1.31x (1.10-1.52)``, with ``too noisy to tell`` when the range spans 1x."""
    q1, q3 = metrics.get(M.speedup_q1(batch)), metrics.get(M.speedup_q3(batch))
    text = f"{metrics[M.speedup(batch)]:.2f}x"
    if q1 is None or q3 is None:
        return text
    verdict = speedup_verdict(metrics[M.speedup(batch)], q1, q3)
    return f"{text} ({q1:.2f}-{q3:.2f}{', too noisy to tell' if verdict == TOO_NOISY else ''})"


__all__ = [
    "CostTable",
    "StageResult",
    "build_stage_model",
    "complete_model_config",
    "run_stage",
    "seed_everything",
    "summary_line",
]
