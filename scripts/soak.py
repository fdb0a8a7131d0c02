"""Soak: a long live run on a looping video with --sink null; does memory stay flat after warm-up?

    python scripts/soak.py --minutes 10 --json bench/results/NAME-soak.json --png bench/results/NAME-soak.png

Runs `lp-live --source PHOTO --camera VIDEO --loop --sink null --stats-json ...` (the CLI's
defaults otherwise; --weights synthetic unless given), sends SIGINT after the duration (exit
130 is the clean stop), and reads the RSS series that `--stats-json` records (`memory`). Growth
is the median RSS of the last minute minus that of the first minute after warm-up (warm-up: the
first `--warmup` seconds after the first frame). Extra arguments after `--` go to lp-live.
Runs with `nice` when asked (`--nice 19`): the soak measures memory, not speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout: the package beside this script

from lp_live.core.cputune import cpu_model, torch_version  # noqa: E402 (torch-free)
from lp_live.core.provenance import git_commit  # noqa: E402

ASSETS = REPO.parent / "shared" / "assets"
FIRST_FRAME = re.compile(r"running: first animated frame after ([0-9.]+) s")


def growth(samples: list[list[float]], start: float, window: float = 60.0) -> dict[str, float | None]:
    """Median RSS (MiB) of the first and the last `window` seconds from `start` on, and their difference."""
    steady = [(t, mb) for t, mb in samples if t >= start]
    if not steady:
        return {"first_minute_mb": None, "last_minute_mb": None, "growth_mb": None, "steady_s": 0.0}
    t_end = steady[-1][0]
    first = [mb for t, mb in steady if t < start + window]
    last = [mb for t, mb in steady if t >= t_end - window]
    a, b = statistics.median(first), statistics.median(last)
    return {"first_minute_mb": a, "last_minute_mb": b, "growth_mb": round(b - a, 3),
            "steady_s": round(t_end - start, 1)}


def draw(result: dict, path: Path) -> None:
    """The RSS curve as a PNG (OpenCV: matplotlib is not a dependency)."""
    samples = result["memory"]["samples"]
    w, h, left, right, top, bottom = 900, 420, 80, 20, 60, 50
    img = np.full((h, w, 3), 255, np.uint8)
    ts = [t for t, _ in samples] or [0.0, 1.0]
    mbs = [mb for _, mb in samples] or [0.0, 1.0]
    t_max = max(ts) or 1.0
    lo, hi = min(mbs), max(mbs)
    pad = max(5.0, (hi - lo) * 0.1)
    lo, hi = lo - pad, hi + pad

    def xy(t: float, mb: float) -> tuple[int, int]:
        x = left + (w - left - right) * t / t_max
        return int(x), int(h - bottom - (h - top - bottom) * (mb - lo) / (hi - lo))

    font = cv2.FONT_HERSHEY_SIMPLEX
    g = result["growth"]
    cv2.putText(img, f"lp-live soak: RSS over {t_max / 60:.1f} min, {result['cpu']}, torch {result['torch']}",
                (10, 22), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    line = (f"{result['frames_processed']} frames; after warm-up: {g['first_minute_mb']} -> {g['last_minute_mb']} "
            f"MiB (growth {g['growth_mb']} MiB)  {result['git_commit'][:10]}  {result['date'][:10]}")
    cv2.putText(img, line, (10, 44), font, 0.42, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.line(img, (left, h - bottom), (w - right, h - bottom), (0, 0, 0), 1)
    cv2.line(img, (left, top), (left, h - bottom), (0, 0, 0), 1)
    for i in range(5):
        mb = lo + (hi - lo) * i / 4
        y = xy(0, mb)[1]
        cv2.line(img, (left - 4, y), (w - right, y), (225, 225, 225), 1)
        cv2.putText(img, f"{mb:.0f}", (10, y + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for i in range(6):
        t = t_max * i / 5
        x = xy(t, lo)[0]
        cv2.putText(img, f"{t / 60:.1f}", (x - 10, h - bottom + 18), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "MiB", (10, top - 8), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "minutes since start", (w // 2 - 60, h - 12), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    warm = result["warmup_end_s"]
    if warm is not None and warm < t_max:
        x = xy(warm, lo)[0]
        cv2.line(img, (x, top), (x, h - bottom), (150, 150, 230), 1)
        cv2.putText(img, "warm-up end", (x + 4, top + 14), font, 0.4, (120, 120, 200), 1, cv2.LINE_AA)
    pts = np.array([xy(t, mb) for t, mb in samples], np.int32)
    if len(pts) > 1:
        cv2.polylines(img, [pts], False, (40, 120, 200), 2, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="run time, from the start of the process")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds after the first frame not counted")
    p.add_argument("--source", type=Path, default=ASSETS / "s6.jpg")
    p.add_argument("--camera", type=Path, default=ASSETS / "d0.mp4")
    p.add_argument("--json", type=Path, required=True, help="the result")
    p.add_argument("--png", type=Path, help="the RSS curve")
    p.add_argument("--nice", type=int, default=0, help="run lp-live at this niceness (the machine may be shared)")
    p.add_argument("--commit", help="the commit being measured (default: this checkout's HEAD)")
    p.add_argument("lp_live_args", nargs="*", help="more lp-live arguments (after --)")
    args = p.parse_args(argv)
    extra = list(args.lp_live_args)
    if "--weights" not in extra:
        extra += ["--weights", "synthetic"]
    stats_path = args.json.with_suffix(".stats.json")
    log_path = args.json.with_suffix(".log")
    cmd = [sys.executable, "-c", "import sys; from lp_live.cli import main; sys.exit(main())",
           "--source", str(args.source), "--camera", str(args.camera), "--loop", "--sink", "null",
           "--stats-json", str(stats_path), *extra]
    if args.nice:
        cmd = ["nice", "-n", str(args.nice), *cmd]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            proc.wait(timeout=args.minutes * 60)
            print(f"soak: lp-live ended early (exit {proc.returncode}); see {log_path}", file=sys.stderr)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
    wall = time.perf_counter() - t0
    stats = json.loads(stats_path.read_text())
    text = log_path.read_text()
    m = FIRST_FRAME.search(text)
    first_frame = float(m.group(1)) if m else None
    warmup_end = None if first_frame is None else first_frame + args.warmup
    samples = stats["memory"]["samples"]
    result = {
        "what": "lp-live live run on a looping video, --sink null, RSS sampled by --stats-json; stopped by SIGINT",
        "cpu": cpu_model(), "cpus": os.cpu_count(), "torch": torch_version(), "python": platform.python_version(),
        "git_commit": args.commit or git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(cmd), "nice": args.nice,
        "note": "run with nice (a shared machine): the soak measures memory, not speed" if args.nice else "",
        "exit_code": proc.returncode, "wall_s": round(wall, 1), "first_frame_s": first_frame,
        "warmup_end_s": warmup_end, "frames_processed": stats["frames"]["processed"],
        "fps": stats["fps"], "stop_reason": stats["stop_reason"], "engine": stats["engine"],
        "growth": growth(samples, warmup_end if warmup_end is not None else 0.0),
        "memory": stats["memory"],
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.png:
        draw(result, args.png)
    g = result["growth"]
    print(f"soak: {result['frames_processed']} frames in {wall:.0f} s, exit {proc.returncode}; RSS after warm-up "
          f"{g['first_minute_mb']} -> {g['last_minute_mb']} MiB (growth {g['growth_mb']} MiB over {g['steady_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
