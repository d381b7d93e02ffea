"""``run --dry-run`` as a plan for a cluster: the totals (GPU-hours, GPUs and CPUs at once,
wall time) from the bundled throughput table, and what this machine lacks (the dataset's
files, GPUs, CPUs), on small spaces and empty data folders."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from sweep_helpers import cli, write_space

from skipnet_sweep.data import DatasetNotFoundError, build_datasets
from skipnet_sweep.sweep import estimate, load_space, make_plan
from skipnet_sweep.sweep.estimate import JobCost, Throughput, load_throughput, schedule
from skipnet_sweep.sweep.readiness import LAYOUTS, data_problems

HAS_GPU = torch.cuda.is_available()


def cost(job_id: str, seconds: float, gpus: float, needs: str | None = None) -> JobCost:
    return JobCost(SimpleNamespace(id=job_id, needs=needs), 1.0, gpus, seconds)


def test_schedule_replays_the_plan_order_on_the_cluster() -> None:
    # Two shared jobs of 4 GPUs, then two trials of 1 GPU after each.
    jobs = [cost("a", 10, 4), cost("b", 20, 4)]
    jobs += [cost(f"{p}{i}", 5, 1, needs=p) for p in "ab" for i in range(2)]
    wide = schedule(jobs)
    assert (wide.seconds, wide.peak_gpus) == (25, 8)  # b's trials end at 20 + 5
    # On 4 GPUs the shared jobs take turns; a's trials run beside nothing else.
    narrow = schedule(jobs, gpus=4)
    assert (narrow.seconds, narrow.peak_gpus) == (35, 4)
    # At most one job at a time: every job in turn.
    assert schedule(jobs, max_concurrent=1).seconds == 10 + 20 + 4 * 5
    # A job larger than the cluster never starts, nor what starts from it.
    assert set(schedule(jobs, gpus=3).unplaced) == {"a", "b", "a0", "a1", "b0", "b1"}


def test_every_throughput_row_says_what_it_is_and_where_it_comes_from() -> None:
    table = load_throughput()
    assert table[("resnet50", "A100")].basis == "published"
    for row in table.values():
        assert row.images_per_s > 0
        assert row.basis in ("published", "measured", "estimate")
        assert row.source
    # Every backbone of the bundled GPU spaces has a figure.
    for name in ("imagenet_alpha", "cifar10_alpha", "cifar100_alpha", "svhn_alpha"):
        for arch in load_space(name, check_paths=False).backbones:
            assert (arch, "A100") in table, (name, arch)


def test_dry_run_prints_the_totals_of_a_small_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = write_space(
        tmp_path,
        changes={
            "resources": {"sp": {"workers": 2, "cpu": 3, "gpu": 1}, "trial": {"cpu": 2, "gpu": 1}},
            "max_concurrent_trials": 2,
        },
    )
    rate = 0.01  # images/s per GPU: hours of work for a few hundred images
    table = {("cifar_resnet8", "A100"): Throughput("cifar_resnet8", "A100", rate, "measured", "t")}
    monkeypatch.setattr(estimate, "load_throughput", lambda: table)
    plan = make_plan(load_space(str(space), check_paths=False))
    work = {j.id: plan.work(j) for j in plan.jobs}
    # GPU-hours: every job's work over the rate (a shared job's 2 GPUs go twice as fast).
    gpu_hours = sum(work.values()) / rate / 3600
    code, out, _ = cli(["--space", str(space), "--dry-run"])
    assert code == 0
    assert f"  GPU-hours: {gpu_hours:,.0f} (" in out
    # Both shared jobs at once (2 x 2 GPUs): the most it uses, and 2 x 3 x 2 CPUs.
    assert "cluster: 4 A100 GPUs (the most this plan uses at once)" in out
    assert "at most 4 GPUs and 12 CPUs at once" in out
    base, sp = plan.shared_jobs
    hrl = [work[j.id] / rate for j in plan.trials]  # each on 1 GPU, two at once
    after_sp = work[sp.id] / rate / 2
    assert max(hrl) == min(hrl)  # four equal trials: two waves after SP
    assert work[base.id] <= work[sp.id]
    wall = after_sp + 2 * hrl[0]
    assert f"  wall time: {estimate.format_duration(wall)}" in out
    assert "t0 images/s" not in out and "(measured: t)" in out
    # On 2 GPUs a shared job fits, but not both at once.
    code, out, _ = cli(["--space", str(space), "--dry-run", "--cluster-gpus", "2"])
    assert code == 0 and "cluster: 2 A100 GPUs (--cluster-gpus)" in out
    two = (work[base.id] + work[sp.id]) / rate / 2 + 2 * hrl[0]
    assert f"  wall time: {estimate.format_duration(two)}" in out


def test_cluster_gpus_only_with_dry_run(tmp_path: Path) -> None:
    space = write_space(tmp_path)
    code, _, err = cli(["--space", str(space), "--cluster-gpus", "4"])
    assert code == 2 and "--cluster-gpus" in err


@pytest.mark.parametrize("name", ["imagenet_alpha", "cifar10_alpha", "svhn_alpha"])
def test_dry_run_on_an_empty_data_root_says_what_is_not_ready(tmp_path: Path, name: str) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    code, out, _ = cli(
        ["--space", name, "--dry-run", "--data-root", str(empty)]
        + [
            "--storage-path",
            str(tmp_path / "runs"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
        RAY_ADDRESS=None,
    )
    assert code == 0  # a plan, not a run
    not_ready = out.split("not ready to run on this machine")[1]
    dataset = load_space(name, check_paths=False).dataset.name
    assert f"dataset {dataset}: data missing: " in not_ready
    if not HAS_GPU:
        assert "resources: no GPU on this machine; the largest job asks for" in not_ready
    assert "GPU-hours: " in out and "wall time: " in out


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layouts_are_where_the_loaders_look(tmp_path: Path, name: str) -> None:
    """An empty folder: the dry-run and the loader both say the data is missing. The layout
    made of empty files: the dry-run is content, and the loader finds the files (and fails
    only on what they hold)."""
    assert data_problems(name, str(tmp_path))
    with pytest.raises(DatasetNotFoundError):
        build_datasets(name, tmp_path)
    folders, names, _ = LAYOUTS[name]
    folder = tmp_path / folders[0]
    for n in names:
        if n.endswith("/"):
            (folder / n / "class_a").mkdir(parents=True)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / n).write_bytes(b"")
    assert data_problems(name, str(tmp_path)) == []
    with pytest.raises(Exception) as info:
        build_datasets(name, tmp_path)
    assert not isinstance(info.value, DatasetNotFoundError), info.value
