#!/usr/bin/env bash
# The test command: set up, lint, type-check, run every test (unit and integration).
# Integration tests start their own servers (registry, git daemon, moto, prometheus) on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff";  ruff check image_updater tests bench scripts
echo "== mypy";  mypy
echo "== layers"; lint-imports
echo "== pytest"; python -m pytest "$@"
