#!/usr/bin/env bash
# The demo of the whole flow on loopback (installs everything first).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
