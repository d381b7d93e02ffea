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
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from skipnet_sweep import metrics as M
from skipnet_sweep.data import Loaders, make_loaders
from skipnet_sweep.flops import CostTable
from skipnet_sweep.latency import measure_latency
from skipnet_sweep.methods import Method, method_for_phase
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
        method: the registered method that owns ``cfg.train.phase`` (its network, objective
            and cost accounting); by default the one the registry names for the phase. A
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
    if method is None:
        method = method_for_phase(cfg.train.phase)
    model, resume_payload = _network(method, cfg, resume)
    # The layout ``model_input`` gives the batches in; before any data-parallel wrapper,
    # which keeps the layout it is handed.
    model.to(device, memory_format=input_layout(model))
    input_shape = (loaders.info.in_channels, *loaders.info.input_size)
    costs = method.count_costs(model, input_shape)
    objective = method.objective(cfg, costs)
    main = _MainProcess(cfg, loaders, costs, input_shape, device, progress and is_main)
    train_model, loader = (model, loaders.train)
    if prepare is not None:
        train_model, loader = prepare(model, loaders.train)
    log = None if on_log is None else partial(_log, on_log, is_main)
    state = train_loop(
        train_model,
        objective,
        loader,
        cfg.train,
        device=device,
        on_eval=partial(main.report, on_report) if is_main else partial(_barrier, on_report),
        resume=resume_payload,
        progress=progress and is_main,
        set_epoch=getattr(getattr(loader, "sampler", None), "set_epoch", None),
        on_log=log,
        cost=costs.per_sample,
    )
    if not is_main:
        return StageResult({}, None, None, main.history, cfg.data.selection_set)
    return main.finish(unwrap(state.model), state.step, out, artifacts)


def _network(
    method: Method, cfg: StageConfig, resume: str | os.PathLike | None
) -> tuple[nn.Module, dict | None]:
    """The stage's network, and the checkpoint it resumes from (None: a fresh run)."""
    if resume is None:
        return method.build_model(cfg), None
    # The run's own state holds every weight: its initial checkpoint is not read (a resume
    # must not depend on a cache entry that may have changed since).
    model = method.build_model(replace(cfg, init=None, backbone_weights=None))
    resumed, payload = method.load_network(resume, cfg.model)
    model.load_state_dict(resumed.state_dict())
    return model, payload


def _log(on_log: Logger, is_main: bool, state: LoopState, logs: dict[str, float]) -> None:
    """The loop's ``on_log``: the logs, empty on processes other than the main one."""
    on_log(state.step, state.total, logs if is_main else {})


def _barrier(on_report: Reporter | None, state: LoopState, logs: dict[str, float]) -> None:
    """Data-parallel reporting is a barrier: processes other than the main one report too,
    with nothing."""
    if on_report is not None:
        on_report(state.step, {}, None)


class _MainProcess:
    """What the main process of a stage evaluates, reports and writes: at every ``on_eval``
    of the loop an evaluation on the selection set (reported with a way to checkpoint),
    then the final evaluations, latency, the final checkpoint and the per-sample files.

    Attributes:
        history: the metrics of every evaluation so far.
        last: the latest of them.
    """

    def __init__(
        self,
        cfg: StageConfig,
        loaders: Loaders,
        costs: CostTable,
        input_shape: tuple[int, ...],
        device: str | torch.device,
        chatty: bool,
    ) -> None:
        self.cfg, self.loaders, self.costs, self.device = cfg, loaders, costs, device
        self.input_shape, self.chatty = input_shape, chatty
        self.select_loader = loaders.val if loaders.val is not None else loaders.test
        self.stage_dict = cfg.to_dict()
        self.history: list[dict[str, float]] = []
        self.last: dict[str, float] = {}
        self.last_eval: tuple[int, EvalResult] | None = None

    def say(self, text: str) -> None:
        # Above the bar, which stays put; the evaluations and timing after it take minutes
        # on a large test set.
        if self.chatty:
            tqdm.write(text, file=sys.stderr)

    def evaluate(self, net: nn.Module, loader: DataLoader) -> EvalResult:
        return evaluate(net, loader, self.costs, path=self.cfg.train.eval_path, device=self.device)

    def report(self, on_report: Reporter | None, state: LoopState, logs: dict[str, float]) -> None:
        """The loop's ``on_eval``: evaluate on the selection set, keep the metrics, report."""
        self.say(
            f"step {state.step}/{state.total}: evaluating on the "
            f"{M.split_name(self.cfg.data.selection_set)} "
            f"({len(self.select_loader.dataset):,} images)"
        )
        result = self.evaluate(state.model, self.select_loader)
        merged = {**logs, **result.metrics}
        self.history.append(merged)
        self.last = dict(merged)
        self.last_eval = (state.step, result)
        if on_report is not None:
            on_report(state.step, merged, partial(self._save, state, merged))

    def _save(self, state: LoopState, metrics: dict[str, float], path: str | os.PathLike) -> Path:
        """A resumable checkpoint of ``state`` at ``path``."""
        payload = make_payload(
            state.model,
            self.stage_dict,
            metrics=metrics,
            step=state.step,
            optimizer=state.optimizer,
            scheduler=state.scheduler,
            input_shape=self.input_shape,
            streams=state.streams(),
            objective=state.objective_state(),
        )
        return save_checkpoint(path, payload)

    def finish(
        self,
        net: nn.Module,
        step: int,
        out: str | os.PathLike | None,
        artifacts: str | os.PathLike | None,
    ) -> StageResult:
        """The trained ``net``'s final evaluations and latency; writes the final checkpoint
        to ``out`` and the test set's per-sample files to ``artifacts`` (None: not)."""
        final, test = self._final(net, step)
        metrics = {
            **self.last,
            **final.metrics,
            **{M.final_test(k): v for k, v in test.metrics.items()},
            **_latency(net, self.cfg, self.input_shape, self.loaders.test.dataset, self.device),
        }
        path = None
        if out is not None:
            payload = make_payload(
                net, self.stage_dict, metrics=metrics, step=step, input_shape=self.input_shape
            )
            path = save_checkpoint(out, payload)
        if artifacts is not None:
            self.say(f"writing the test set's per-sample files to {artifacts}")
            info = self.loaders.info
            test.write_artifacts(
                artifacts,
                self.loaders.test.dataset,
                mean=info.mean,
                std=info.std,
                class_name=info.class_name,
            )
        return StageResult(metrics, test, path, self.history, self.cfg.data.selection_set)

    def _final(self, net: nn.Module, step: int) -> tuple[EvalResult, EvalResult]:
        """The final evaluations on the selection set and on the test set (the same one
        without a validation split); says what comes next, timing latency."""
        if self.last_eval is not None and self.last_eval[0] == step:
            final = self.last_eval[1]  # the loop always evaluates at its last step
        else:
            final = self.evaluate(net, self.select_loader)
        if self.loaders.val is None:
            test = final  # the selection set is the test set: evaluated once already
        else:
            self.say(f"evaluating on the test set ({len(self.loaders.test.dataset):,} images)")
            test = self.evaluate(net, self.loaders.test)
        latency = self.cfg.latency
        if latency.batch_sizes:
            self.say(
                "timing latency beside the plain ResNet: batch "
                + ", ".join(str(b) for b in latency.batch_sizes)
                + f"; {latency.warmup} warm-up and {latency.repeats} timed rounds each"
            )
        return final, test


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
