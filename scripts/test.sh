#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite offline (what .ci/run calls).
#   ./scripts/test.sh            everything (CI)
#   ./scripts/test.sh --quick    the edit loop: skips tests marked `slow` (real-model loads, SAE training,
#                                Monte-Carlo calibration); any other arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
args=()
for a in "$@"; do
    if [ "$a" = "--quick" ]; then args+=(-m "not slow"); else args+=("$a"); fi
done
exec .venv/bin/python -m pytest -q "${args[@]}"
