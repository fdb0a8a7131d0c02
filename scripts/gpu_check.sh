#!/usr/bin/env bash
# The first minutes on a lent GPU machine, as one command: measures first, optional parts last.
#
#   scripts/prepare_gpu_run.sh                   here, right before the device run (copies the kit in)
#   scripts/gpu_check.sh [OUT_DIR]               there (default: $OUT, else bench/results/gpu)
#   scripts/gpu_check.sh --dry-run OUT_DIR       here, on the CPU: the same steps and files, tiny
#
# Steps, in order; each one's failure or time-out is recorded and the next still runs. The exit
# status is 2 at once when the kit, a needed package or (not dry) CUDA is missing, else 1 if any
# step failed, else 0. Caps (seconds, CUDA run) keep the whole inside one 600 s device command;
# a step also stops when the total budget (GPU_CHECK_BUDGET, 550 s) is spent, and the last
# ones are skipped then. Every compile is cold: the optimized engine's graphs are frozen, which
# bypasses inductor's FX-graph cache, so each bench process traces and generates them again.
#   env           45  GPU, driver, torch/triton/CUDA/python versions, commit     -> env.json
#   bench-b1     200  baseline vs optimized (fp16 only; 3 graphs compiled on the CPU), 256 px, b1,
#                     50 timed frames, per-stage pass                          -> bench-b1.json
#   bench-batch  105  the same at batch $GPU_CHECK_BATCH (8; 3 more graphs)    -> bench-batch.json
#   cuda-tests   100  pytest -m cuda (test_optimized, test_kernels, test_face), fp16 only:
#                     the bf16 graph test is deselected (one precision, not both compiled)
#                                                                               -> cuda-tests.xml
#   kernels       30  Triton kernels vs PyTorch, fp16                          -> kernels.json
#   profile       70  torch.profiler table of one compiled step, CUDA graphs off
#                     (a replayed graph shows as one launch)                    -> profile.txt
#   total budget 550 (the caps add up to it), then summary.json (each step's status and seconds)
#   and gpu_check.log (everything printed): 8 files, the most a device run brings back.
# The caps are guesses until a first CUDA run: its summary.json gives each step's seconds and
# the bench JSONs the compile seconds and graph counts (meta.compiled) to set them by.
# The dry run (CPU, 128 px, fp32, 1 frame, no warm-up, batch $GPU_CHECK_BATCH (2), caps x4 and
# a 900 s budget; compile off unless GPU_CHECK_COMPILE=1, as three graphs take minutes on two
# cores) blocks `import av` and `import pyvirtualcam`, as the GPU machine has neither;
# tests/test_gpu_check.py runs it in the default suite. summary.json gives each step's wall and
# processor seconds: at batch 1 on the 2-core Xeon (AVX-512 BF16, no AMX), shared and busy,
# 209 processor-seconds in all (bench-b1 72, bench-batch 47, profile 65, kernels 17), 427 s wall;
# making the synthetic weights is about 24 s of each bench process's start there.
# It runs from a source checkout with PYTHONPATH=. (no pip install). The kit and assets are
# looked up in ../shared, then ./shared (as tests/conftest.py does); on the GPU machine only
# ./shared travels, hence scripts/prepare_gpu_run.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
if [ "${1:-}" = --dry-run ]; then dry=1; shift; fi
out=${1:-${OUT:-bench/results/gpu}}
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 2
py=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET:-550}
tmp=$(mktemp -d) || exit 2
exec > >(tee "$out/gpu_check.log") 2>&1
tee_pid=$!
# on exit: the temporary folder goes, and the log is complete before the script's caller reads it
trap 'rm -rf "$tmp"; exec >&- 2>&-; wait $tee_pid' EXIT

shared=
for d in ../shared shared; do
    if [ -f "$d/reference/weights.py" ] && [ -f "$d/assets/s6.jpg" ] && [ -f "$d/assets/d0.mp4" ]; then
        shared=$d; break
    fi
done
if [ -z "$shared" ]; then
    echo "gpu_check: no reference kit and assets (shared/reference, shared/assets) in ../shared or ./shared;" \
         "run scripts/prepare_gpu_run.sh before a device run" >&2
    exit 2
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# CPU threading fixed here, so that no step spends its cap measuring it (lp_live/core/cputune.py)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
if [ $dry = 1 ]; then
    # the GPU machine has no PyAV and no pyvirtualcam: make their import fail here too
    mkdir "$tmp/blocked"
    for mod in av pyvirtualcam; do
        echo "raise ModuleNotFoundError('no module named $mod (blocked by gpu_check.sh --dry-run)', name='$mod')" \
            > "$tmp/blocked/$mod.py"
    done
    export PYTHONPATH="$tmp/blocked:$PYTHONPATH"
    # fp32: the CPU's fastest eager precision; caps x4 (a CPU shared with other work)
    device=cpu size=128 frames=1 warmup=0 precision=fp32 require= scale=4 budget=${GPU_CHECK_BUDGET:-900}
    compile=$([ "${GPU_CHECK_COMPILE:-0}" = 1 ] && echo --compile || echo --no-compile)
    many=${GPU_CHECK_BATCH:-2} many_frames=1 kernel_args="cpu 1 0 32"
else
    device=cuda size=256 frames=50 warmup=5 precision=fp16 require=--require-cuda compile=--compile scale=1
    many=${GPU_CHECK_BATCH:-8} many_frames=20 kernel_args="cuda 50 5 64"
fi
bench=("$py" -m lp_live.cli bench --device "$device" --input-size "$size" --precision "$precision" "$compile")

start=$(date +%s)
failed=0
steps=()
# cpu_now: processor milliseconds (user + system) of this script's finished children so far, a
# measure of a step's work that a busy machine does not inflate as it does the wall clock. Called
# as is, not in $(...): a subshell starts with these counts at zero.
cpu_ms() {
    times > "$tmp/times"
    cpu_now=$(awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, t, "m"); sub("s", "", t[2]); s += t[1] * 60 + t[2] }
                             printf "%d", s * 1000 }' "$tmp/times")
}
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
# step NAME CAP COMMAND...: runs COMMAND for at most CAP seconds (and the budget left), records it
step() {
    local name=$1 cap=$2 left t0 c0 rc status
    shift 2
    cap=$((cap * scale))
    left=$((budget - ($(date +%s) - start)))
    [ "$cap" -le "$left" ] || cap=$left
    echo "== $name (at most ${cap}s) $(date -u +%T)"
    if [ "$cap" -lt 5 ]; then
        steps+=("{\"name\": \"$name\", \"status\": \"skipped\", \"rc\": null, \"seconds\": 0, \"cpu_seconds\": 0}")
        echo "== $name: skipped, the ${budget}s budget is spent"
        failed=1
        return 1
    fi
    cpu_ms
    c0=$cpu_now t0=$(date +%s%N)
    timeout -k 5 "$cap" "$@"
    rc=$?
    case $rc in 0) status=ok ;; 124 | 137) status=timeout ;; *) status=failed ;; esac
    local ms=$((($(date +%s%N) - t0) / 1000000))
    cpu_ms
    local cpu=$((cpu_now - c0))
    steps+=("{\"name\": \"$name\", \"status\": \"$status\", \"rc\": $rc, \"seconds\": $(secs $ms), \"cpu_seconds\": $(secs $cpu)}")
    echo "== $name: $status (rc $rc) in $((ms / 1000))s, $((cpu / 1000))s of processor time"
    [ $rc = 0 ] || failed=1
    return $rc
}

summary() {
    local list
    list=$(IFS=,; echo "${steps[*]}")
    printf '{"mode": "%s", "ok": %s, "seconds": %d, "budget_s": %d, "shared": "%s", "batch": %d, "steps": [%s]}\n' \
        "$([ $dry = 1 ] && echo dry-run || echo cuda)" "$([ $failed = 0 ] && echo true || echo false)" \
        $(($(date +%s) - start)) "$budget" "$shared" "$many" "$list" > "$out/summary.json"
    echo "== summary ($out/summary.json)"
    cat "$out/summary.json"
}

if ! step env 45 "$py" scripts/gpu_env.py "$out/env.json" $require; then
    summary
    echo "gpu_check: the environment cannot run the check (env.json says why)" >&2
    exit 2
fi

step bench-b1 200 "${bench[@]}" --batch 1 --frames "$frames" --warmup "$warmup" --json "$out/bench-b1.json"

step bench-batch 105 "${bench[@]}" --batch "$many" --frames "$many_frames" --warmup "$warmup" --no-stages \
    --json "$out/bench-batch.json"

step cuda-tests 100 "$py" -m pytest -p no:cacheprovider -q -rs -o addopts="" -m cuda -k "${GPU_CHECK_TESTS_K:-not bf16}" \
    --junitxml "$out/cuda-tests.xml" tests/test_optimized.py tests/test_kernels.py tests/test_face.py tests/test_inflight.py

# shellcheck disable=SC2086  # kernel_args: device, repeats, warm-up, volume side
step kernels 30 "$py" - $kernel_args "$out/kernels.json" <<'EOF'
import json, sys
import torch
from lp_live.tools.kernel_bench import format_kernel_benchmarks, run_kernel_benchmarks
device, repeats, warmup, side, path = sys.argv[1:]
dtype = torch.float16 if device == "cuda" else torch.float32  # as the optimized engine runs W
result = run_kernel_benchmarks(device, dtype, int(repeats), warmup=int(warmup), size=(16, int(side), int(side)))
open(path, "w").write(json.dumps(result, indent=2) + "\n")
print(format_kernel_benchmarks(result))
EOF

step profile 70 "${bench[@]}" --no-cuda-graph --modes optimized --batch 1 --frames 1 \
    --warmup 0 --no-stages --profile "$out/profile.txt"

summary
ls -l "$out"
exit $failed
