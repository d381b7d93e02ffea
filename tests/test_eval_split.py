"""run_stage with a validation split: training never sees the held-out images, every
evaluation during training is on them, the test set is evaluated once at the end, its
per-sample files are the artifacts, and every run is timed against the plain ResNet."""

from __future__ import annotations

import csv

import pytest

from skipnet_sweep import metrics as M
from skipnet_sweep.data import make_loaders
from skipnet_sweep.flops import count_costs
from skipnet_sweep.models import ModelConfig
from skipnet_sweep.runner import run_stage, summary_line
from skipnet_sweep.stages import DataConfig, StageConfig, TrainConfig, evaluate, load_model
from skipnet_sweep.stages.checkpoint import load_checkpoint
from skipnet_sweep.stages.config import LatencyConfig

SYN = {"size": 96, "channels": 1, "image_size": 8, "classes": 4}
FAST_LATENCY = LatencyConfig(batch_sizes=(1, 4), warmup=0, repeats=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread):
    yield


def config(val_split=None, latency=FAST_LATENCY, **train) -> StageConfig:
    data = DataConfig(dataset="synthetic", synthetic=SYN, val_split=val_split)
    kw = {"phase": "sp", "iterations": 6, "eval_every": 2, "batch_size": 16, "lr": 0.05, **train}
    return StageConfig(
        ModelConfig("cifar_resnet8", "ff2"), data, TrainConfig(**kw), latency=latency
    )


class Recording:
    """A training loader that records every image it hands to the loop."""

    def __init__(self, loader):
        self.loader, self.seen = loader, set()

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            self.seen.update(row.numpy().tobytes() for row in x)
            yield x, y


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """One SP run with 24 of the 96 training images held out: (result, reports, seen
    training images, checkpoint, artifacts folder)."""
    tmp = tmp_path_factory.mktemp("split")
    reports, recorders = [], []

    def prepare(model, loader):
        recorders.append(Recording(loader))
        return model, recorders[0]

    result = run_stage(
        config(val_split=0.25),
        tmp / "sp.pt",
        on_report=lambda step, metrics, save: reports.append((step, metrics)),
        prepare=prepare,
        progress=False,
        artifacts=tmp / "eval",
    )
    return result, reports, recorders[0].seen, tmp / "sp.pt", tmp / "eval"


def images_of(loader) -> set[bytes]:
    return {row.numpy().tobytes() for x, _ in loader for row in x}


def test_training_never_sees_the_validation_images(split_run):
    _, _, seen, _, _ = split_run
    loaders = make_loaders(
        "synthetic", batch_size=16, val_split=0.25, **config().data.loader_kwargs()
    )
    val = images_of(loaders.val)
    kept = {loaders.train.dataset[i][0].numpy().tobytes() for i in range(72)}
    assert len(val) == 24 and len(kept) == 72
    # 6 steps of 16 from 72 images, 4 full batches per epoch: 64 to 72 distinct images.
    assert seen <= kept and len(seen) >= 64
    assert not seen & val


def test_selection_metrics_at_every_evaluation_and_test_metrics_once(split_run):
    result, reports, _, _, _ = split_run
    assert [step for step, _ in reports] == [2, 4, 6]
    for _, metrics in reports:
        assert set(M.EVAL_METRICS) <= metrics.keys()
        assert not any(k.startswith(M.TEST_PREFIX) for k in metrics)
        assert not any(M.is_latency(k) for k in metrics)
    assert [h[M.TOP1] for h in result.history] == [m[M.TOP1] for _, m in reports]
    assert set(M.TEST_EVAL_METRICS) <= result.metrics.keys()
    assert M.final_test(M.gate_skip_ratio(0)) in result.metrics
    assert result.selection_set == M.SELECTION_VAL == config(0.25).data.selection_set


def test_selection_metrics_are_on_validation_and_test_metrics_on_test(split_run):
    result, _, _, path, _ = split_run
    model, _ = load_model(path)
    loaders = make_loaders(
        "synthetic", batch_size=16, val_split=0.25, **config().data.loader_kwargs()
    )
    costs = count_costs(model, (1, 8, 8))
    on_val = evaluate(model, loaders.val, costs).metrics
    on_test = evaluate(model, loaders.test, costs).metrics
    for k in M.EVAL_METRICS:
        assert result.metrics[k] == pytest.approx(on_val[k]), k
        assert result.metrics[M.final_test(k)] == pytest.approx(on_test[k]), k
    assert len(result.evaluation.labels) == len(loaders.test.dataset) == 24


def test_artifacts_are_from_the_test_evaluation(split_run):
    result, _, _, _, artifacts = split_run
    with (artifacts / M.PER_SAMPLE_CSV).open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["label"]) for r in rows] == result.evaluation.labels.tolist()
    test_set = make_loaders("synthetic", batch_size=16, **config().data.loader_kwargs()).test
    assert [int(r["label"]) for r in rows] == [int(test_set.dataset[i][1]) for i in range(24)]


def test_every_run_is_timed_against_the_plain_resnet(split_run):
    result, _, _, path, _ = split_run
    sizes = FAST_LATENCY.batch_sizes
    for b in sizes:
        ms, plain = result.metrics[M.latency_ms(b)], result.metrics[M.latency_plain_ms(b)]
        assert ms > 0 and plain > 0
        spread = [result.metrics[f(b)] for f in (M.speedup_q1, M.speedup, M.speedup_q3)]
        assert 0 < spread[0] <= spread[1] <= spread[2]  # the median round and its quartiles
    assert M.latency_ms(64) not in result.metrics  # only the configured batch sizes
    assert load_checkpoint(path)["metrics"][M.latency_ms(1)] > 0


def test_without_a_split_the_test_set_selects_and_is_evaluated_once(tmp_path):
    reports = []
    result = run_stage(
        config(latency=LatencyConfig(batch_sizes=())),
        on_report=lambda step, metrics, save: reports.append(metrics),
        progress=False,
    )
    assert result.selection_set == M.SELECTION_TEST
    assert len(reports) == 3 and not any(k.startswith(M.TEST_PREFIX) for k in reports[-1])
    for k in M.EVAL_METRICS:  # the final selection evaluation is the test evaluation
        assert result.metrics[M.final_test(k)] == result.metrics[k] == reports[-1][k]
    assert not any(M.is_latency(k) for k in result.metrics)  # () disables timing


def test_stage_config_round_trips_the_new_fields():
    cfg = config(val_split=10, latency=LatencyConfig(batch_sizes=(2,), warmup=1, repeats=3))
    back = StageConfig.from_dict(cfg.to_dict())
    assert back == cfg and back.key() == cfg.key()
    assert cfg.key() != config(val_split=11).key()
    old = cfg.to_dict()
    del old["latency"], old["data"]["val_split"]  # a config saved before these fields
    restored = StageConfig.from_dict(old)
    assert restored.latency == LatencyConfig() and restored.data.val_split is None


def test_summary_line_names_the_sets_and_the_speedup(split_run):
    result, _, _, _, _ = split_run
    line = summary_line(config(val_split=0.25), result.metrics)
    assert f"val top-1 {result.metrics[M.TOP1]:.2f}% | test top-1" in line
    assert f"test top-1 {result.metrics[M.TEST_TOP1]:.2f}% | val top-5" in line
    m = result.metrics
    speed = f"{m[M.speedup(4)]:.2f}x ({m[M.speedup_q1(4)]:.2f}-{m[M.speedup_q3(4)]:.2f}"
    assert f"at batch 1, {speed}" in line
    assert f"at batch 4 (median and interquartile range of {FAST_LATENCY.repeats} rounds)" in line


def test_with_a_progress_bar_each_step_after_training_is_announced(capsys, tmp_path):
    """The train CLI's silence after its bar (minutes of evaluation and timing on a large
    test set): a line on stderr before each evaluation, the test set and the timing."""
    run_stage(config(val_split=0.25, iterations=2), progress=True, artifacts=tmp_path / "e")
    err = capsys.readouterr().err
    said = [line.strip() for line in err.replace("\r", "\n").splitlines() if "|" not in line]
    said = [line for line in said if line]
    assert said == [
        "step 2/2: evaluating on the validation split (24 images)",
        "evaluating on the test set (24 images)",
        "timing latency beside the plain ResNet: batch 1, 4; 0 warm-up and 2 timed rounds each",
        f"writing the test set's per-sample files to {tmp_path / 'e'}",
    ]
    run_stage(config(val_split=0.25, iterations=2), progress=False)
    assert capsys.readouterr().err == ""
