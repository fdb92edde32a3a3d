#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the main job: the four-way design ablation on the
# bundled names. Arguments go to `microgpt`, replacing the default `ablate`:
#   bash scripts/main.sh train --mode scalar
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh tensor,plot
if [ $# -eq 0 ]; then set -- ablate; fi
exec .venv/bin/microgpt "$@"
