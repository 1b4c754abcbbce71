#!/usr/bin/env bash
# GPU figures in one table, unattended, in under 10 minutes on one GPU (benchmarks/gpu_check.py says what is measured):
# gpgrl's HF sampler vs vLLM generation tokens/s, and a training step's time and peak GPU memory with each engine, for
# the default model and a 0.5-1.5B model when one is in the Hugging Face cache.
#   benchmarks/gpu_check.sh [RESULTS_DIR]      # writes RESULTS_DIR/gpu_check.json (default benchmarks/results)
# Needs gpgrl installed with its dependencies in $PYTHON (default python3); vLLM optional (its rows say "not run").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${1:-benchmarks/results}
PYTHONUNBUFFERED=1 timeout 580 "$PY" benchmarks/gpu_check.py --budget-s 480 --out "$RESULTS/gpu_check.json"
