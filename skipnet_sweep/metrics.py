"""Names of metrics, params and tags, defined once.

The stages produce dictionaries keyed by these names, the MLflow tracker logs them under
these names and ``reporting/`` reads them back by the same names, so a rename happens here
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
# Per-image routing against static pruning (``skipnet_sweep.routing``): the percentage of
# images off the most common set of executed blocks, the gates that skip for some images and
# not others, and the number of distinct sets.
ROUTING_SHARE = "routing_share"
ROUTED_GATES = "routed_gates"
DISTINCT_ROUTES = "distinct_routes"
# Training-time quantities.
LOSS = "loss"
TRAIN_LOSS = "train_loss"
REWARD = "reward"
LR = "lr"
EPOCH = "epoch"
IMAGES_PER_S = "images_per_s"  # training images per second since the last evaluation
PEAK_MEM_MB = "peak_mem_mb"  # peak CUDA memory allocated since the last evaluation (MiB)
RL_LOSS = "rl_loss"
# Gated networks, over the training batches since the last log point: the share of gated
# blocks skipped and the mean multiply-adds per image (named for what it holds, unlike
# ``flops_mean``, whose name predates the distinction).
TRAIN_SKIP_RATIO = "train_skip_ratio"
TRAIN_MACS_MEAN = "train_macs_mean"
PONDER = "ponder"
SAMPLED_TOP1 = "train_sampled_top1"  # pure RL: how often the sampled prediction is right

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
    ROUTING_SHARE,
    ROUTED_GATES,
    DISTINCT_ROUTES,
)


def gate_skip_ratio(i: int) -> str:
    """Metric name of gate ``i``'s skip ratio (gate i decides block i + 1)."""
    return f"skip_ratio_g{i:03d}"


def is_gate_skip_ratio(name: str) -> bool:
    return name.startswith("skip_ratio_g")


# Tags and params shared by the tracker and the reporting package.
TAG_STAGE = "stage"  # the run's phase (TrainConfig.phase): baseline / sp / hrl / act / sact
TAG_TRIAL_ID = "skipnet.trial_id"  # idempotency key of a child run
TAG_SWEEP_ID = "skipnet.sweep_id"  # idempotency key of a parent run
TAG_SP_RUN_ID = "sp_run_id"  # an HRL run's SP run
TAG_INIT_RUN_ID = "init_run_id"  # the run whose final weights a run starts from
TAG_PARETO = "pareto"  # on the frontier of top-1 against MACs
TAG_PARETO_LATENCY = "pareto_latency"  # ... against measured latency (batch 1)
TAG_ROUTING = "routing"  # routes / prunes / no skip (skipnet_sweep.routing.routing_kind)
TAG_METHOD = "method"  # skipnet-<gate>, plain, act, sact: one curve per method in figures
TAG_METHOD_NAME = "skipnet.method"  # the registered method (skipnet, plain, act, sact, ...)
# The registered method's ``label`` and ``marker``: how the report draws a method it has no
# style of its own for (a plugin registered in another process), see reporting.style.
TAG_METHOD_LABEL = "skipnet.method_label"
TAG_METHOD_MARKER = "skipnet.method_marker"
# The param that holds the run's cost weight (alpha, tau, a target rate, a penalty).
TAG_COST_WEIGHT = "skipnet.cost_weight"
COST_WEIGHT_VALUE = "cost_weight_value"  # reporting column: that param's value, as a number
TAG_SPACE = "skipnet.space"
TAG_ERROR = "skipnet.error"  # why a child run failed (e.g. the loss became NaN)
TAG_CHECKPOINT = "checkpoint_uri"  # where a run's final weights are (train eval --checkpoint)
TAG_MODEL_VERSION = "registered_model_version"  # a frontier run's version in the registry
HYPERVOLUME = "hypervolume"

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
# A frontier run's logged model (under ``model``): the artifact holding its weights and config.
MODEL_WEIGHTS = "weights"


def method_of(phase: str, gate: str | None) -> str:
    """The curve a run belongs to in figures: plain, skipnet-<gate>, act or sact."""
    if phase == "baseline":
        return "plain"
    if phase in ("act", "sact"):
        return phase
    return f"skipnet-{gate}"


# =========================================================================================
# Selection set and final test set (validation split), and latency per run.
# =========================================================================================

# The set that every evaluation during training ran on, and so the set on which the sweep's
# Pareto frontier, Optuna and ASHA chose (they read TOP1 and FLOPS_MEAN above): the
# validation split when the data config holds one out, else the test set. Logged as a param
# so a report can say "frontier chosen on test" where there was no split.
SELECTION_SET = "selection_set"
SELECTION_VAL = "val"
SELECTION_TEST = "test"
SELECTION_SETS = (SELECTION_VAL, SELECTION_TEST)

# The test set is evaluated once per run, at the end; its metrics are the names above with
# this prefix (per-gate skip ratios included: test_skip_ratio_g000, ...). Without a split
# they are the final selection evaluation itself, so every run reports them.
TEST_PREFIX = "test_"


def final_test(name: str) -> str:
    """The name of metric ``name`` measured by the final test evaluation."""
    return TEST_PREFIX + name


TEST_TOP1 = final_test(TOP1)
TEST_TOP5 = final_test(TOP5)
TEST_FLOPS_MEAN = final_test(FLOPS_MEAN)
TEST_FLOPS_STD = final_test(FLOPS_STD)
TEST_COMPUTATION_PCT = final_test(COMPUTATION_PCT)
TEST_REDUCTION_PCT = final_test(REDUCTION_PCT)
TEST_SKIP_RATIO = final_test(SKIP_RATIO)
TEST_ROUTING_SHARE = final_test(ROUTING_SHARE)
TEST_EVAL_METRICS = tuple(final_test(m) for m in EVAL_METRICS)

# Wall-clock latency of one forward pass over a batch of b images, in milliseconds (median
# over repeats), of the run's network as deployed (eval mode, inference mode, thresholded
# gates on the sparse path) and of the plain ResNet of the same backbone timed interleaved
# with it in the same process, round by round; speed-up = plain / network per round (> 1:
# the network is faster), its median and its quartiles over the rounds (the timing's noise:
# a speed-up is only called faster or slower beyond them).
LATENCY_PREFIXES = (
    "latency_ms_b",
    "latency_plain_ms_b",
    "speedup_b",
    "speedup_q1_b",
    "speedup_q3_b",
)


def latency_ms(batch: int) -> str:
    """Metric name of the network's latency at batch size ``batch`` (ms per batch)."""
    return f"latency_ms_b{batch}"


def latency_plain_ms(batch: int) -> str:
    """Metric name of the plain ResNet's latency at batch size ``batch`` (ms per batch)."""
    return f"latency_plain_ms_b{batch}"


def speedup(batch: int) -> str:
    """Metric name of the speed-up over the plain ResNet at batch size ``batch``."""
    return f"speedup_b{batch}"


def speedup_q1(batch: int) -> str:
    """Metric name of the speed-up's first quartile over the timed rounds."""
    return f"speedup_q1_b{batch}"


def speedup_q3(batch: int) -> str:
    """Metric name of the speed-up's third quartile over the timed rounds."""
    return f"speedup_q3_b{batch}"


def is_latency(name: str) -> bool:
    """Whether ``name`` is a latency metric (a timing: it differs between identical runs)."""
    return name.startswith(LATENCY_PREFIXES)


# =========================================================================================
# What each metric holds, in words: the run pages' descriptions and the docs read these.
# =========================================================================================

# ``{split}`` is the selection set's name in words (``split_name``): every accuracy says
# which images it was measured on.
_DESCRIPTIONS = {
    TOP1: "top-1 accuracy (%) on the {split}, at every evaluation",
    TOP5: "top-5 accuracy (%) on the {split}",
    FLOPS_MEAN: "mean multiply-adds (MACs) per image on the {split}, gates included (the "
    "name predates the distinction: it holds MACs, not FLOPs)",
    FLOPS_STD: "standard deviation of the MACs per image",
    FLOPS_PLAIN: "MACs per image of the plain ResNet of the same backbone",
    COMPUTATION_PCT: "MACs as a percentage of the plain ResNet's",
    SKIP_RATIO: "share of the gated blocks skipped on the {split}",
    ROUTING_SHARE: "% of {split} images whose executed blocks differ from the most common set",
    TEST_TOP1: "top-1 accuracy (%) on the test set, once, at the end",
    TEST_FLOPS_MEAN: "mean MACs per test image, once, at the end",
    TRAIN_LOSS: "training cross-entropy, mean over the steps since the last point",
    LR: "learning rate",
    IMAGES_PER_S: "training throughput (images per second) since the last point",
    TRAIN_SKIP_RATIO: "share of gated blocks skipped in the training batches since the last "
    "point (gated networks)",
    TRAIN_MACS_MEAN: "mean MACs per training image since the last point (gated networks)",
    latency_ms(1): "latency of one image (ms, median of the timed rounds), as deployed",
    speedup(1): "the plain ResNet's time over this network's at batch 1, timed side by side: "
    "median of the rounds",
    speedup_q1(1): "first and third quartiles of that speed-up over the rounds: its noise",
}
_DESCRIPTIONS[speedup_q3(1)] = _DESCRIPTIONS[speedup_q1(1)]


def split_name(selection_set: str) -> str:
    """``val`` -> "validation split", ``test`` -> "test set"."""
    return "validation split" if selection_set == SELECTION_VAL else "test set"


def accuracy_label(selection_set: str) -> str:
    """How a person reads ``TOP1``: ``val top-1`` or ``test top-1``."""
    return f"{selection_set} top-1"


def describe_metrics(selection_set: str) -> dict[str, str]:
    """Each key metric's meaning in words, for a run whose evaluations ran on
    ``selection_set`` (``val`` or ``test``)."""
    split = split_name(selection_set)
    return {name: text.format(split=split) for name, text in _DESCRIPTIONS.items()}
