"""A frontier run's registered model loads from the registry without unpickling anything:
the driver logs it as MLflow's "model from code" with a weights-only checkpoint, and loading
rebuilds the network with the project's own builder. It predicts what the network deployed
(thresholded gates, the sparse path) predicts."""

from __future__ import annotations

import pickle

import cloudpickle
import mlflow
import numpy as np
import pytest
import torch
from sweep_helpers import migrated_store, tracking_uri, write_space

from skipnet_sweep import metrics as M
from skipnet_sweep.models.deploy import Deployed
from skipnet_sweep.stages.checkpoint import make_payload, save_checkpoint
from skipnet_sweep.sweep import load_space, make_plan
from skipnet_sweep.sweep.driver import (
    SweepResult,
    log_frontier_models,
    registered_model_name,
    tracker_for,
)


def _no_unpickling(*args, **kwargs):
    raise AssertionError("a registered model was unpickled")


def _forbid_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, any unpickling fails: MLflow's own guard (it allows pickled models by
    default), pickle's and cloudpickle's loaders, and a ``torch.load`` not weights-only."""
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    for module in (pickle, cloudpickle):
        for name in ("load", "loads", "Unpickler"):
            monkeypatch.setattr(module, name, _no_unpickling, raising=False)
    real_load = torch.load

    def weights_only_load(*args, **kwargs):
        if kwargs.get("weights_only") is not True:
            _no_unpickling()
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", weights_only_load)


def test_registered_frontier_model_loads_without_unpickling(tmp_path, monkeypatch, make_model):
    migrated_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri(tmp_path))
    plan = make_plan(load_space(str(write_space(tmp_path))))
    net = make_model("cifar_resnet8", "rnn", num_classes=4, in_channels=1).eval()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    trained = save_checkpoint(
        tmp_path / "trial.pt",
        make_payload(net, {"stage": "hrl"}, input_shape=(1, 12, 12), optimizer=optimizer),
    )
    tracker = tracker_for(plan)
    run_id, _ = tracker.get_or_create(
        M.TAG_TRIAL_ID, "hrl-1", "hrl-1", tags={M.TAG_CHECKPOINT: str(trained)}
    )
    tracker.finish(run_id)
    row = {
        "run_id": run_id, "run_name": "hrl-1+a0.5", "method": "skipnet-rnn",
        "backbone": "cifar_resnet8", "weight": "alpha=0.5", M.TOP1: 50.004,
        M.TEST_TOP1: 48.5, M.FLOPS_MEAN: 1_234_567.8, M.FLOPS_PLAIN: 2_469_135.6,
    }  # fmt: skip
    log_frontier_models(tracker, plan, SweepResult(run_id, frontier=[row]))
    version = tracker.client.get_run(run_id).data.tags[M.TAG_MODEL_VERSION]
    assert tracker.status(run_id) == "FINISHED"  # logging a model leaves the run as it was
    # The version says which point it is (the tiny space has no validation split: its
    # top-1 is the test set's), rounded, and its alias is its run's name.
    name = registered_model_name(plan)
    labelled = tracker.client.get_model_version(name, version)
    assert labelled.description == (
        "skipnet-rnn cifar_resnet8 alpha=0.5: test top-1 50.00 %, 1.23 M MACs (50.0 % of the "
        "plain ResNet's); run hrl-1+a0.5"
    )
    assert labelled.tags == {
        "method": "skipnet-rnn", "backbone": "cifar_resnet8", "cost_weight": "alpha=0.5",
        "test_top1": "50.00", "macs": "1.23 M", "run_id": run_id,
    }  # fmt: skip
    assert str(tracker.client.get_model_version_by_alias(name, "hrl-1_a0_5").version) == version
    assert "one version per run on the MACs frontier" in (
        tracker.client.get_registered_model(name).description
    )

    _forbid_unpickling(monkeypatch)
    mlflow.set_tracking_uri(tracking_uri(tmp_path))
    model = mlflow.pyfunc.load_model(f"models:/{registered_model_name(plan)}/{version}")
    images = torch.randn(5, 1, 12, 12)
    with torch.no_grad():
        expected = Deployed(net)(images).numpy()
    np.testing.assert_allclose(model.predict(images.numpy()), expected, rtol=1e-5, atol=1e-6)
    deployed = model.unwrap_python_model().network
    assert isinstance(deployed, Deployed) and deployed.net.config == net.config
    # The guard above was live: pickle refuses, and torch.load is the weights-only wrapper.
    with pytest.raises(AssertionError, match="unpickled"):
        pickle.loads(b"N.")
    assert torch.load.__name__ == "weights_only_load"
