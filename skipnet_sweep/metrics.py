"""Names of metrics, params and tags, defined once.

The stages produce dictionaries keyed by these names, the MLflow tracker logs them under
these names and ``analysis/`` reads them back by the same names, so a rename happens here
and nowhere else.
"""

from __future__ import annotations

# Accuracy, in percent over the evaluation set.
TOP1 = "top1"
TOP5 = "top5"
# Multiply-adds per sample (convolutions + linear layers + gates), from each sample's own
# gate decisions: mean and std over the evaluation set.
FLOPS_MEAN = "flops_mean"
FLOPS_STD = "flops_std"
# Convolution-only multiply-adds per sample (the paper's §4.2.1 count).
CONV_FLOPS_MEAN = "conv_flops_mean"
# The same network with every block executed (gates included when gated).
FLOPS_FULL = "flops_full"
# The plain ResNet of the same backbone: the reference for computation percentage.
FLOPS_PLAIN = "flops_plain"
# 100 * flops_mean / flops_plain and 100 - that.
COMPUTATION_PCT = "computation_pct"
REDUCTION_PCT = "reduction_pct"
# Multiply-adds of the gates alone, per sample.
GATE_FLOPS = "gate_flops"
# Mean number of skipped blocks per sample and the fraction of gated blocks skipped.
SKIPPED_MEAN = "skipped_blocks_mean"
SKIP_RATIO = "skip_ratio"
# Training-time quantities.
LOSS = "loss"
TRAIN_LOSS = "train_loss"
REWARD = "reward"
LR = "lr"
EPOCH = "epoch"

# Everything a final evaluation reports (plus per-gate skip ratios below).
EVAL_METRICS = (
    TOP1,
    TOP5,
    FLOPS_MEAN,
    FLOPS_STD,
    CONV_FLOPS_MEAN,
    FLOPS_FULL,
    FLOPS_PLAIN,
    COMPUTATION_PCT,
    REDUCTION_PCT,
    GATE_FLOPS,
    SKIPPED_MEAN,
    SKIP_RATIO,
)


def gate_skip_ratio(i: int) -> str:
    """Metric name of gate ``i``'s skip ratio (gate i decides block i + 1)."""
    return f"skip_ratio_g{i:03d}"


def is_gate_skip_ratio(name: str) -> bool:
    return name.startswith("skip_ratio_g")


# Tags and params shared by the tracker and analysis.
TAG_STAGE = "stage"  # baseline / sp / hrl / act / sact
TAG_TRIAL_ID = "skipnet.trial_id"  # idempotency key of a child run
TAG_SWEEP_ID = "skipnet.sweep_id"  # idempotency key of a parent run
TAG_SP_RUN_ID = "sp_run_id"
TAG_PARETO = "pareto"
TAG_METHOD = "method"  # skipnet-<gate>, plain, act, sact: one curve per method in figures
TAG_METHOD_NAME = "skipnet.method"  # the registered method (skipnet, plain, act, sact, ...)
TAG_SPACE = "skipnet.space"
TAG_ERROR = "skipnet.error"  # why a child run failed (e.g. the loss became NaN)
HYPERVOLUME = "hypervolume"

STAGES = ("baseline", "sp", "hrl", "act", "sact")
SWEEP_STAGE = "sweep"  # the stage tag of a parent run

PARAM_DATASET = "dataset"
PARAM_ARCH = "backbone"
PARAM_GATE = "gate"
PARAM_ALPHA = "alpha"
PARAM_TAU = "tau"
PARAM_VARIANT = "variant"  # hrl+sp, hrl+s, rl, soft
PARAM_SEED = "seed"
PARAM_SP_KEY = "sp_key"

# Per-run evaluation artifacts (under ``eval/`` of a child run).
ARTIFACT_DIR = "eval"
PER_SAMPLE_CSV = "per_sample.csv"
PER_CLASS_CSV = "per_class.csv"
EASY_HARD_NPZ = "easy_hard.npz"
PARETO_CSV = "pareto.csv"


def method_of(stage: str, gate: str | None) -> str:
    """The curve a run belongs to in figures: plain, skipnet-<gate>, act or sact."""
    if stage == "baseline":
        return "plain"
    if stage in ("act", "sact"):
        return stage
    return f"skipnet-{gate}"
