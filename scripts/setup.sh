#!/usr/bin/env bash
# Create .venv and install the package with its test extra. torch is pinned to the local CPU wheel first, so no
# multi-GB CUDA build is ever downloaded; everything else comes from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
