"""The verified cache of shared pre-training results: reused only when it is the job's own,
otherwise reported in one line, moved aside and trained again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sweep_helpers import write_space

from skipnet_sweep.models import build_from_config
from skipnet_sweep.stages.checkpoint import make_payload, save_checkpoint
from skipnet_sweep.sweep import cache, load_space, make_plan


@pytest.fixture
def plan(tmp_path: Path):
    return make_plan(load_space(str(write_space(tmp_path))))


def _finished(job, folder: Path) -> Path:
    """What a finished shared job leaves for the cache: its final checkpoint."""
    torch.manual_seed(0)
    model = build_from_config(job.config.model)
    save_checkpoint(folder / "model.pt", make_payload(model, job.config.to_dict(), step=6))
    return folder


def test_a_published_entry_is_reused(plan, tmp_path: Path) -> None:
    job = plan.shared_jobs[0]
    entry = plan.checkpoint(job)
    cache.publish(_finished(job, tmp_path / "done"), "model.pt", entry, job, plan.store)
    payload, why = cache.verify(entry, job, plan.store)
    assert why is None and payload["step"] == 6
    assert payload[cache.RECORD]["key"] == job.key


def test_a_truncated_entry_is_refused_in_one_line(plan, tmp_path: Path) -> None:
    job = plan.shared_jobs[0]
    entry = plan.checkpoint(job)
    cache.publish(_finished(job, tmp_path / "done"), "model.pt", entry, job, plan.store)
    entry.write_bytes(entry.read_bytes()[:100])
    payload, why = cache.verify(entry, job, plan.store)
    assert payload is None and "unreadable" in why and "\n" not in why


def test_another_jobs_valid_entry_is_refused(plan, tmp_path: Path) -> None:
    base, sp = plan.shared_jobs
    cache.publish(
        _finished(base, tmp_path / "b"), "model.pt", plan.checkpoint(base), base, plan.store
    )
    # A valid checkpoint of the baseline placed under the SP job's key.
    plan.checkpoint(sp).parent.mkdir(parents=True)
    plan.checkpoint(sp).write_bytes(plan.checkpoint(base).read_bytes())
    payload, why = cache.verify(plan.checkpoint(sp), sp, plan.store)
    assert payload is None and f"made for key {base.key}, not {sp.key}" in why


def test_altered_weights_are_refused(plan, tmp_path: Path) -> None:
    job = plan.shared_jobs[0]
    entry = plan.checkpoint(job)
    payload = cache.publish(_finished(job, tmp_path / "done"), "model.pt", entry, job, plan.store)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] + 1
    save_checkpoint(entry, payload)
    assert "do not match their sha256" in cache.verify(entry, job, plan.store)[1]


def test_an_entry_without_a_record_is_refused(plan, tmp_path: Path) -> None:
    job = plan.shared_jobs[0]
    _finished(job, plan.checkpoint(job).parent)
    assert "no cache record" in cache.verify(plan.checkpoint(job), job, plan.store)[1]


def test_a_refused_entry_is_moved_aside_not_deleted(plan, tmp_path: Path) -> None:
    job = plan.shared_jobs[0]
    entry = plan.checkpoint(job)
    cache.publish(_finished(job, tmp_path / "done"), "model.pt", entry, job, plan.store)
    aside = cache.set_aside(entry, plan.store)
    assert not entry.exists() and (aside / "model.pt").is_file()
    assert aside.parent == entry.parent.parent and ".rejected-" in aside.name


@pytest.mark.parametrize(
    ("producer", "cached"),
    [("trial_1", 0), ("trial_0", 1), (None, 1)],
    ids=["own", "another-trial", "no-producer"],
)
def test_a_retried_shared_trial_does_not_call_its_own_entry_cached(
    plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, producer, cached
) -> None:
    """A shared trial killed after publishing its weights but before its final report is
    retried and finds the entry it published: its own work, not a reuse, so not tagged
    cached. An entry another trial, an earlier sweep or an older version published is."""
    from types import SimpleNamespace

    from ray import tune

    from skipnet_sweep.sweep import report_keys, trials

    job = plan.shared_jobs[0]
    done = _finished(job, tmp_path / "done")
    cache.publish(done, "model.pt", plan.checkpoint(job), job, plan.store, producer)
    reports = []
    monkeypatch.setattr(tune, "report", lambda metrics, **_: reports.append(metrics))
    trial = SimpleNamespace(get_trial_id=lambda: "trial_1")
    monkeypatch.setattr(tune, "get_context", lambda: trial)
    trials._run_shared(job, plan)
    assert len(reports) == 1
    assert reports[0][report_keys.STEP] == 6 and reports[0]["final"] == 1
    assert reports[0][report_keys.CACHED] == cached
