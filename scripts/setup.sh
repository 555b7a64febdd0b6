#!/usr/bin/env bash
# Create .venv and install rshash with its pinned dependencies (idempotent).
# torch==2.13.0 is the CPU wheel that pip finds on local disk here; nothing else to install by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
