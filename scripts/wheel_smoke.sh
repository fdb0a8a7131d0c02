#!/usr/bin/env bash
# The installed package, as a user gets it: build the wheel, install it into a fresh virtual
# environment, and from a directory outside the checkout run `lp-live doctor`, a synthetic render
# of a few frames of the packaged portrait, and `lp-live bench --frames 1` at input 128.
# Usage: scripts/wheel_smoke.sh [WORK_DIR]   (PYTHON=python3.x to choose the interpreter)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
case "$work/" in "$repo"/*) echo "wheel_smoke: WORK_DIR must be outside the checkout" >&2; exit 2;; esac
start=$SECONDS
step() { echo "== wheel_smoke [$((SECONDS - start)) s]: $*"; }

step "build the wheel"
"$py" -m venv "$work/build-env"
"$work/build-env/bin/pip" install --quiet --upgrade pip build
"$work/build-env/bin/python" -m build --wheel --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log"; exit 1; }
wheel="$(ls "$work"/dist/lp_live-*.whl)"
"$work/build-env/bin/python" -c "import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist(); \
missing = {'lp_live/data/astronaut.png', 'lp_live/data/default.yaml'} - set(names); sys.exit(f'missing {missing}' if missing else 0)" \
    "$wheel"

step "install $(basename "$wheel") into a fresh venv"
"$py" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip
"$work/venv/bin/pip" install --quiet "$wheel"

cd "$work"  # nothing of the checkout is importable or readable from here
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
lp="$work/venv/bin/lp-live"
step "lp-live --version: $("$lp" --version)"
step "lp-live doctor"
"$lp" doctor
step "render 3 frames with synthetic weights (the packaged portrait, driven by itself shifted)"
"$work/venv/bin/python" - <<'PY'
import numpy as np
from lp_live.session import DEFAULT_SOURCE, read_image
from lp_live.media.video import VideoWriter
face = read_image(DEFAULT_SOURCE)
with VideoWriter("driving.mp4", fps=25) as w:
    for i in range(3):
        w.write(np.roll(face, 8 * i, axis=1))
PY
"$lp" --camera driving.mp4 --output out.mp4 --weights synthetic --input-size 128 --mode baseline --max-frames 3
test -s out.mp4
step "lp-live bench --frames 1 --input-size 128"
"$lp" bench --frames 1 --warmup 0 --input-size 128 --no-compile --no-stages --modes baseline optimized
step "passed in $((SECONDS - start)) s"
