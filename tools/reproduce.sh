#!/usr/bin/env bash
# The README's main command: install, then reproduce every figure and table at the default scale.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
PY=${PYTHON:-python3}
exec "$PY" -m hybridopt reproduce --scale "${SCALE:-default}" --out "${OUT:-reproduce-${SCALE:-default}}" "$@"
