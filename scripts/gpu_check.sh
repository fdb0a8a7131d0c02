#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU: installs nothing, runs the CUDA tests and
# `lp-live bench` (batch 1 and batch 8), and writes JSON, a chart and a profile of one
# optimized step into OUT_DIR.
#
#   scripts/gpu_check.sh OUT_DIR          (default: $OUT, else bench/results/gpu)
#
# It runs from a source checkout with PYTHONPATH=. (no pip install); PyAV and pyvirtualcam need
# not be there (without PyAV the benchmark uses synthetic driving frames and test_face and
# test_inflight are skipped).
# The parity tests need the reference kit: where the checkout travels alone, copy it inside first
# (`mkdir -p shared && cp -r ../shared/reference ../shared/assets shared/`; /shared/ is git-ignored).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench/results/gpu}}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; \
  $py -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; \
  git rev-parse HEAD 2>/dev/null; date -u +%FT%TZ; } > "$out/env.txt" 2>&1
cat "$out/env.txt"

echo "== CUDA tests"
tests="tests/test_optimized.py tests/test_kernels.py"
$py -c "import av" 2>/dev/null && tests="$tests tests/test_face.py tests/test_inflight.py"
[ -d ../shared/reference ] || [ -d shared/reference ] || echo "warning: no reference kit: parity tests will skip"
# shellcheck disable=SC2086
$py -m pytest -p no:cacheprovider -q -rs -m "cuda" $tests -o addopts="" 2>&1 | tee "$out/cuda-tests.log" || status=1

echo "== bench, batch 1 (with kernels and a profile)"
$py -m lp_live.cli bench --device cuda --frames 50 --warmup 5 --kernels \
    --json "$out/bench-cuda-b1.json" --plot "$out/bench-cuda-b1.png" --profile "$out/profile-optimized.txt" \
    || status=1

echo "== bench, batch 8"
$py -m lp_live.cli bench --device cuda --batch 8 --frames 20 --warmup 3 --no-stages \
    --json "$out/bench-cuda-b8.json" || status=1

ls -l "$out"
exit $status
