#!/usr/bin/env bash
# Makes this checkout ready to travel alone to a GPU machine (for scripts/gpu_check.sh there):
# copies ../shared/reference and ../shared/assets into ./shared (git-ignored, ~22 MB) and writes
# ./shared/commit.json with the commit and whether tracked files differ from it, since .git may
# not travel. Run it right before each device run, after your last commit or edit.
#
#   scripts/prepare_gpu_run.sh [SHARED_DIR]     (default: ../shared beside the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-../shared}
for need in reference/weights.py assets/s6.jpg assets/d0.mp4; do
    [ -f "$src/$need" ] || { echo "prepare_gpu_run: $src/$need not found" >&2; exit 2; }
done
if [ -L shared ]; then
    # a link would not travel (only the link does), and copying through it would write into its target
    echo "prepare_gpu_run: ./shared is a symbolic link; remove it first (rm shared) and run again" >&2
    exit 2
fi
mkdir -p shared
rm -rf shared/reference shared/assets
cp -r "$src/reference" "$src/assets" shared/

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then dirty=true; else dirty=false; fi
cat > shared/commit.json <<EOF
{"commit": "$commit", "dirty": $dirty, "branch": "$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)", "written": "$(date -u +%FT%TZ)"}
EOF
echo "prepare_gpu_run: copied $src/{reference,assets} into ./shared ($(du -sh shared | cut -f1)); commit $commit, dirty $dirty"
