#!/usr/bin/env bash
# Create .venv and install the package with its test extra. torch is pinned to the local CPU wheel first, so no
# multi-GB CUDA build is ever downloaded; everything else comes from PyPI.
#
# Idempotent: after a successful install, .venv/.setup-stamp holds a hash of pyproject.toml, this script and the
# checkout path. When the stamp matches and the package is still installed, nothing is installed (no network is
# needed, so a second ./scripts/demo.sh works offline). Set GEMMA4_SAE_REINSTALL=1 to force a reinstall. A fresh
# clone (CI) has no .venv, so it always installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
STAMP=.venv/.setup-stamp
want="$(cat pyproject.toml scripts/setup.sh | "$PY" -c 'import hashlib, os, sys; print(hashlib.sha256(sys.stdin.buffer.read() + os.getcwd().encode()).hexdigest())')"
if [ "${GEMMA4_SAE_REINSTALL:-0}" != 1 ] && [ -x .venv/bin/python ] && [ -f "$STAMP" ] \
    && [ "$(cat "$STAMP")" = "$want" ] \
    && .venv/bin/python -c 'import importlib.metadata as m; m.version("gemma4-saelens-ext")' 2>/dev/null; then
    echo "setup: .venv is up to date with pyproject.toml; nothing to install (GEMMA4_SAE_REINSTALL=1 forces it)."
    exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
rm -f "$STAMP"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
echo "$want" > "$STAMP"
