"""`lp-live serve-bench`: the server on loopback and N aiortc clients streaming a video, measured.

For each N (default 1, 2, 4) the server runs with N clients that each send the driving video
like a camera (looped, at its frame rate) and receive the animation. After a warm-up (until
every client got a frame), a window of `seconds` is measured: frames each client received in
it (per-session FPS and the total), the server's latency per frame (driving frame decoded on
the server -> animated frame handed to the encoder; loopback network and the client's decoding
are not in it), the step times and batch sizes, and the driving frames dropped (replaced by a
newer one before a step took them). The clients run in the same process, on the same CPU, as
the server: on a small CPU their video codecs compete with the engine.

Targets (the issue's benchmark): per-session FPS within 20 % of each other; p95 latency at
most 2.5 step times (the median step); total throughput with N = 4 at least that with N = 1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import platform
import time
from pathlib import Path
from typing import Any

import cv2
import torch

from ..core.config import Config
from ..core.errors import UserError
from ..core.figures import percentiles
from ..core.provenance import git_commit
from ..server.app import SERVER, background_server
from .bench import SHARED_ASSETS, device_name
from .client import read_video, stream

log = logging.getLogger(__name__)

FAIRNESS = 0.20  # per-session FPS within 20 % of the fastest
LATENCY_STEPS = 2.5  # p95 latency at most this many median step times


def _window(values, t0: float, t1: float) -> list:
    return [v for v in values if t0 <= v[0] <= t1]


async def _one_run(url: str, scheduler, n: int, frames, fps: float, seconds: float, warmup: float | None
                   ) -> dict[str, Any]:
    stop = asyncio.Event()
    clients = [asyncio.ensure_future(stream(url, frames, fps, duration_s=1e9, until=stop))
               for _ in range(n)]
    t_start = time.perf_counter()
    try:
        while True:  # warm-up: every session exists and has sent a frame (or the fixed warm-up)
            await asyncio.sleep(0.2)
            if any(c.done() for c in clients):
                await asyncio.gather(*clients)  # a client failed: raise its error
            sessions = list(scheduler.sessions.values())
            warm = len(sessions) == n and all(s.frames_out > 0 for s in sessions)
            if (warmup is None and warm) or (warmup is not None and time.perf_counter() - t_start >= warmup):
                break
        sessions = list(scheduler.sessions.values())
        before = {s.id: (s.dropped_in, s.dropped_out, s.frames_in) for s in sessions}
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        t1 = time.perf_counter()
        per_session = []
        for s in sessions:
            sent = _window(s.sent, t0, t1)
            p50, p95 = percentiles([ms for _, ms in sent])
            d_in, d_out, f_in = before[s.id]
            per_session.append({
                "fps": len(sent) / (t1 - t0), "frames": len(sent),
                "latency_ms": {"p50": p50, "p95": p95},
                "frames_in": s.frames_in - f_in, "dropped": (s.dropped_in - d_in) + (s.dropped_out - d_out),
            })
        steps = _window(scheduler.step_log, t0, t1)
        step_p50, step_p95 = percentiles([ms for _, ms, _ in steps])
    finally:
        stop.set()
        received = await asyncio.gather(*clients, return_exceptions=True)
    failures = [r for r in received if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    fps = [p["fps"] for p in per_session]
    p95s = [p["latency_ms"]["p95"] for p in per_session if p["latency_ms"]["p95"] is not None]
    return {
        "clients": n, "seconds": t1 - t0,
        "total_fps": sum(fps),
        "per_session": per_session,
        "steps": len(steps), "step_ms": {"p50": step_p50, "p95": step_p95},
        "batch_mean": sum(b for _, _, b in steps) / len(steps) if steps else None,
        "client_frames_received": [r.frames for r in received],
        "fairness": (min(fps) / max(fps)) if fps and max(fps) > 0 else None,
        "latency_p95_in_steps": (max(p95s) / step_p50) if p95s and step_p50 else None,
    }


def run(cfg: Config, *, clients: list[int], seconds: float, warmup: float | None = None,
        driving: Path | None = None, side: int | None = None, fps: float | None = None) -> dict[str, Any]:
    """Run the server once and the client counts in turn; the results as a JSON-ready dict."""
    driving = driving or SHARED_ASSETS / "d0.mp4"
    if not Path(driving).is_file():
        raise UserError(f"driving video {driving} not found; pass one with --driving")
    frames, video_fps = read_video(driving, max_frames=100)
    if side is not None:
        frames = [cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA) for f in frames]
    fps = fps or video_fps
    cfg.serve.host, cfg.serve.port = "127.0.0.1", 0
    cfg.serve.max_sessions = max(cfg.serve.max_sessions, *clients)
    cfg.serve.idle_timeout_s = max(cfg.serve.idle_timeout_s, 3600.0)
    runs = []
    with background_server(cfg) as running:
        server = running.app[SERVER]
        for n in clients:
            log.info("serve-bench: %d client(s), %g s", n, seconds)
            runs.append(asyncio.run(_one_run(running.url, server.scheduler, n, frames, fps, seconds, warmup)))
        device, weights = server.device, server.models.kind
    by_n = {r["clients"]: r for r in runs}
    targets = {
        "fairness_within_20pct": all(r["fairness"] is not None and r["fairness"] >= 1 - FAIRNESS for r in runs),
        "p95_latency_within_2.5_steps": all(r["latency_p95_in_steps"] is not None
                                            and r["latency_p95_in_steps"] <= LATENCY_STEPS for r in runs),
        "n4_throughput_at_least_n1": (by_n[4]["total_fps"] >= by_n[1]["total_fps"]) if {1, 4} <= by_n.keys()
        else None,
    }
    h, w = frames[0].shape[:2]
    return {
        "meta": {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device_name(device), "device_type": device.type,
            "torch": torch.__version__, "python": platform.python_version(), "git_commit": git_commit(),
            "weights": weights, "mode": cfg.engine.mode, "input_size": cfg.engine.input_size,
            "paste_back": cfg.animation.paste_back,
            "driving": f"{Path(driving).name} at {w}x{h}, {fps:g} fps, looped",
            "latency": "server side: driving frame decoded -> animated frame handed to the encoder",
            "clients": "aiortc, in the server's process, over loopback",
        },
        "runs": runs,
        "targets": targets,
    }


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def format_table(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [f"lp-live serve-bench: {meta['device']}, {meta['mode']} engine, input {meta['input_size']}, "
             f"{meta['weights']} weights, torch {meta['torch']}, commit {meta['git_commit'][:12]}, {meta['date']}",
             f"driving: {meta['driving']}; latency: {meta['latency']}",
             "",
             f"{'N':>3} {'total fps':>10} {'per-session fps':>24} {'p50 ms':>10} {'p95 ms':>10} "
             f"{'step p50 ms':>12} {'batch':>6} {'drops':>7} {'fair':>6}"]
    for r in results["runs"]:
        ps = r["per_session"]
        lines.append(
            f"{r['clients']:>3} {_fmt(r['total_fps'], 2):>10} {' '.join(_fmt(p['fps'], 2) for p in ps):>24} "
            f"{_fmt(max((p['latency_ms']['p50'] or 0) for p in ps), 0):>10} "
            f"{_fmt(max((p['latency_ms']['p95'] or 0) for p in ps), 0):>10} {_fmt(r['step_ms']['p50'], 0):>12} "
            f"{_fmt(r['batch_mean'], 2):>6} {sum(p['dropped'] for p in ps):>7} {_fmt(r['fairness'], 2):>6}")
    lines.append("")
    lines.append("targets: " + ", ".join(f"{k}: {'met' if v else 'NOT met' if v is not None else 'n/a'}"
                                         for k, v in results["targets"].items()))
    return "\n".join(lines)
