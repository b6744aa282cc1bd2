#!/usr/bin/env bash
# One prepared H200 check, <= 8 minutes, no network, no pretrained weights:
#   randomly initialised OPT-1.3B and LLaMA-7B shapes in bf16 -> bf16 exact-restore check +
#   the benchmark (five methods + MeZO reference, interleaved medians, max_memory_allocated).
# Results: $OUT/summary.json, $OUT/<shape>/{restore.json,bench.json,bench.md}, $OUT/gpu_check.log.
# CPU test of this script: HYBRIDOPT_BENCH_SHRINK=1 OUT=/tmp/x bash benchmarks/perf/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-${1:-/tmp/hybridopt-gpu}}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HYBRIDOPT_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python}"
ARGS=()
BUDGET="${HYBRIDOPT_GPU_BUDGET:-430}"
if [ "${HYBRIDOPT_BENCH_SHRINK:-0}" != "0" ]; then
  ARGS+=(--shrink --device cpu --reps 1 --no-profile)
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true; } > "$OUT/nvidia-smi.txt"
if ! "$PY" -c "import torch, transformers, peft" > "$OUT/preflight.txt" 2>&1; then
  echo "preflight failed: torch/transformers/peft not importable" | tee -a "$OUT/preflight.txt"
  exit 3
fi
timeout -k 10 470 "$PY" -m hybridopt.benchmarks.perf.gpu_check --out "$OUT" --budget "$BUDGET" "${ARGS[@]}" \
  2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
