#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. UCMD tests use $RSHASH_DATA or ../shared/data/UCMerced_LandUse
# and are skipped when neither exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RSHASH_PROGRESS=0
exec .venv/bin/python -m pytest -q "$@"
