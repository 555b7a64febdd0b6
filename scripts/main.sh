#!/usr/bin/env bash
# Set up (if needed) and run the main job end to end on UCMD: train, index, example searches, evaluation report.
# Data: --data DIR, else $RSHASH_DATA, else ../shared/data/UCMerced_LandUse; extra arguments go to `rshash run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/rshash run --out runs/ucmd "$@"
