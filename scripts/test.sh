#!/usr/bin/env bash
# Set up (scripts/setup.sh), then the lint/format checks and the whole test suite, slow tests
# included. Arguments go to pytest, e.g.: bash scripts/test.sh -m "not slow" -x
# --fast, as the first argument, runs the fast tier instead of the whole suite: the core's tests
# (tests/fast_tier.py, docs/development.md), e.g.: bash scripts/test.sh --fast -x
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --fast ]; then
  shift
  set -- -m "fast and not slow" "$@"
fi
bash scripts/setup.sh tensor,plot,dev
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
exec .venv/bin/python -m pytest "$@"
