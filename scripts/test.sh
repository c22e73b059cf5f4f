#!/usr/bin/env bash
# The README's second command: install what is needed, lint, then run every test.
# The tests start their own servers (a private Redis per session, worker processes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
