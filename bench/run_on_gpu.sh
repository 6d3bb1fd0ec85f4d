#!/usr/bin/env bash
# The GPU figures (docs/bench-*-gpu.txt): run from the repository root on a machine with one CUDA GPU
# and the project's dependencies importable (where ldm and its helpers are not installed there, put a
# folder holding them on PYTHONPATH first). Each benchmark's output goes to $OUT (default gpu-results/).
set -uo pipefail
OUT="${OUT:-gpu-results}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
quiet() { grep -v -E "^(Working with z|making attention|DiffusionWrapper has|LatentDiffusion: Running)"; }

nvidia-smi -L
"$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)"
"$PYTHON" bench/gpu_check.py 2>&1 | quiet | tee "$OUT/gpu-check.txt"
"$PYTHON" bench/apply.py --device cuda --rounds 30 2>&1 | quiet | tee "$OUT/bench-apply-gpu.txt"
for precision in bf16 fp16; do
    "$PYTHON" bench/train.py --device cuda --precision "$precision" --steps 10 2>&1 | quiet \
        | tee "$OUT/bench-train-gpu-$precision.txt"
done
