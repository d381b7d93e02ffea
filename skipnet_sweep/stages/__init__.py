"""Training stages (baseline, SP, HRL and the ablations) on one machine, without Ray."""

from skipnet_sweep.stages.checkpoint import CheckpointError, load_checkpoint, load_model
from skipnet_sweep.stages.config import DataConfig, StageConfig, TrainConfig, hrl_defaults
from skipnet_sweep.stages.evaluate import EvalResult, evaluate
from skipnet_sweep.stages.loop import NonFiniteLossError, train_loop
from skipnet_sweep.stages.runner import StageResult, run_stage, summary_line

__all__ = [
    "CheckpointError",
    "DataConfig",
    "EvalResult",
    "NonFiniteLossError",
    "StageConfig",
    "StageResult",
    "TrainConfig",
    "evaluate",
    "hrl_defaults",
    "load_checkpoint",
    "load_model",
    "run_stage",
    "summary_line",
    "train_loop",
]
