"""Ids and cache keys survive a config field added or renamed later (``skipnet_sweep.identity``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sweep_helpers import write_space

from skipnet_sweep.identity import HASH_WHEN_SET, hashed_as, hashed_dict
from skipnet_sweep.models import ModelConfig
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
