"""Ids and cache keys survive a config field added or renamed later
(``skipnet_sweep.identity``), and what older code saved (configs in checkpoints and cache
records, jobs pickled in a sweep's Tune state) still loads."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sweep_helpers import write_space

from skipnet_sweep.identity import HASH_WHEN_SET, hashed_as, hashed_dict
from skipnet_sweep.methods import Job, get_method, load_trained, make_job
from skipnet_sweep.models import ModelConfig, build_from_config
from skipnet_sweep.stages import CheckpointError, DataConfig, StageConfig, TrainConfig
from skipnet_sweep.stages.checkpoint import make_payload, save_checkpoint
from skipnet_sweep.stages.config import saved_phase
from skipnet_sweep.sweep import load_space, make_plan


@dataclass(frozen=True)
class Inner:
    depth: int = 20
    new_knob: float | None = field(default=None, metadata=HASH_WHEN_SET)


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    extras: dict = field(default_factory=dict, metadata=HASH_WHEN_SET)
    tags: tuple = ()


def test_marked_fields_enter_only_when_set_and_the_others_always() -> None:
    assert hashed_dict(Outer("a")) == {"name": "a", "inner": {"depth": 20}, "tags": ()}
    set_ = Outer("a", Inner(20, 0.5), {"x": 1}, (Inner(),))
    assert hashed_dict(set_) == {
        "name": "a",
        "inner": {"depth": 20, "new_knob": 0.5},
        "extras": {"x": 1},
        "tags": ({"depth": 20},),
    }


def test_a_space_that_writes_the_new_fields_empty_is_the_same_sweep(tmp_path: Path) -> None:
    """gate_out_std and backbone_recipe came after ids were handed out: at their defaults
    they leave the sweep id and every job key as they were."""
    plain = make_plan(load_space(str(write_space(tmp_path))))
    empty = write_space(tmp_path, "tiny", {"gate_out_std": {}, "backbone_recipe": {}})
    same = make_plan(load_space(str(empty)))
    assert same.sweep_id == plain.sweep_id
    assert [j.id for j in same.jobs] == [j.id for j in plain.jobs]
    drawn = write_space(tmp_path, "tiny", {"gate_out_std": {"rnn": 0.447}})
    other = make_plan(load_space(str(drawn)))
    assert other.sweep_id != plain.sweep_id
    assert (
        other.find("sp", "cifar_resnet8", "rnn").key != plain.find("sp", "cifar_resnet8", "rnn").key
    )


@pytest.mark.parametrize("std", [None, 0.447])
def test_model_config_hashes_its_gate_init_only_when_set(std: float | None) -> None:
    d = hashed_dict(ModelConfig("cifar_resnet8", "rnn", gate_out_std=std))
    assert ("gate_out_std" in d) == (std is not None)
    assert ModelConfig("cifar_resnet8", "rnn", gate_out_std=std).to_dict()["gate_out_std"] == std


@dataclass(frozen=True)
class Renamed:
    new_name: int = field(default=1, metadata=hashed_as("old_name"))
    kept: int = 2


def test_a_renamed_field_is_hashed_under_its_first_name() -> None:
    assert hashed_dict(Renamed(3)) == {"old_name": 3, "kept": 2}


# A config and jobs of it whose key and ids were computed by the code from before
# ``TrainConfig.stage`` was renamed ``phase`` and ``Job.stage`` renamed ``config``.
HRL = StageConfig(
    ModelConfig("cifar_resnet8", "rnn", 10, 1),
    DataConfig("synthetic"),
    TrainConfig(phase="hrl", iterations=5, alpha=0.3),
    init="sp.pt",
)


def _jobs(cfg: StageConfig) -> tuple[Job, Job]:
    trial = make_job(
        "skipnet",
        cfg,
        [("backbone", "cifar_resnet8"), ("gate", "rnn"), ("alpha", 0.3)],
        curve="skipnet-rnn",
        cost_weight="alpha",
        sweep_id="s-1",
    )
    shared = make_job("skipnet", cfg, [("backbone", "cifar_resnet8")], curve="x", shared=True)
    return trial, shared


def test_the_phase_is_hashed_as_stage_so_keys_and_ids_are_those_handed_out_before() -> None:
    train = hashed_dict(HRL)["train"]
    assert train["stage"] == "hrl" and "phase" not in train
    assert HRL.key() == "b7390815064a0a71"
    trial, shared = _jobs(HRL)
    assert (trial.id, shared.id) == (
        "hrl-cifar_resnet8-rnn-alpha0.3-2f077a",
        "hrl-cifar_resnet8-b7390815",
    )


def test_a_config_saved_with_train_stage_loads_as_the_same_config() -> None:
    old = HRL.to_dict()
    old["train"] = {"stage": old["train"].pop("phase"), **old["train"]}
    assert "phase" not in old["train"]
    assert StageConfig.from_dict(old) == HRL
    assert StageConfig.from_dict(HRL.to_dict()) == HRL
    assert saved_phase(old) == saved_phase(HRL.to_dict()) == "hrl"
    assert saved_phase({}) is None


@pytest.mark.parametrize("name", ["stage", "phase"])
def test_a_checkpoint_is_rebuilt_by_the_method_of_its_saved_phase(
    name: str, tmp_path, monkeypatch
) -> None:
    """``load_trained`` (``train eval``, model logging) finds the method from the saved
    config, under the key older checkpoints have (``stage``) and the current one."""
    net = build_from_config(ModelConfig("cifar_resnet8", "act", 4, 1))
    path = save_checkpoint(tmp_path / "act.pt", make_payload(net, {"train": {name: "act"}}))
    act, used = get_method("act"), []
    load = act.load_network
    monkeypatch.setattr(act, "load_network", lambda p: used.append(act.name) or load(p))
    model, _ = load_trained(path)
    assert used == ["act"] and model.config.gate == "act"
    unknown = save_checkpoint(tmp_path / "x.pt", make_payload(net, {"train": {name: "nope"}}))
    with pytest.raises(CheckpointError, match="unknown phase 'nope'"):
        load_trained(unknown)


def _as_pickled_before_the_rename(job: Job) -> Job:
    """``job`` with the attributes the classes had before the rename (``Job.stage``,
    ``TrainConfig.stage``): pickled, it is byte for byte what the old classes wrote, as the
    state a frozen dataclass pickles is its ``__dict__``."""
    train = object.__new__(TrainConfig)
    train.__dict__.update({"stage": job.config.train.phase})
    train.__dict__.update({k: v for k, v in vars(job.config.train).items() if k != "phase"})
    cfg = object.__new__(StageConfig)
    cfg.__dict__.update({**vars(job.config), "train": train})
    old = object.__new__(Job)
    old.__dict__.update({("stage" if k == "config" else k): v for k, v in vars(job).items()})
    old.__dict__["stage"] = cfg
    return old


def test_jobs_pickled_before_the_rename_unpickle_as_the_same_jobs() -> None:
    """A sweep's saved Tune state (tuner.pkl, the trainable's parameters) holds its plan's
    jobs: a sweep started before the rename resumes with the jobs it planned."""
    for job in _jobs(HRL):
        old = _as_pickled_before_the_rename(job)
        assert "stage" in vars(old) and "stage" in vars(old.__dict__["stage"].train)
        back = pickle.loads(pickle.dumps(old))
        assert back == job and back.key == job.key and back.config.train.phase == "hrl"
        assert "stage" not in vars(back) and "stage" not in vars(back.config.train)
        assert pickle.loads(pickle.dumps(job)) == job
