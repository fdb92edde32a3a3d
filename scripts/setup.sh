#!/usr/bin/env bash
# Create .venv (once) and install microgpt into it with the given extras, e.g. "tensor,plot".
# torch is pinned to a CPU build that installs quickly; set TORCH_SPEC to choose another
# (see docs/tensor.md: installing torch), or TORCH_SPEC=none to skip it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-tensor,plot}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
if [ "${TORCH_SPEC:-torch==2.13.0}" != none ] && [[ "$extras" == *tensor* ]]; then
  .venv/bin/python -c "import torch" 2>/dev/null || pip install "${TORCH_SPEC:-torch==2.13.0}"
fi
pip install -e ".[$extras]"
