"""Stages: one phase's training (baseline, SP, HRL, the ablations...) on one machine,
without Ray.

The building blocks a method uses (configs, the ``Objective`` and the built-in ones, the
loop, evaluation, checkpoints, the stage's network) are here, below the method registry;
``skipnet_sweep.runner.run_stage``, which asks the registry for a stage's method, sits
above it. Nothing here imports ``skipnet_sweep.methods``.
"""

from skipnet_sweep.stages.checkpoint import CheckpointError, load_checkpoint, load_model
from skipnet_sweep.stages.config import DataConfig, StageConfig, TrainConfig, hrl_defaults
from skipnet_sweep.stages.evaluate import EvalResult, evaluate
from skipnet_sweep.stages.loop import NonFiniteLossError, train_loop
from skipnet_sweep.stages.objective import LossResult, Objective

__all__ = [
    "CheckpointError",
    "DataConfig",
    "EvalResult",
    "LossResult",
    "NonFiniteLossError",
    "Objective",
    "StageConfig",
    "TrainConfig",
    "evaluate",
    "hrl_defaults",
    "load_checkpoint",
    "load_model",
    "train_loop",
]
