#!/usr/bin/env bash
# The raw runs behind the per-ISA rewrite plan and the roofline, on a quiet x86 machine: input 256,
# synthetic weights, 3 timed frames. Per instruction set (this CPU's own, and AVX2 emulated with
# ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2), `lp-live bench` with the committed plan
# table (before) and with the plan measured on that ISA (after), each in a fresh user cache, so
# the plan, the threading and the FLOP counts are measured in the run and the JSON says so.
# Usage: scripts/bench_isa.sh NAME [RUNS]   e.g. scripts/bench_isa.sh cpu-epyc-avx512bf16-2core 2
# COMBOS="avx2-default avx2-measured native-measured" picks some of the four runs per round.
# writes bench/results/NAME-<isa>-<plan>-<run>.json and .txt  (PYTHON= the interpreter, default .venv's)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
name="${1:?usage: scripts/bench_isa.sh NAME [RUNS]}"
runs="${2:-1}"
py="${PYTHON:-$repo/.venv/bin/python}"
out="$repo/bench/results"
mkdir -p "$out"
for run in $(seq 1 "$runs"); do
    for isa in native avx2; do
        for plan in default measured; do
            case " ${COMBOS:-$isa-$plan} " in *" $isa-$plan "*) ;; *) continue ;; esac
            cache="$(mktemp -d)"
            env=(XDG_CACHE_HOME="$cache" PYTHONPATH="$repo")
            precision=auto
            if [ "$isa" = avx2 ]; then  # an AVX2-only CPU has no native bf16: float32, as auto picks there
                # the whole emulation, as `make test-avx2` (lp_live/core/cpuisa.py EMULATION_ENV)
                env+=(LP_LIVE_CPU_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
                      TORCHINDUCTOR_CPP_MARCH=x86-64-v3 MKL_ENABLE_INSTRUCTIONS=AVX2)
                precision=fp32
            fi
            base="$out/$name-$isa-$plan-$run"
            echo "== $base"
            env "${env[@]}" "$py" -m lp_live.cli bench --device cpu --weights synthetic --input-size 256 \
                --frames 3 --precision "$precision" --rewrite-plan "$plan" --json "$base.json" | tee "$base.txt"
            rm -rf "$cache"
        done
    done
done
