"""Training stages (baseline, SP, HRL and the ablations) on one machine, without Ray.

The building blocks a method uses (configs, objectives, the loop, evaluation, checkpoints,
the stage's network) are here; ``skipnet_sweep.stages.runner.run_stage``, which asks the
method registry for a stage's method, sits above the registry and is imported from its own
module, so that importing a building block never imports the registry.
"""

from skipnet_sweep.stages.checkpoint import CheckpointError, load_checkpoint, load_model
from skipnet_sweep.stages.config import DataConfig, StageConfig, TrainConfig, hrl_defaults
from skipnet_sweep.stages.evaluate import EvalResult, evaluate
from skipnet_sweep.stages.loop import NonFiniteLossError, train_loop

__all__ = [
    "CheckpointError",
    "DataConfig",
    "EvalResult",
    "NonFiniteLossError",
    "StageConfig",
    "TrainConfig",
    "evaluate",
    "hrl_defaults",
    "load_checkpoint",
    "load_model",
    "train_loop",
]
