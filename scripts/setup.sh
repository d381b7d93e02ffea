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
# --no-compile: Python compiles each module the first time it is imported instead of pip
# compiling every file of torch, Ray and MLflow up front (measured on 2 cores: 2m20s of
# install plus 18 s for the first import, against 4m21s).
.venv/bin/python -m pip install -q --no-compile --disable-pip-version-check -e ".[dev]" 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import skipnet_sweep, torch, ray, mlflow" \
  || { echo "setup: the installation is incomplete" >&2; exit 1; }
