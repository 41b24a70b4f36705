#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded Gemma 3 270M (nf4): the whole demo pipeline
# (dataset -> SAELens runner -> evals -> model card). Offline.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
exec .venv/bin/gemma4-sae demo "$@"
