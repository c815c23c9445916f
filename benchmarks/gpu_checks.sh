#!/usr/bin/env bash
# Every GPU measurement of scalekit in one run (< 8 minutes on one GPU). Needs python3 + torch only:
#   bash benchmarks/gpu_checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
python3 benchmarks/profile_accuracy.py --budget-s 300
python3 benchmarks/step_time.py --device cuda --preset L --kernel 5 --patch 128 --batch 2 --amp fp16 --checkpointing on --repeats 2
