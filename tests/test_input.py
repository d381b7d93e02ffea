"""Malformed input to ``python -m skipnet_sweep.run``, in-process and without Ray: each case
exits 2 with exactly one line of at most 300 characters on stderr, no traceback, nothing
written and Ray never started. Then the command-line traps one by one: YAML 1.2 floats,
a dry run without the data, a sweep id that does not depend on the working directory,
flags that do not apply to the space, and the help that lists the bundled spaces."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml
from sweep_helpers import files_under, local_ray_env, space_dict

from skipnet_sweep import yamlio
from skipnet_sweep.run import main
from skipnet_sweep.sweep import load_space, make_plan
from skipnet_sweep.sweep.space import bundled_spaces, path_problems
from skipnet_sweep.yamlio import YamlError, read_yaml_file, read_yaml_value

# "Billion laughs": nine levels of nine aliases, 9**9 = 387 million strings once expanded
# (gigabytes as Python objects, far more as an error message).
LAUGHS = 'lol: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"l{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
# The same in one flow line, for --set.
LAUGHS_FLOW = (
    "[&a [1,1,1,1,1,1,1,1,1], "
    + ", ".join(
        f"&{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "]"
)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with its own RAY_TMPDIR (a Ray start would show as a
    new ``raytmp/``) and no MLflow URI from the environment."""
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


def run(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in this process; (exit code, stdout, stderr), usage errors included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def write(folder: Path, text: str | bytes, name: str = "space.yaml") -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def tiny_yaml(changes: dict | None = None, **extra: object) -> str:
    """The tiny synthetic space as YAML, with dotted ``changes`` applied; storage and MLflow
    are left at their defaults (``./runs``, ``./mlflow.db``) so that any write shows."""
    d = space_dict("tiny", changes)
    d.update(extra)
    return yaml.safe_dump(d, sort_keys=False)


def tiny_with(line: str) -> str:
    """The tiny space with one more line of raw YAML at the top level."""
    return tiny_yaml() + line + "\n"


# Each case: (a function of the folder that writes what is needed and returns argv,
# fragments the line must contain).
def space_file(text: str | bytes | None = None, *flags: str, changes: dict | None = None):
    def make(folder: Path) -> list[str]:
        body = text if text is not None else tiny_yaml(changes)
        return ["--space", str(write(folder, body)), *flags]

    return make


def named(name: str):
    return space_file(tiny_yaml().replace("name: tiny", f"name: {json.dumps(name)}", 1))


NOT_UTF8 = b"name: tiny\nalpha: [0.1]\n# caf\xe9\n"
BIG_STRING = "x" * 500_000
BIG_LIST = "[" + ", ".join(["1"] * 200_000) + "]"

CASES: dict[str, tuple] = {
    # --- the file as text
    "not UTF-8": (space_file(NOT_UTF8), "not UTF-8", f"byte {NOT_UTF8.index(0xE9)}"),
    "billion laughs": (space_file(LAUGHS), "values once aliases are expanded"),
    "alias to itself": (space_file(tiny_with("extra: &x [1, *x]")), "refers to itself"),
    "nested 10000 deep": (space_file(tiny_with("alpha: " + "[" * 10_000 + "]" * 10_000)), "nested"),
    "duplicate top-level key": (
        space_file(tiny_with("alpha: [0.5]")),
        "key 'alpha' is given twice",
    ),
    "duplicate key in a flow mapping": (
        space_file(tiny_with("scheduler: {type: asha, type: asha}")),
        "key 'type' is given twice",
    ),
    "larger than a megabyte": (space_file(tiny_with("#" + "x" * (1 << 20))), "larger than"),
    "unclosed bracket": (space_file("name: tiny\nalpha: [0.1, 0.2\n"), "line 3", "not valid YAML"),
    "tab indentation": (space_file("name: tiny\nsp:\n\titerations: 3\n"), "not valid YAML"),
    "top level a list": (space_file("- 1\n- 2\n"), "expected a mapping"),
    "empty file": (space_file(""), "expected a mapping"),
    "integer key": (space_file(tiny_with("1: one")), "1: unknown field"),
    "huge string value": (
        space_file(tiny_with(f"seed: {BIG_STRING}")),
        "seed: expected an integer",
    ),
    "huge list value": (space_file(tiny_with(f"max_failures: {BIG_LIST}")), "more than 10000"),
    "long list value": (
        space_file(tiny_with(f"max_failures: {BIG_LIST[:3000]}1]")),
        "max_failures",
    ),
    "huge key": (space_file(tiny_with(f"{BIG_STRING}: 1")), "not valid YAML"),
    # --- numbers
    "scalar alpha .nan": (space_file(changes={"alpha": float("nan")}), "alpha: expected a finite"),
    "scalar alpha .inf": (space_file(changes={"alpha": float("inf")}), "alpha: expected a finite"),
    "alpha list .inf": (space_file(changes={"alpha": [0.1, float("inf")]}), "alpha[1]"),
    "tau scalar .nan": (
        space_file(changes={"baselines": {"act": {"tau": float("nan"), "iterations": 2}}}),
        "baselines.act.tau: expected a finite",
    ),
    "sp.iterations 1e12": (
        space_file(changes={"sp.iterations": 10**12}),
        "sp.iterations",
        "<= 10000000",
    ),
    "hrl.epochs 1e9": (
        space_file(changes={"hrl.epochs": 1e9, "hrl.iterations": None}),
        "hrl.epochs",
        "<= 10000",
    ),
    "batch larger than the data": (
        space_file(changes={"sp.batch_size": 4096}),
        "sp.batch_size",
        "256",
    ),
    "eval_every 0": (space_file(changes={"hrl.eval_every": 0}), "hrl.eval_every", ">= 1"),
    "train_subset 0": (space_file(changes={"dataset.train_subset": 0}), "dataset.train_subset"),
    "test_subset above the test set": (
        space_file(changes={"dataset.test_subset": 65}),
        "dataset.test_subset",
        "(0, 64]",
    ),
    "train_subset above Fashion-MNIST": (
        space_file(changes={"dataset": {"name": "fashion_mnist", "train_subset": 70_000}}),
        "dataset.train_subset",
        "60000",
    ),
    "synthetic with one class": (space_file(changes={"dataset.synthetic.classes": 1}), "classes"),
    "negative seed": (space_file(changes={"seed": -1}), "seed", ">= 0"),
    "num_samples on a grid": (
        space_file(changes={"search": {"num_samples": 4}}),
        "search.num_samples",
    ),
    "workers 10**6": (space_file(changes={"resources.sp.workers": 10**6}), "resources.sp.workers"),
    # --- pre-flight: what the driver checks before Ray starts
    "tracking server that does not answer": (
        space_file(changes={"mlflow.tracking_uri": "http://127.0.0.1:9"}),
        "mlflow.tracking_uri: http://127.0.0.1:9 does not answer",
    ),
    "trial cpu above this machine": (
        space_file(changes={"resources.trial.cpu": 512}),
        "resources.trial.cpu: asks for 512 CPUs but this machine has",
    ),
    "sp workers above this machine": (
        space_file(changes={"resources.sp.workers": 300}),
        "resources.sp (workers x cpu): asks for 300 CPUs",
    ),
    "a GPU on a machine without one": (
        space_file(changes={"resources.trial.gpu": 1}),
        "resources.trial.gpu: asks for 1 GPUs but this machine has 0",
    ),
    # --- inputs that used to reach Ray (issue 24): refused before it starts
    "val_split above the training set": (
        space_file(changes={"dataset.val_split": 100_000}),
        "dataset.val_split: holds out 100000 of the 256 training images",
        "allowed: a count from 1 to 255",
    ),
    "val_split equal to train_subset": (
        space_file(changes={"dataset.train_subset": 100, "dataset.val_split": 100}),
        "dataset.val_split: holds out 100 of the 100 training images",
    ),
    "val_split fraction that holds out everything": (
        space_file(changes={"dataset.val_split": 0.999}),
        "dataset.val_split: holds out 256 of the 256",
    ),
    "val_split of all of Fashion-MNIST": (
        space_file(changes={"dataset": {"name": "fashion_mnist", "val_split": 60_000}}),
        "dataset.val_split: holds out 60000 of the 60000",
    ),
    "val_split that leaves less than a batch": (
        space_file(changes={"dataset.val_split": 240}),
        "sp.batch_size: 32 is more than the 16 training images",
    ),
    "trial cpu 0": (
        space_file(changes={"resources.trial.cpu": 0}),
        "resources.trial: cpu 0 and gpu 0 reserve nothing",
        "allowed: cpu > 0 or gpu > 0",
    ),
    "sp cpu 0": (space_file(changes={"resources.sp.cpu": 0}), "resources.sp: cpu 0 and gpu 0"),
    "hrl.lr 0": (space_file(changes={"hrl.lr": 0}), "hrl.lr: 0 never changes the weights"),
    "--set sp.lr=0.0": (space_file(None, "--set", "sp.lr=0.0"), "sp.lr: 0 never", "allowed: > 0"),
    "act lr 0": (
        space_file(changes={"baselines": {"act": {"tau": [0.01], "iterations": 2, "lr": 0}}}),
        "baselines.act.lr: 0 never changes the weights",
    ),
    "--num-cpus 0": (
        space_file(None, "--num-cpus", "0"),
        "--num-cpus: 0 is fewer than the 1 that one job of this space asks for",
        "allowed: 1 or more",
    ),
    "--num-cpus below a worker group": (
        space_file(None, "--num-cpus", "1", changes={"resources.sp": {"workers": 2, "cpu": 1}}),
        "--num-cpus: 1 is fewer than the 2",
    ),
    "--data-root a file": (
        lambda folder: space_file(
            tiny_yaml({"dataset": {"name": "fashion_mnist"}}),
            "--data-root",
            str(write(folder, "", "afile")),
        )(folder),
        "dataset.root: ",
        "afile is a file, not a folder",
    ),
    "--data-root empty": (
        space_file(tiny_yaml({"dataset": {"name": "fashion_mnist"}}), "--data-root", ""),
        "dataset.root: '' is empty",
    ),
    "--storage-path empty": (space_file(None, "--storage-path", ""), "storage_path: '' is empty"),
    "--tracking-uri ftp": (
        space_file(None, "--tracking-uri", "ftp://example.com/mlflow"),
        "mlflow.tracking_uri: ftp://example.com/mlflow: scheme ftp:// is not a tracking store",
        "allowed: http, https, databricks, postgresql",
    ),
    "--tracking-uri a file store": (
        space_file(None, "--tracking-uri", "mlruns"),
        "mlflow.tracking_uri: mlruns: a path without a scheme is not",
    ),
    "--tracking-uri empty": (
        space_file(None, "--tracking-uri", ""),
        "mlflow.tracking_uri: '' is empty",
    ),
    "--address that nothing answers": (
        space_file(None, "--address", "127.0.0.1:1"),
        "--address 127.0.0.1:1: nothing answers at 127.0.0.1:1",
    ),
    # --- names
    "name with a quote": (named("ti'ny"), "name: ", "allowed: 1 to 100"),
    "name with a backtick": (named("ti`ny"), "name: ", "allowed: "),
    "name with a slash": (named("a/b"), "name: ", "allowed: "),
    "name of 101 characters": (named("n" * 101), "name: ", "allowed: "),
    "experiment with a quote": (
        space_file(changes={"mlflow": {"experiment": "it's"}}),
        "mlflow.experiment",
        "allowed:",
    ),
    # --- paths
    "storage under a file": (
        lambda folder: space_file(None, "--storage-path", str(write(folder, "", "afile") / "runs"))(
            folder
        ),
        "storage_path",
        "afile is a file (to create runs in)",
    ),
    "storage with a NUL byte": (space_file(None, "--set", 'storage_path="a\\0b"'), "storage_path"),
    "no such space file": (
        lambda folder: ["--space", str(folder / "nope.yaml")],
        "no such space file",
    ),
    # --- --set values
    "--set unclosed": (space_file(None, "--set", "alpha=[0.1"), "--set alpha", "not valid YAML"),
    "--set duplicate key": (
        space_file(None, "--set", "sp={iterations: 3, iterations: 4}"),
        "twice",
    ),
    "--set .nan": (space_file(None, "--set", "alpha=.nan"), "alpha: expected a finite"),
    "--set billion laughs": (
        space_file(None, "--set", "alpha=" + LAUGHS_FLOW),
        "values once aliases are expanded",
    ),
    "--set huge value": (space_file(None, "--set", "name=" + BIG_STRING), "name: "),
    "--set without =": (space_file(None, "--set", "hrl.iterations"), "FIELD=VALUE"),
    "--set twice": (
        space_file(None, "--set", "seed=1", "--set", "seed=2"),
        "--set seed: given twice",
    ),
    "--set into a list": (space_file(None, "--set", "alpha.low=1"), "alpha is not a mapping"),
    # --- flags
    "--num-samples on a grid": (
        space_file(None, "--num-samples", "5"),
        "--num-samples does not apply",
    ),
    "--num-samples 1 on a grid": (
        space_file(None, "--num-samples", "1"),
        "--num-samples does not apply",
    ),
    "--data-root on synthetic": (
        space_file(None, "--data-root", "."),
        "--data-root does not apply",
    ),
    "--storage-path and --set": (
        space_file(None, "--storage-path", "a", "--set", "storage_path=b"),
        "set the same field",
    ),
    "--num-cpus with --address": (
        space_file(None, "--num-cpus", "2", "--address", "auto"),
        "--num-cpus",
    ),
    "--experiment with a space": (space_file(None, "--experiment", "my run"), "mlflow.experiment"),
    "--max-concurrent-trials 0": (
        space_file(None, "--max-concurrent-trials", "0"),
        "max_concurrent_trials",
    ),
    "--num-samples not a number": (space_file(None, "--num-samples", "many"), "invalid int value"),
    "unknown flag": (space_file(None, "--alpha", "1"), "unrecognized arguments"),
}


def _missing_root(folder: Path) -> list[str]:
    text = tiny_yaml({"dataset": {"name": "fashion_mnist", "root": str(folder / "nodata")}})
    return ["--space", str(write(folder, text))]


CASES["missing data root"] = (_missing_root, "dataset.root", "does not exist")


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_is_one_short_line_exit_2_nothing_written(folder: Path, case: str) -> None:
    import ray

    make, *fragments = CASES[case]
    argv = make(folder)
    before = files_under(folder)
    start = time.perf_counter()
    code, out, err = run(argv)
    elapsed = time.perf_counter() - start
    assert code == 2, (code, out[-500:], err[-500:])
    assert err.endswith("\n") and err.count("\n") == 1, err[:1000]
    line = err.rstrip("\n")
    assert line.startswith("error: "), line
    assert len(line) <= 300, len(line)
    assert "Traceback" not in err + out
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert files_under(folder) == before
    assert not (folder.parent / "raytmp").exists()
    assert not ray.is_initialized()
    assert elapsed < 20, f"{case} took {elapsed:.1f} s"  # fails fast, never hangs


def test_billion_laughs_fails_fast_before_anything_is_built(folder: Path) -> None:
    path = write(folder, LAUGHS)
    assert len(path.read_bytes()) < 1000
    start = time.perf_counter()
    with pytest.raises(YamlError, match="values once aliases are expanded"):
        read_yaml_file(path)
    # A bound that a loaded machine meets (it takes milliseconds) and an expansion does not
    # (hundreds of MB for this file).
    assert time.perf_counter() - start < 5


# --- yamlio --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-3", 1e-3), ("1E5", 1e5), ("-2e-4", -2e-4), ("+3e2", 300.0), ("1.5e-3", 1.5e-3),
     ("1", 1), ("1_000", 1000), ("0.5", 0.5), ("1e", "1e"), ("nan", "nan"), ("e5", "e5")],
)  # fmt: skip
def test_yaml_12_floats(text: str, value: object) -> None:
    got = read_yaml_value(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", [".nan", ".NaN", ".inf", "-.inf", "+.Inf"])
def test_nan_and_inf_stay_floats_for_the_schema_to_refuse(text: str) -> None:
    assert isinstance(read_yaml_value(text), float)


def test_merge_keys_may_be_overridden_but_not_repeated() -> None:
    assert read_yaml_value("{base: &b {x: 1, y: 2}, c: {<<: *b, x: 3}}")["c"] == {"x": 3, "y": 2}
    with pytest.raises(YamlError, match="key 'x' is given twice"):
        read_yaml_value("{base: &b {x: 1}, c: {<<: *b, x: 3, x: 4}}")


def test_aliases_within_the_bound_are_read() -> None:
    doc = read_yaml_value("{a: &t [0.1, 0.2], b: *t}")
    assert doc == {"a": [0.1, 0.2], "b": [0.1, 0.2]}


def test_error_lines_are_capped_and_values_elided() -> None:
    assert len(yamlio.show(list(range(10**6)))) < 60
    assert len(yamlio.show("x" * 10**6)) < 60
    line = yamlio.one_line("a\nb " + "c" * 10_000)
    assert "\n" not in line and len(line) <= yamlio.MAX_LINE and line.startswith("a b ")


# --- the command-line traps ------------------------------------------------------------------


def test_exponent_floats_in_the_file_and_in_set_are_the_same_number(folder: Path) -> None:
    plain = write(folder, tiny_yaml(), "plain.yaml")
    written = write(folder, tiny_yaml().replace("rl_weight: 1.0", "rl_weight: 1.0\n  lr: 1e-3"))
    from_file = make_plan(load_space(str(written)))
    hrl = [j for j in from_file.trials if j.method == "skipnet"]
    assert {from_file.config_of(j).train.lr for j in hrl} == {0.001}
    code, out, err = run(["--space", str(plain), "--dry-run", "--set", "hrl.lr=1e-3"])
    assert code == 0, err
    assert f"sweep {from_file.sweep_id} " in out  # the same space, the same sweep
    assert files_under(folder) == {"plain.yaml", "space.yaml"}


def test_dry_run_without_the_data_says_what_is_missing(folder: Path) -> None:
    missing = folder / "nodata"
    path = write(folder, tiny_yaml({"dataset": {"name": "fashion_mnist", "root": str(missing)}}))
    code, out, err = run(["--space", str(path), "--dry-run"])
    assert code == 0, err
    assert "not ready to run on this machine (1):" in out
    assert f"dataset.root: {missing} does not exist" in out
    assert files_under(folder) == {path.name}
    code, _, err = run(["--space", str(path)])  # the run itself is refused
    assert code == 2 and f"dataset.root: {missing} does not exist" in err


@pytest.mark.parametrize("name", ["imagenet_alpha", "cifar10_alpha"])
def test_dry_run_of_a_bundled_gpu_space_summarises_then_lists(folder: Path, name: str) -> None:
    space = load_space(name, check_paths=False)
    if os.path.exists(space.dataset.root):
        pytest.skip(f"{space.dataset.root} exists on this machine")
    code, out, err = run(["--space", name, "--dry-run", "--storage-path", str(folder / "runs")])
    assert code == 0, err
    assert out.index("summary of sweep") < out.index("sweep " + name) < out.index("not ready")
    assert re.search(r"SkipNet trials: \d+ = \d+ (backbone x \d+ gate|\(backbone, gate\)) x", out)
    assert re.search(r"compute: [\d,]+ optimiser steps .*; [\d,]+ images \(steps x batch\)", out)
    assert f"dataset.root: {space.dataset.root} does not exist" in out
    assert files_under(folder) == set()


def test_summary_counts_trials_per_axis_and_compute(folder: Path) -> None:
    changes = {"gates": ["ff1", "rnn"], "alpha": [0.0, 0.5, 1.0, 2.0], "hrl.variants": ["hrl+sp", "rl"],
               "baselines": {"act": {"tau": [0.01, 0.1], "iterations": 3, "batch_size": 16}}}  # fmt: skip
    path = write(folder, tiny_yaml(changes))
    plan = make_plan(load_space(str(path)))
    code, out, err = run(["--space", str(path), "--dry-run"])
    assert code == 0, err
    assert "SkipNet trials: 16 = 1 backbone x 2 gate x 2 variant x 4 alpha" in out
    assert "ACT trials: 2 = 1 backbone x 2 tau" in out
    assert "shared pre-training: 3 = 1 baseline + 2 sp" in out
    # SP and baseline 6 steps of 32; HRL+SP 4 steps, RL 6 + 4; ACT 3 steps of 16.
    sp, hrl, act = 3 * 6, 8 * 4 + 8 * 10, 2 * 3
    images = sp * 32 + hrl * 32 + act * 16
    assert f"compute: {sp + hrl + act:,} optimiser steps" in out
    assert f"{images:,} images (steps x batch)" in out
    assert len(plan.trials) == 18


def test_sweep_id_does_not_depend_on_the_working_directory(tmp_path: Path) -> None:
    text = tiny_yaml(storage_path="runs", backbone_weights={"cifar_resnet8": "w/resnet8.pt"})
    text = text.replace("name: synthetic", "name: synthetic\n  root: data")
    ids, storages = [], []
    for where in ("a", "b/c"):
        cwd = tmp_path / where
        (cwd / "data").mkdir(parents=True)
        (cwd / "w").mkdir()
        (cwd / "w" / "resnet8.pt").write_bytes(b"weights")
        path = write(cwd, text)
        with contextlib.chdir(cwd):
            space = load_space(str(path))
            code, out, err = run(["--space", "space.yaml", "--dry-run"])
        assert code == 0, err
        assert space.storage_path == str(cwd / "runs")  # resolved for running
        assert space.dataset.root == str(cwd / "data")
        ids.append(make_plan(space).sweep_id)
        storages.append(space.storage_path)
        assert f"sweep {ids[-1]} " in out
    assert ids[0] == ids[1] and storages[0] != storages[1]
    # What is computed still changes it.
    with contextlib.chdir(tmp_path / "a"):
        other = make_plan(load_space("space.yaml", {"backbone_weights.cifar_resnet8": "w/x.pt"},
                                     check_paths=False))  # fmt: skip
    assert other.sweep_id != ids[0]


def test_num_samples_applies_to_the_optuna_search(folder: Path) -> None:
    changes = {"alpha": {"distribution": "loguniform", "low": 0.1, "high": 1.0},
               "search": {"algorithm": "optuna", "num_samples": 2}}  # fmt: skip
    path = write(folder, tiny_yaml(changes))
    code, out, err = run(["--space", str(path), "--dry-run", "--num-samples", "5"])
    assert code == 0, err
    assert "SkipNet trials: 5 optuna samples" in out
    # Where the study will be, and the command that opens it.
    plan = make_plan(load_space(str(path), {"search.num_samples": 5}, check_paths=False))
    assert "\n".join(f"    {line}" for line in plan.optuna_lines()) in out
    assert f"optuna-dashboard {plan.optuna_storage} --port 8080" in out
    grid = write(folder, tiny_yaml(), "grid.yaml")
    code, _, err = run(["--space", str(grid), "--dry-run", "--num-samples", "5"])
    assert code == 2 and "--num-samples does not apply" in err


def test_unwritable_storage_is_refused_without_creating_it(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = folder / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode)
    )
    target = locked / "a" / "b"
    path = write(folder, tiny_yaml())
    code, _, err = run(["--space", str(path), "--storage-path", str(target)])
    assert code == 2
    assert f"storage_path: {locked} is not writable by this user (to create a/b)" in err
    assert not (locked / "a").exists()


def test_read_only_working_folder_with_the_default_store_is_refused(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode)
    )
    storage = tmp_path / "elsewhere"
    path = write(folder, tiny_yaml())
    code, _, err = run(["--space", str(path), "--storage-path", str(storage)])
    assert code == 2
    assert (
        f"the default MLflow store: {folder} is not writable by this user (for mlflow.db and "
        "mlartifacts/); choose another with --tracking-uri"
    ) in err
    assert files_under(folder) == {path.name} and not storage.exists()


def test_tracking_uri_from_the_environment_is_checked_and_named(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://example.com/mlflow")
    path = write(folder, tiny_yaml())
    code, _, err = run(["--space", str(path)])
    assert code == 2 and "$MLFLOW_TRACKING_URI: ftp://example.com/mlflow: scheme ftp://" in err
    assert files_under(folder) == {path.name}


def test_storage_uri_is_left_as_written(folder: Path) -> None:
    path = write(folder, tiny_yaml())
    space = load_space(str(path), {"storage_path": "s3://bucket/runs"})
    assert space.storage_path == "s3://bucket/runs"
    assert path_problems(space) == []


def test_run_help_lists_the_bundled_spaces() -> None:
    code, out, _ = run(["--help"])
    assert code == 0
    names = bundled_spaces()
    assert "quickstart" in names
    line = next(line for line in out.splitlines() if line.startswith("bundled spaces"))
    assert line.split(": ", 1)[1].split(", ") == names
