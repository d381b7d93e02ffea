"""The package carries its data: a wheel built from the project holds the bundled spaces and
the baseline CSVs, and an installed wheel, with no source checkout anywhere on the path,
runs the default space (``python -m skipnet_sweep.run --dry-run``) and loads the baselines.

The wheel is installed with ``pip install --target`` into a folder put first on
``PYTHONPATH``, from a working directory outside the repository and with ``-P`` (the
working directory is not on ``sys.path``). The main venv's site-packages still supply torch,
ray and mlflow; its editable install of skipnet_sweep is a meta-path finder that runs after
``PYTHONPATH``, and every run checks that ``skipnet_sweep`` came from the wheel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import skipnet_sweep
from skipnet_sweep.reporting.baselines import default_baselines_dir, load_baselines

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(skipnet_sweep.__file__).parent

if importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None:
    pytest.skip("building a wheel needs pip and setuptools in this venv", allow_module_level=True)

# Runs in the installed package: says where everything came from, then runs
# ``python -m skipnet_sweep.run --dry-run`` in the same interpreter (runpy is what -m uses),
# which saves a second import of torch.
PROBE = """
import json, runpy, sys
import skipnet_sweep
from skipnet_sweep.reporting.baselines import default_baselines_dir, load_baselines
from skipnet_sweep.sweep.space import SPACES_DIR, bundled_spaces
df = load_baselines(default_baselines_dir())
sact = df[(df.method == "sact") & (df.dataset == "imagenet")].iloc[0]
print(json.dumps({
    "package": skipnet_sweep.__file__,
    "spaces": str(SPACES_DIR),
    "bundled": bundled_spaces(),
    "baselines": str(default_baselines_dir()),
    "rows": len(df),
    "sact": [sact.backbone, sact.macs, sact.top1, sact.top5],
}))
sys.argv = ["skipnet_sweep.run", "--dry-run"]
runpy.run_module("skipnet_sweep.run", run_name="__main__", alter_sys=True)
"""


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{args}: {proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the project (the build writes build/ and *.egg-info
    where it runs, which must not be the checkout)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "skipnet_sweep", src / "skipnet_sweep",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    out = work / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "--disable-pip-version-check", "-q", "-w", str(out), str(src)])  # fmt: skip
    (built,) = out.glob("skipnet_sweep-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed by pip into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", "-q", "--target", str(target), str(wheel)])  # fmt: skip
    return target


def _probe(pythonpath: Path, cwd: Path) -> tuple[dict, str]:
    """Run PROBE with only ``pythonpath`` in front of the venv; returns its JSON line and
    the dry run's output."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONSAFEPATH": "1"}
    proc = _run([sys.executable, "-P", "-c", PROBE], cwd=cwd, env=env)
    first, dry_run = proc.stdout.split("\n", 1)
    return json.loads(first), dry_run


def _expected_data() -> set[str]:
    return {
        *(
            f"skipnet_sweep/search_spaces/{p.name}"
            for p in (PACKAGE / "search_spaces").glob("*.yaml")
        ),
        *(
            f"skipnet_sweep/reporting/baselines/{p.name}"
            for p in (PACKAGE / "reporting" / "baselines").glob("*.csv")
        ),
    }


def test_wheel_holds_every_space_and_baseline(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _expected_data()
    assert "skipnet_sweep/search_spaces/quickstart.yaml" in expected
    assert "skipnet_sweep/reporting/baselines/sact.csv" in expected
    assert expected <= names, sorted(expected - names)


def _check(info: dict, dry_run: str, where: str, spaces: str, cwd: Path) -> None:
    assert info["package"].startswith(where), info["package"]  # not the checkout
    assert info["spaces"].startswith(where) and info["baselines"].startswith(where)
    assert "quickstart" in info["bundled"]
    # The same rows as the checkout's CSVs, and a known one: SACT on ImageNet (its paper
    # counts 2 FLOPs per multiply-add, halved in the CSV).
    assert info["rows"] == len(load_baselines(default_baselines_dir()))
    assert info["sact"] == ["preact_resnet101", 1.1100941e10 / 2, 75.61, 92.75]
    # The default space, read from the installed package; its ./runs is the working folder.
    lines = dry_run.splitlines()
    # what its precision means on this CPU first (precision: fast), then the sweep
    assert lines[0].startswith("precision fast: "), lines[0]
    assert lines[1].startswith("sweep quickstart-") and lines[1].endswith(f" from {spaces}")
    assert f"  storage: {cwd / 'runs'}" in lines
    assert list(cwd.iterdir()) == []  # a dry run writes nothing


def test_installed_wheel_runs_the_default_space_and_loads_baselines(
    site: Path, tmp_path: Path
) -> None:
    info, dry_run = _probe(site, tmp_path)
    spaces = f"{site / 'skipnet_sweep' / 'search_spaces' / 'quickstart.yaml'}"
    _check(info, dry_run, str(site), spaces, tmp_path)


def test_wheel_imported_as_a_zip_reads_its_data(wheel: Path, tmp_path: Path) -> None:
    # Imported straight from the wheel (zipimport), the data are not files on disk:
    # importlib.resources reads them, and the space is named by its bundled name.
    info, dry_run = _probe(wheel, tmp_path)
    _check(info, dry_run, str(wheel), "bundled:quickstart.yaml", tmp_path)
