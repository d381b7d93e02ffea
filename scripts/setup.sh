#!/usr/bin/env bash
# Installs everything skipnet_sweep needs on a fresh machine: the embedded dataset
# (Debian's dataset-fashion-mnist), a virtual environment in .venv and the package with
# its development extras. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q dataset-fashion-mnist \
    || { $SUDO apt-get update -q && $SUDO apt-get install -y -q dataset-fashion-mnist; }
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch resolves from the machine's local wheels (CPU build) under its pip constraints.
# pip compiles every installed file to bytecode on one core (about 2 of its 4m21s here);
# compileall does the same on every core (64 s on 2). Not compiling at all is slower:
# every process of the test suite and of Ray then compiles what it imports (measured: the
# suite's workers took 2m40s to collect). Left out: packages nothing here imports (pip and
# setuptools themselves, and scikit-learn and networkx, which MLflow and torch install but
# import only for features this project does not use); Python compiles a file on its first
# import anyway. compileall exits 1 for the few Python 2 files some packages ship, which
# nothing imports.
.venv/bin/python -m pip install -q --no-compile --disable-pip-version-check -e ".[dev]" 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/python -m compileall -q -j 0 -x '/site-packages/(pip|setuptools|sklearn|networkx)/' \
  "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
  > /dev/null 2>&1 || true
.venv/bin/python -c "import skipnet_sweep, torch, ray, mlflow" \
  || { echo "setup: the installation is incomplete" >&2; exit 1; }
