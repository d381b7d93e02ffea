"""Sweeps whose trials diverge (NaN loss, exploding weights: the trial fails, not the
sweep) and an Optuna multi-objective search, on a local Ray instance. Both start from an SP
cache trained in-process (``sp_cache``, conftest.py), so they run beside tests/test_sweep.py
on another xdist worker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sweep_helpers import (
    Sweep,
    by_stage,
    run_sweep,
    seed_sp_cache,
    tune_result_rows,
    write_space,
)

from skipnet_sweep import metrics as M

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


# --- diverging trials -------------------------------------------------------------------


@pytest.fixture(scope="module")
def diverge(sp_cache: Path, tmp_path_factory, ray_dir) -> Sweep:
    """Three trials: alpha 0 trains normally; alpha 1e39 overflows float32, so the very first
    HRL loss is NaN (a NonFiniteLossError before any weight changes: deterministic); alpha
    1e30 gives a finite first loss whose update blows the weights up, so the gate
    probabilities of the next forward pass are NaN."""
    folder = tmp_path_factory.mktemp("diverge")
    space = write_space(
        folder,
        "diverge",
        # max_failures 0: Tune would retry the RuntimeError of alpha 1e30 (see the xfail).
        {"baseline": False, "alpha": [0.0, 1.0e30, 1.0e39], "max_failures": 0},
    )
    seed_sp_cache(sp_cache, folder / "runs", space)
    return run_sweep(space, ray_dir)


def hrl_by_alpha(sweep: Sweep) -> dict[float, object]:
    parent = sweep.mlflow.parent()
    hrl = by_stage(sweep.mlflow.children(parent.info.run_id))["hrl"]
    return {float(r.data.params[M.PARAM_ALPHA]): r for r in hrl}


def test_nan_loss_fails_the_trial_not_the_sweep(diverge: Sweep) -> None:
    assert diverge.code == 1, diverge.out[-3000:] + diverge.err[-3000:]
    parent = diverge.mlflow.parent()
    assert parent.info.status == "FAILED"
    stages = by_stage(diverge.mlflow.children(parent.info.run_id))
    assert stages["sp"][0].info.status == "FINISHED"
    runs = hrl_by_alpha(diverge)
    assert sorted(runs) == [0.0, 1e30, 1e39]
    good, nan = runs[0.0], runs[1e39]
    assert good.info.status == "FINISHED" and M.TAG_ERROR not in good.data.tags
    assert good.data.tags[M.TAG_PARETO] in ("true", "false")
    summary = diverge.out.split(f"sweep {diverge.plan.sweep_id}:")[1]
    assert "2 runs finished" in diverge.out and "2 failed:" in summary
    for r in (runs[1e30], nan):
        tags = r.data.tags
        assert r.info.status == "FAILED"
        assert tags[M.TAG_ERROR]
        assert M.TAG_PARETO not in tags  # only finished runs are ranked
        assert f"{tags[M.TAG_TRIAL_ID]}: " in summary
    assert "loss became nan at step 1" in nan.data.tags[M.TAG_ERROR]
    assert f"{nan.data.tags[M.TAG_TRIAL_ID]}: {nan.data.tags[M.TAG_ERROR]}" in summary
    # Stopped with its reason, not retried: one result row (the error report).
    assert tune_result_rows(diverge.storage)[nan.data.tags[M.TAG_TRIAL_ID]] == 1


def test_diverging_weights_fail_as_a_non_finite_loss(diverge: Sweep) -> None:
    error = hrl_by_alpha(diverge)[1e30].data.tags[M.TAG_ERROR]
    assert "loss became" in error, error


# --- adaptive search --------------------------------------------------------------------


def test_optuna_search_samples_alpha_in_its_range_and_tracks_every_sample(
    sp_cache: Path, tmp_path_factory, ray_dir
) -> None:
    """Multi-objective Optuna through Tune: num_samples trials, alpha drawn log-uniformly in
    [low, high], each a child run with its alpha, on the frontier computation like the rest."""
    folder = tmp_path_factory.mktemp("optuna")
    space = write_space(
        folder,
        "optuna",
        {
            "baseline": False,
            "alpha": {"distribution": "loguniform", "low": 0.01, "high": 4.0},
            "search": {"algorithm": "optuna", "sampler": "tpe", "num_samples": 3},
        },
    )
    seed_sp_cache(sp_cache, folder / "runs", space)
    sweep = run_sweep(space, ray_dir)
    assert sweep.code == 0, sweep.out[-3000:] + sweep.err[-3000:]
    parent = sweep.mlflow.parent()
    hrl = by_stage(sweep.mlflow.children(parent.info.run_id))["hrl"]
    alphas = [float(r.data.params[M.PARAM_ALPHA]) for r in hrl]
    assert len(hrl) == 3 and len(set(alphas)) == 3
    assert all(0.01 <= a <= 4.0 for a in alphas)
    assert all(r.info.status == "FINISHED" and M.TOP1 in r.data.metrics for r in hrl)
    assert all(r.data.tags.get(M.TAG_PARETO) in ("true", "false") for r in hrl)
    # The end of the run says where the study is and how to open it.
    assert "\n".join(sweep.plan.optuna_lines()) in sweep.out
