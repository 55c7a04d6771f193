#!/usr/bin/env bash
# The GPU check in one call (see bench/perf/gpu_check.py). On the device machine:
#   bash scripts/gpu_check.sh            # writes under $OUT (or ./gpu-check)
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-gpu-check}
mkdir -p "$out"
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 || { tail -5 "$out/install.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv >"$out/nvidia-smi.csv" 2>&1
python3 -m infercost.cli backends 2>&1 | tee "$out/backends.txt"
python3 bench/perf/gpu_check.py --out "$out" "$@"
