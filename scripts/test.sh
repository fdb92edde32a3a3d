#!/usr/bin/env bash
# Set up (scripts/setup.sh), then the lint/format checks and the whole test suite, slow tests
# included. Arguments go to pytest, e.g.: bash scripts/test.sh -m "not slow" -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh tensor,plot,dev
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
exec .venv/bin/python -m pytest "$@"
