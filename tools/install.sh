#!/usr/bin/env bash
# Install hybridopt with its LLM and test extras.  A CPU build of torch is installed first when
# no torch is present (a bare `torch` requirement could otherwise pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
"$PY" -m pip install -q -e ".[llm,test]"
# Build the compiled direction kernel now (about 5 s, cached per machine), not inside the first run;
# without a C++ compiler this warns once and the torch reference is used (the same values).
"$PY" -c "from hybridopt import counter; counter.kernel()"
