#!/usr/bin/env bash
# The README's first command: install what is needed, then run the two-site demo job.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --demo
exec .venv/bin/edgecelery demo "$@"
