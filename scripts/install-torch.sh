#!/usr/bin/env bash
# Installs what the PyTorch binding builds and tests with, from PyPI by name: torch pinned to the
# GPU machine's version (2.11.0; PyPI's wheel is the CUDA 13.0 build and pulls ~2.9 GB of nvidia-*,
# triton and cuda-* wheels, 4.5 GB installed), pytest, scikit-build-core (the pip route's build
# backend) and numpy (torch warns without it). Measured on a 2-core CI-sized machine: about
# 2 min 10 s cold. A no-op when already installed.
#
# The GPU machine has torch, pytest and numpy in its image but not scikit-build-core, and no
# network: for the pip route there, carry its wheel (pure Python) in .whl/:
#   python3 -m pip download --no-deps -d .whl scikit-build-core
# and install it there with: python3 -m pip install --no-index --find-links .whl scikit-build-core
set -euo pipefail
PY="${PYTHON:-python3}"
"$PY" -m pip install --disable-pip-version-check --root-user-action=ignore -q \
  "torch==2.11.0" "pytest>=8" "scikit-build-core>=0.10" numpy
"$PY" -c "import torch; print('install-torch: torch', torch.__version__, torch.version.cuda)"
