"""Time to the first animated frame, live and offline, with a cold and a warm compile cache.

    python scripts/first_frame.py                       # writes bench/results/first_frame_<cpu>.json
    python scripts/first_frame.py --out PATH --camera VIDEO --weights synthetic -- EXTRA FLAGS

Each measurement is one `lp-live` process as a user starts it (imports, models, engine build,
compile, first frame), with the driving video as the camera and the null sink: first the
compile cache empty (a fresh TORCHINDUCTOR_CACHE_DIR), then the same cache again (warm: inductor's
FX-graph cache loads the frozen graphs, lp_live/engine/persist.py). Synthetic weights come from the
user's weights cache (built there by the first run on the machine, if not before). The figures are
the runs' own `first_frame_s` (`--stats-json`), plus each process's wall time.
Run it on a quiet machine: a loaded CPU measures the load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout: the package beside this script

from lp_live.core.cputune import cpu_model  # noqa: E402 (torch-free)
from lp_live.core.provenance import git_commit  # noqa: E402


def run_once(kind: str, args: argparse.Namespace, cache: Path, tmp: Path) -> dict[str, object]:
    """One lp-live process; returns its first_frame_s and wall time."""
    stats = tmp / f"{kind}.json"
    argv = [sys.executable, "-m", "lp_live.cli", "--camera", args.camera, "--weights", args.weights,
            "--max-frames", str(args.frames), "--stats-json", str(stats), *args.extra]
    if kind == "live":
        argv += ["--sink", "null"]
    else:
        argv += ["--output", str(tmp / "render.mp4")]
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache), PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    data = json.loads(stats.read_text())
    steps = [line.split("INFO: ", 1)[1] for line in proc.stderr.splitlines() if "INFO: " in line]
    return {"first_frame_s": data.get("first_frame_s"), "optimized_switched_s": data.get("switched_s"),
            "process_wall_s": round(wall, 2), "log": steps}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="the JSON to write (default: bench/results/first_frame_<cpu>.json)")
    p.add_argument("--camera", default=str(REPO.parent / "shared" / "assets" / "d0.mp4"), help="driving video")
    p.add_argument("--weights", default="synthetic", help="as lp-live --weights (default: synthetic)")
    p.add_argument("--frames", type=int, default=3, help="frames per run (default: 3)")
    p.add_argument("extra", nargs="*", help="more lp-live flags (after --), e.g. -- --input-size 128")
    args = p.parse_args()
    import torch

    results: dict[str, object] = {
        "what": "seconds from process start to the first animated frame (first_frame_s: from the run's start, "
                "models included; process_wall_s: the whole process, frames and exit included)",
        "cpu": cpu_model(), "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
        "commit": git_commit(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "camera": Path(args.camera).name, "weights": args.weights, "frames": args.frames, "flags": args.extra,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    with tempfile.TemporaryDirectory(prefix="lp-live-first-frame-") as tmp:
        cache = Path(tmp) / "inductor"
        for kind in ("live", "render"):
            # cold: this kind's own empty cache; warm: the same cache again
            kind_cache = cache / kind
            results[kind] = {"cold": run_once(kind, args, kind_cache, Path(tmp)),
                             "warm": run_once(kind, args, kind_cache, Path(tmp))}
            for state in ("cold", "warm"):
                r = results[kind][state]
                print(f"{kind:6} {state}: first animated frame after {r['first_frame_s']:.1f} s "
                      f"(process {r['process_wall_s']:.1f} s)", file=sys.stderr)
    slug = re.sub(r"[^a-z0-9]+", "-", str(results["cpu"]).lower()).strip("-")[:60]
    out = args.out or REPO / "bench" / "results" / f"first_frame_{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
