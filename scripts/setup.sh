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
# A current pip first: the one venv copies from Python 3.11 (23.x) spends over a minute
# matching wheel tags while it resolves this project's ~140 packages (measured: a dry run
# 75 s with pip 23.2, 34 s with 26.3; the upgrade takes 4 s). Where PyPI cannot be reached
# the venv's own pip goes on.
.venv/bin/python -m pip install -qq --disable-pip-version-check --upgrade pip || true
# torch and torchvision resolve from the machine's local wheels under its pip constraints
# (torch 2.14.1, a CUDA build: 5.5 GB in the venv; the CPU build of 2.13 on this disk has no
# torchvision that imports beside it). -qq: errors only (pip's notes on this machine's index
# folders and the build backend's notice about editable installs); a failed install stops
# the script here.
.venv/bin/python -m pip install -qq --no-compile --disable-pip-version-check -e ".[dev]"
# Bytecode on every core, not pip's one (not compiling at all is slower: every process of
# the suite and of Ray then compiles what it imports; measured, the suite's workers took
# 2m40s to collect), and only for what is imported: about 5,200 of the 20,000 files are, by
# the sweep, Ray's and MLflow's servers and the tests. Left out: packages' own tests, pip and
# setuptools, the parts of torch, Ray and SymPy not used, moto's other AWS services, what
# MLflow and moto install for features not used (Python compiles a file on its first import
# anyway). compileall exits 1 for the few Python 2 files some packages ship.
UNUSED='/tests/|/site-packages/(pip|setuptools|moto|scipy|sklearn|networkx|fontTools|narwhals'
UNUSED+='|pyasn1_modules|graphql|graphene)/|/site-packages/ray/(rllib|llm|serve)/'
UNUSED+='|/site-packages/torch/(_inductor|testing)/|/site-packages/sympy/physics/'
.venv/bin/python -m compileall -q -j 0 -x "$UNUSED" \
  "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
  > /dev/null 2>&1 || true
