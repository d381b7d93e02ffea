"""Search-space files and plans, without Ray: every class of bad input is one line naming
the file, the field and what is allowed, with exit code 2 and nothing left behind; the plan
has the right jobs and trials under stable ids; ``--set``, ``--space NAME`` and
``--dry-run`` do what the CLI promises."""

from __future__ import annotations

import math
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from sweep_helpers import (
    TINY,
    cli,
    files_under,
    local_ray_env,
    space_dict,
    write_space,
)

import skipnet_sweep
from skipnet_sweep.models import SkipResNet, build_from_config
from skipnet_sweep.models.gates import gate_heads
from skipnet_sweep.sweep import SpaceError, find_space, load_space, make_plan
from skipnet_sweep.sweep import space as space_module
from skipnet_sweep.sweep.space import SPACES_DIR

BUNDLED = sorted(p for p in SPACES_DIR.iterdir() if p.name.endswith(".yaml"))


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (the default storage and MLflow store are relative to
    it) with its own RAY_TMPDIR, so a Ray start would show as a new ``ray/`` folder."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for key, value in local_ray_env(str(tmp_path / "raytmp")).items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return work


def assert_refused(path: Path, argv: list[str], *fragments: str) -> str:
    """``main(argv)`` exits 2 with one line on stderr that names ``path`` and contains every
    fragment, and leaves nothing behind: no new file under the space's folder (storage,
    mlflow.db), no Ray session, Ray not initialised. Returns the line."""
    import ray

    folder = path.parent
    before = files_under(folder)
    code, out, err = cli(argv)
    line = err.strip()
    assert code == 2, (code, out, err)
    assert len(line.splitlines()) == 1, err
    assert line.startswith("error: ") and str(path) in line, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert files_under(folder) == before
    assert not (folder.parent / "raytmp").exists(), "a Ray session was started"
    assert not ray.is_initialized()
    return line


# Each class of bad input: the change to the tiny space, then what the line must contain
# (the field first, then what is allowed).
BAD = {
    "unknown top-level key": ({"alhpa": [1.0]}, "alhpa: unknown field", "allowed: ", "alpha"),
    "unknown nested key": ({"hrl.alhpa": 1.0}, "hrl.alhpa: unknown field", "rl_weight"),
    "integer as a string": ({"sp.iterations": "ten"}, "sp.iterations", "expected an integer"),
    "bool as an integer": ({"baseline": 3}, "baseline", "expected true or false"),
    "float for an integer": ({"sp.iterations": 6.5}, "sp.iterations", "expected an integer"),
    "negative alpha": ({"alpha": [0.5, -1.0]}, "alpha[1]", "must be >= 0"),
    "negative alpha scalar": ({"alpha": -2}, "alpha", "must be >= 0"),
    "empty alpha": ({"alpha": []}, "alpha", "empty"),
    "grid of one number": ({"alpha": {"grid": 5}}, "alpha.grid", "expected a list of numbers"),
    "unknown backbone": ({"backbones": ["resnet9000"]}, "backbones[0]", "cifar_resnet8"),
    "unknown gate": ({"gates": ["lstm"]}, "gates[0]", "allowed: ", "rnn"),
    "unknown dataset": ({"dataset.name": "mnist9"}, "dataset.name", "synthetic"),
    "unknown search algorithm": ({"search": {"algorithm": "bayes"}}, "search.algorithm", "optuna"),
    "unknown sampler": (
        {"search": {"algorithm": "optuna", "sampler": "cmaes"}},
        "search.sampler",
        "tpe",
    ),
    "missing data root": ({"dataset.root": "/nonexistent/skipnet"}, "dataset.root", "exist"),
    "distribution with grid search": (
        {"alpha": {"distribution": "uniform", "low": 0.0, "high": 1.0}},
        "alpha",
        "search.algorithm: optuna",
    ),
    "loguniform with low 0": (
        {
            "alpha": {"distribution": "loguniform", "low": 0.0, "high": 1.0},
            "search": {"algorithm": "optuna"},
        },
        "alpha.low",
        "low > 0",
    ),
    "loguniform with negative low": (
        {
            "alpha": {"distribution": "loguniform", "low": -1.0, "high": 1.0},
            "search": {"algorithm": "optuna"},
        },
        "alpha.low",
        ">= 0",
    ),
    "unknown distribution": (
        {"alpha": {"distribution": "normal", "low": 0.1, "high": 1.0}},
        "alpha.distribution",
        "loguniform",
    ),
    "low above high": (
        {
            "alpha": {"distribution": "uniform", "low": 2.0, "high": 1.0},
            "search": {"algorithm": "optuna"},
        },
        "alpha",
        "low must be below high",
    ),
    "zero SP workers": ({"resources.sp.workers": 0}, "resources.sp.workers", ">= 1"),
    "gate init of a gate not swept": (
        {"gate_out_std": {"ff1": 0.5}},
        "gate_out_std: 'ff1' is not allowed",
        "allowed: rnn",
    ),
    "gate init not a number": ({"gate_out_std": {"rnn": "small"}}, "gate_out_std.rnn", "number"),
    "gate init of zero": ({"gate_out_std": {"rnn": 0}}, "gate_out_std.rnn", "> 0"),
    "empty recipe of a backbone": (
        {"backbone_recipe": {"cifar_resnet8": {}}},
        "backbone_recipe.cifar_resnet8: expected a mapping of optimiser fields",
    ),
    "recipe of a backbone not swept": (
        {"backbone_recipe": {"cifar_resnet14": {"warmup_iterations": 4}}},
        "backbone_recipe: 'cifar_resnet14' is not allowed",
        "allowed: cifar_resnet8",
    ),
    "recipe field that is not the optimiser's": (
        {"backbone_recipe": {"cifar_resnet8": {"alpha": 1.0}}},
        "backbone_recipe.cifar_resnet8.alpha: unknown field",
        "warmup_iterations",
    ),
    "recipe field of the wrong type": (
        {"backbone_recipe": {"cifar_resnet8": {"warmup_iterations": "400"}}},
        "backbone_recipe.cifar_resnet8.warmup_iterations",
        "expected an integer",
    ),
    "recipe value the stage refuses": (
        {"backbone_recipe": {"cifar_resnet8": {"lr_schedule": "cosine"}}},
        "backbone_recipe.cifar_resnet8.lr_schedule",
        "allowed: step, one_cycle",
    ),
    "section not a mapping": ({"hrl": [1, 2]}, "hrl", "expected a mapping"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_space_is_one_line_exit_2_and_nothing_started(folder: Path, case: str) -> None:
    changes, *fragments = BAD[case]
    path = write_space(folder, changes=changes)
    with pytest.raises(SpaceError) as err:
        make_plan(load_space(str(path)))
    assert len(str(err.value).splitlines()) == 1
    assert_refused(path, ["--space", str(path), "--num-cpus", "2"], *fragments)


def test_gpu_request_without_gpus_exits_2_before_ray(folder: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the request is valid here")
    path = write_space(folder, changes={"resources.trial.gpu": 1})
    make_plan(load_space(str(path)))  # valid as a file: only this machine cannot serve it
    assert_refused(path, ["--space", str(path), "--num-cpus", "2"], "resources", "GPU")


def test_invalid_yaml(folder: Path) -> None:
    path = folder / "broken.yaml"
    path.write_text("name: broken\nalpha: [0.1, 0.2\nbackbones: [cifar_resnet8]\n")
    line = assert_refused(path, ["--space", str(path)], "not valid YAML")
    assert "line " in line


def test_top_level_not_a_mapping(folder: Path) -> None:
    path = folder / "list.yaml"
    path.write_text("- 1\n- 2\n")
    assert_refused(path, ["--space", str(path)], "mapping")


def test_missing_space_file_lists_bundled_spaces(folder: Path) -> None:
    missing = folder / "nope.yaml"
    code, out, err = cli(["--space", str(missing)])
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert str(missing) in err and "no such space file" in err
    for bundled in BUNDLED:
        assert bundled.stem in err
    if not BUNDLED:
        assert "none found" in err
    assert files_under(folder) == set()


# Range errors that only the stage configs catch, when the plan is made: still exit 2.
PLAN_TIME = {
    "sp.iterations": 0,
    "hrl.lr": -1.0,
    "hrl.eval_every": 0,
}


@pytest.mark.parametrize("field", list(PLAN_TIME))
def test_plan_time_errors_exit_2_and_leave_nothing(folder: Path, field: str) -> None:
    path = write_space(folder, changes={field: PLAN_TIME[field]})
    before = files_under(folder)
    code, _, err = cli(["--space", str(path)])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert files_under(folder) == before


@pytest.mark.parametrize("field", list(PLAN_TIME))
def test_plan_time_errors_name_the_file_and_field(folder: Path, field: str) -> None:
    path = write_space(folder, changes={field: PLAN_TIME[field]})
    _, _, err = cli(["--space", str(path)])
    assert str(path) in err and field in err, err


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_alpha_is_refused(folder: Path, value: float) -> None:
    path = write_space(folder, changes={"alpha": [0.5, value]})
    with pytest.raises(SpaceError, match=r"alpha\[1\]"):
        make_plan(load_space(str(path)))


def test_duplicate_alphas_do_not_give_duplicate_trial_ids(folder: Path) -> None:
    path = write_space(folder, changes={"alpha": [1.0, 2.0, 1.0]})
    try:
        plan = make_plan(load_space(str(path)))
    except SpaceError:
        return  # refusing duplicates is fine too
    ids = [j.id for j in plan.trials]
    assert len(ids) == len(set(ids)), ids


def test_duplicate_backbones_do_not_give_duplicate_jobs(folder: Path) -> None:
    path = write_space(folder, changes={"backbones": ["cifar_resnet8", "cifar_resnet8"]})
    try:
        plan = make_plan(load_space(str(path)))
    except SpaceError:
        return
    ids = [j.id for j in plan.shared_jobs]
    assert len(ids) == len(set(ids)), ids


def test_unknown_synthetic_key_is_refused(folder: Path) -> None:
    path = write_space(folder, changes={"dataset.synthetic.sise": 64})
    with pytest.raises(SpaceError, match=r"dataset\.synthetic\.sise"):
        make_plan(load_space(str(path)))


@pytest.mark.parametrize("field", ["max_concurrent_trials", "max_failures"])
def test_how_a_sweep_runs_does_not_change_its_id(folder: Path, field: str) -> None:
    path = write_space(folder)
    plan = make_plan(load_space(str(path)))
    assert make_plan(load_space(str(path), {field: 3})).sweep_id == plan.sweep_id


# --- the CLI -------------------------------------------------------------------------------


def test_dry_run_prints_jobs_and_trials_and_writes_nothing(folder: Path) -> None:
    import ray

    path = write_space(folder)
    plan = make_plan(load_space(str(path)))
    code, out, err = cli(["--space", str(path), "--dry-run"])
    assert code == 0, err
    assert f"sweep {plan.sweep_id}" in out
    for job in plan.shared_jobs:
        assert job.id in out
    for job in plan.trials:
        assert job.id in out
    assert "[cached]" not in out
    assert "MLflow: " in out and "mlflow.db" in out
    assert files_under(folder) == {path.name}
    assert not (folder.parent / "raytmp").exists()
    assert not ray.is_initialized()


def test_dry_run_with_defaults_writes_nothing_in_cwd(folder: Path) -> None:
    """No storage_path and no mlflow section: the defaults (./runs, ./mlflow.db) are only
    named, not created."""
    d = space_dict()
    path = folder / "defaults.yaml"
    path.write_text(yaml.safe_dump(d))
    code, out, err = cli(["--space", str(path), "--dry-run"])
    assert code == 0, err
    assert str(folder / "runs") in out and str(folder / "mlflow.db") in out
    assert files_under(folder) == {path.name}


def test_set_overrides_a_field(folder: Path) -> None:
    path = write_space(folder)
    plain = make_plan(load_space(str(path)))
    changed = make_plan(load_space(str(path), {"hrl.iterations": 7}))
    assert {changed.config_of(j).train.iterations for j in changed.trials} == {7}
    assert changed.sweep_id != plain.sweep_id
    # The CLI applies --set: its dry run prints the sweep id of the changed space.
    code, out, err = cli(["--space", str(path), "--dry-run", "--set", "hrl.iterations=7"])
    assert code == 0, err
    assert f"sweep {changed.sweep_id}" in out
    # SP does not depend on the HRL recipe: its jobs are the same.
    assert [j.key for j in changed.shared_jobs] == [j.key for j in plain.shared_jobs]


@pytest.mark.parametrize(
    ("item", "fragment"),
    [("hrl.iterations", "FIELD=VALUE"), ("hrl.alhpa=1", "hrl.alhpa"), ("sp.iterations=x", "sp")],
)
def test_bad_set_exits_2(folder: Path, item: str, fragment: str) -> None:
    path = write_space(folder)
    code, _, err = cli(["--space", str(path), "--dry-run", "--set", item])
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert files_under(folder) == {path.name}


@pytest.mark.parametrize("bundled", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_space_found_by_name_and_plans(folder: Path, bundled: Path) -> None:
    assert find_space(bundled.stem) == bundled
    assert find_space(bundled.name) == bundled
    storage, db = folder / "runs", folder / "mlflow.db"
    code, out, err = cli(
        [
            *("--space", bundled.stem, "--dry-run", "--data-root", str(folder)),
            *("--storage-path", str(storage), "--tracking-uri", f"sqlite:///{db}"),
        ]
    )
    assert code == 0, err
    assert f"from {bundled}" in out
    assert files_under(folder) == set()


def test_bundled_spaces_are_package_data(folder: Path) -> None:
    # Found through the package, never through the checkout's folders.
    assert {"quickstart", "fashion_mnist"} <= {p.stem for p in BUNDLED}
    assert Path(skipnet_sweep.__file__).parent / "search_spaces" == SPACES_DIR
    # The folder's former name still works: a path that is not a file falls back to the
    # bundled space of that name (the README used to say search_spaces/NAME.yaml).
    assert not (folder / "search_spaces").exists()
    assert find_space("search_spaces/quickstart.yaml") == SPACES_DIR / "quickstart.yaml"


def test_bundled_space_paths_are_relative_to_the_working_directory(folder: Path) -> None:
    # quickstart says storage_path: ./runs; that is the folder the command runs in, not the
    # package's folder (where an installed wheel could not write).
    space = load_space("quickstart", check_paths=False)
    assert space.storage_path == str(folder / "runs")
    assert space.source == str(SPACES_DIR / "quickstart.yaml")
    assert space.name == "quickstart"


def test_bundled_space_from_an_archive(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A package imported from a zip has no files on disk: the space is read through
    # importlib.resources and named "bundled:NAME.yaml" in the source and in errors.
    archive = folder.parent / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as z:
        zipped = {**space_dict(), "storage_path": "./runs"}
        z.writestr("pkg/spaces/zipped.yaml", yaml.safe_dump(zipped))
        z.writestr("pkg/spaces/broken.yaml", "name: a\nname: b\n")
    monkeypatch.setattr(space_module, "SPACES_DIR", zipfile.Path(archive, "pkg/spaces/"))
    assert space_module.bundled_spaces() == ["broken", "zipped"]
    space = load_space("zipped", check_paths=False)
    assert space.source == "bundled:zipped.yaml"
    assert space.storage_path == str(folder / "runs")
    with pytest.raises(SpaceError, match=r"^bundled:broken.yaml: line 2: key 'name' is given"):
        load_space("broken")


# --- the plan -------------------------------------------------------------------------------


def test_plan_counts_jobs_and_trials(folder: Path) -> None:
    path = write_space(
        folder,
        changes={
            "backbones": ["cifar_resnet8", "cifar_resnet14"],
            "gates": ["ff1", "rnn"],
            "alpha": [0.0, 0.5, 1.0],
            "hrl.variants": ["hrl+sp", "hrl+s"],
        },
    )
    plan = make_plan(load_space(str(path)))
    # Per backbone: one baseline and one SP job per gate.
    assert len(plan.shared_jobs) == 2 * (1 + 2)
    assert sorted(
        (j.config.train.phase, j.backbone, j.config.model.gate or "") for j in plan.shared_jobs
    ) == sorted(
        [(k, b, g) for b in ("cifar_resnet8", "cifar_resnet14") for k, g in [("baseline", "")]]
        + [("sp", b, g) for b in ("cifar_resnet8", "cifar_resnet14") for g in ("ff1", "rnn")]
    )
    # backbones x gates x alphas x variants.
    assert len(plan.trials) == 2 * 2 * 3 * 2
    ids = [j.id for j in plan.trials]
    assert len(set(ids)) == len(ids)
    no_baseline = make_plan(load_space(str(path), {"baseline": False}))
    assert [j.config.train.phase for j in no_baseline.shared_jobs] == ["sp"] * 4


def test_hrl_trials_start_from_their_sp_checkpoint(folder: Path) -> None:
    path = write_space(folder, changes={"hrl.variants": ["hrl+sp", "hrl+s"]})
    plan = make_plan(load_space(str(path)))
    sp = plan.find("sp", "cifar_resnet8", "rnn")
    for job in plan.trials:
        cfg = plan.config_of(job)
        assert cfg.train.alpha == job.cost_weight_value
        if job.coord("variant") == "hrl+sp":
            assert job.needs == sp.id
            assert cfg.init == str(plan.checkpoint(sp))
            assert cfg.train.iterations == TINY["hrl"]["iterations"]
        else:  # from scratch, as long as SP and HRL together
            assert cfg.init is None
            assert cfg.train.iterations == TINY["sp"]["iterations"] + TINY["hrl"]["iterations"]


def test_gate_out_std_draws_the_named_gates_of_every_skipnet_job(folder: Path) -> None:
    """``gate_out_std: {rnn: ...}`` reaches the SP job's network and its HRL trials (which load
    the SP checkpoint, so they must name the same config); ff1 keeps He, the plain ResNet and
    the halting networks have no gate to draw."""
    changes = {"gates": ["ff1", "rnn"], "gate_out_std": {"rnn": 0.2}, "hrl.variants": ["hrl+sp"]}
    plan = make_plan(load_space(str(write_space(folder, changes=changes))))
    by_gate = {}
    for job in [*plan.shared_jobs, *plan.trials]:
        model = plan.config_of(job).model
        by_gate.setdefault(model.gate, set()).add(model.gate_out_std)
    assert by_gate == {None: {None}, "ff1": {None}, "rnn": {0.2}}
    sp = plan.find("sp", "cifar_resnet8", "rnn")
    config = plan.config_of(sp).model
    torch.manual_seed(0)
    built = build_from_config(config)
    torch.manual_seed(0)
    direct = SkipResNet("basic", [1] * 3, [16, 32, 64], "cifar", 4, 1, "rnn", gate_out_std=0.2)
    torch.manual_seed(0)
    he = build_from_config(replace(config, gate_out_std=None))
    heads = [gate_heads(net.gates)[0].weight for net in (built, direct, he)]
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])
    # The init is part of what SP computes: another std is another SP job.
    other = write_space(folder, "other", changes={**changes, "gate_out_std": {"rnn": 0.3}})
    assert make_plan(load_space(str(other))).find("sp", "cifar_resnet8", "rnn").key != sp.key


def test_backbone_recipe_changes_only_that_backbones_from_scratch_jobs(folder: Path) -> None:
    """The ResNet paper's warm-up for one depth: its baseline and SP (and HRL+S, which trains
    with SP's optimiser) warm up; the other backbone and the HRL fine-tunes do not."""
    sp_steps, hrl_steps = TINY["sp"]["iterations"], TINY["hrl"]["iterations"]
    changes = {
        "backbones": ["cifar_resnet8", "cifar_resnet14"],
        "backbone_recipe": {
            "cifar_resnet14": {"warmup_iterations": 4, "warmup_lr": 0.05, "iterations": 9}
        },
        "hrl.variants": ["hrl+sp", "hrl+s"],
    }
    plan = make_plan(load_space(str(write_space(folder, changes=changes))))
    seen = {}
    for job in [*plan.shared_jobs, *plan.trials]:
        train = plan.config_of(job).train
        key = (job.coord("backbone"), train.phase, job.coord("variant"))
        seen.setdefault(key, set()).add(
            (train.warmup_iterations, train.warmup_lr, train.iterations)
        )
    for (arch, phase, variant), got in seen.items():
        deep = arch == "cifar_resnet14"
        warm = (
            (4, 0.05) if deep and (phase in ("baseline", "sp") or variant == "hrl+s") else (0, 0.01)
        )
        steps = {  # HRL+S trains as long as its backbone's SP and HRL together
            "baseline": 9 if deep else sp_steps,
            "sp": 9 if deep else sp_steps,
            "hrl+sp": hrl_steps,
            "hrl+s": (9 if deep else sp_steps) + hrl_steps,
        }[variant or phase]
        assert got == {(*warm, steps)}, (arch, phase, variant, got)
    assert ("cifar_resnet14", "hrl", "hrl+sp") in seen


def test_ids_are_deterministic(folder: Path) -> None:
    path = write_space(folder)
    a, b = make_plan(load_space(str(path))), make_plan(load_space(str(path)))
    assert a.sweep_id == b.sweep_id and a.sweep_id.startswith("tiny-")
    assert [j.id for j in a.trials] == [j.id for j in b.trials]
    assert [j.id for j in a.shared_jobs] == [j.id for j in b.shared_jobs]
    # The same content in another file (another name, same fields) is the same sweep.
    copy = folder / "copy.yaml"
    copy.write_text(path.read_text())
    assert make_plan(load_space(str(copy))).sweep_id == a.sweep_id


def test_changing_alpha_is_a_new_sweep_that_reuses_the_shared_jobs(folder: Path) -> None:
    one = make_plan(load_space(str(write_space(folder, "one"))))
    other = make_plan(
        load_space(str(write_space(folder, "one_more", changes={"alpha": [0.0, 3.0]})))
    )
    changed = make_plan(load_space(str(folder / "one.yaml"), {"alpha": [0.0, 3.0]}))
    assert changed.sweep_id != one.sweep_id
    # Trial ids carry the sweep id: alpha 0 of the new sweep is a new trial.
    assert changed.trials[0].id != one.trials[0].id
    # SP does not depend on alpha: same cache keys, same checkpoint paths (reuse across
    # sweeps sharing a storage path).
    for plan in (other, changed):
        assert [j.key for j in plan.shared_jobs] == [j.key for j in one.shared_jobs]
        assert [j.id for j in plan.shared_jobs] == [j.id for j in one.shared_jobs]
        assert [plan.checkpoint(j, "/s") for j in plan.shared_jobs] == [
            one.checkpoint(j, "/s") for j in one.shared_jobs
        ]
    # ... but a change to the SP recipe is a new SP job.
    sp_changed = make_plan(load_space(str(folder / "one.yaml"), {"sp.iterations": 7}))
    assert {j.key for j in sp_changed.shared_jobs}.isdisjoint({j.key for j in one.shared_jobs})


# --- one schema: the sections are the stage configs' fields --------------------------------


def test_sections_are_the_stage_configs_fields() -> None:
    from dataclasses import fields

    from skipnet_sweep.methods import halting
    from skipnet_sweep.stages.config import HRL, OPTIM, SP, DataConfig, TrainConfig, group_fields

    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    optim = list(group_fields(OPTIM))
    assert names(space_module.OptimSpec) == optim
    assert names(space_module.SPSpec) == [*optim, *group_fields(SP), "from_baseline"]
    assert names(space_module.HRLSpec) == [*optim, *group_fields(HRL), "variants"]
    assert sorted(names(space_module.HaltingSpec)) == sorted([*halting.RECIPE_FIELDS, "tau"])
    data = names(DataConfig)
    assert names(space_module.DatasetSpec) == ["name" if n == "dataset" else n for n in data]
    # Defaults are the stage's, but for the recipe fields each method chooses (None) and the
    # halting recipe's learning rate.
    train = {f.name: f for f in fields(TrainConfig)}
    for f in fields(space_module.HRLSpec):
        if f.name in ("lr", "lr_milestones"):
            assert f.default is None
        elif f.name in train:
            assert f.default == train[f.name].default, f.name
    halting_spec = {f.name: f.default for f in fields(space_module.HaltingSpec)}
    assert halting_spec["lr"] == halting.LR
    assert halting_spec["batch_size"] == train["batch_size"].default
    assert space_module.DatasetSpec().to_data_config() == DataConfig()


SECTION_ERRORS = {
    # field -> value, the line's fragment: TrainConfig's own check, named section.field.
    "hrl.rl_reduction": ("avg", "hrl.rl_reduction: 'avg' is not allowed; allowed: sum, mean"),
    "sp.precision": ("fp8", "sp.precision: 'fp8' is not allowed; allowed: auto, fast, fp32"),
    "sp.gate_sharpen": (2.0, "sp.gate_sharpen: unknown field"),
    "hrl.gamma": (1.5, "hrl.gamma: must be in [0, 1], got 1.5"),
    "baseline_recipe": (
        {"iterations": 3, "momentum": -1.0},
        "baseline_recipe.momentum: must be >= 0, got -1.0",
    ),
    "baselines": (
        {"act": {"tau": [0.1], "iterations": 3, "lr": -2.0}},
        "baselines.act.lr: must be >= 0, got -2.0",
    ),
    "dataset.val_split": (1.5, "dataset.val_split: must be None, a fraction in (0, 1)"),
}


@pytest.mark.parametrize("field", list(SECTION_ERRORS))
def test_sections_are_checked_by_the_stage_configs_at_load(folder: Path, field: str) -> None:
    value, fragment = SECTION_ERRORS[field]
    path = write_space(folder, changes={field: value})
    with pytest.raises(SpaceError) as err:
        load_space(str(path))  # at load, before any plan
    line = str(err.value)
    assert line.startswith(f"{path}: ") and fragment in line and "\n" not in line, line


def test_a_changed_default_left_out_is_named_before_the_sweep_starts(folder: Path) -> None:
    """A space written before ``hrl.rl_reduction`` became ``sum`` and that leaves it out
    trains differently now: the dry run says so in one line, with how to pin either."""
    d = space_dict()
    d["hrl"].pop("rl_reduction", None)
    path = folder / "old.yaml"
    path.write_text(yaml.safe_dump(d))
    code, out, err = cli(["--space", str(path), "--dry-run"])
    assert code == 0, err
    notes = [line for line in out.splitlines() if "hrl.rl_reduction" in line]
    assert len(notes) == 1
    assert "'sum'" in notes[0] and "'mean'" in notes[0] and "hrl.rl_reduction: mean" in notes[0]
    # Named in the space (either value), nothing is said; the sweep id is the same as
    # leaving the default out, since the notice is not part of what the sweep computes.
    d["hrl"]["rl_reduction"] = "sum"
    path.write_text(yaml.safe_dump(d))
    code, out, err = cli(["--space", str(path), "--dry-run"])
    assert code == 0, err
    assert "rl_reduction" not in out
    pinned = load_space(str(path))
    assert pinned.notices == ()
    d["hrl"].pop("rl_reduction")
    path.write_text(yaml.safe_dump(d))
    assert load_space(str(path)).identity() == pinned.identity()


@pytest.mark.parametrize("name", space_module.bundled_spaces())
def test_bundled_spaces_name_every_changed_default(name: str) -> None:
    assert load_space(name, check_paths=False).notices == ()
