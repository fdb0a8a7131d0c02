"""Baseline vs optimized engine, measured side by side in one process on the same inputs.

Every figure comes from this run: per-frame latency (p50/p95), frames per second, per-stage
milliseconds, peak memory, compile time, with the device, torch version, git commit, date and
weights kind beside them, and on CPUs the threading (`cputune`), each engine's precision and
any competing load (`--load N`: N busy processes during the timed steps, `cpuload`).

Per-stage times and the time per frame. Stage times come from the engine's `StageTimer`. On a
CPU the timer costs two clock reads per stage, so it runs during the timed steps themselves
and the stage rows plus "other" add up to the time per step, frame by frame. On CUDA it must
synchronise at stage edges, which changes the per-frame time, so it runs in a separate pass
of up to 5 steps, and the rows add up to that pass's own step time (shown beside them). The
stages cover the whole animate step; "other" is what runs between them (the driving frames'
np.stack, Python glue) and is near zero. A stage that runs inside another (copy_h2d inside
pre) is shown but not added twice. Before this, the CPU stage figures came from a separate
pass of up to 5 steps after the timed ones, as medians, while the time per frame was the mean
of the (by default 3) timed steps. Quiet, both agree (committed Xeon result: 5,628 ms per
frame, stages summing to 5,628 ms). Beside a competing process with the default OpenMP wait
policy, though, a step's time swings several-fold with what the other process is doing at
that moment (see `cputune`), so two passes taken seconds apart, one averaged and one a median,
could differ by up to 2x: a measurement artefact, not work outside the stages.

Several batch sizes (B driving frames per step, one source) are measured with the same engine
per mode, one after the other: `results["modes"]` holds the first batch size's figures (the
keys of a single-batch run), `results["batches"]["<B>"]` every batch size's.

The table and the chart of the results are drawn by `bench_format`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..core import cputune
from ..core.config import Config
from ..core.cpuload import CompetingLoad
from ..core.provenance import git_commit
from ..engine import Anchor, AnimateOptions, Engine
from ..engine.base import StageTimer
from ..engine.factory import build_engine
from ..models import load_liveportrait
from ..models.download import resolve_weights
from ..session import resolve_device
from ..stream.rss import rss_mb as process_rss_mb

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SHARED_ASSETS = next((p / "assets" for p in (REPO.parent / "shared", REPO / "shared") if (p / "assets").is_dir()),
                     REPO.parent / "shared" / "assets")


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def synthetic_frames(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random RGB images (not faces): the fallback when no photo or video is given."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        coarse = rng.uniform(0, 255, size=(9, 9, 3)).astype(np.float32)
        smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        noise = rng.normal(0, 8, size=(size, size, 3))
        frames.append(np.clip(smooth + noise, 0, 255).astype(np.uint8))
    return frames


def load_inputs(source: Path | None, driving: Path | None, count: int, size: int) -> tuple[np.ndarray, list, str]:
    """(source crop, driving crops, description): the given files, else the packaged portrait and
    the reference kit's d0.mp4 beside a checkout (synthetic frames without it)."""
    from ..face import SOURCE_CROP, create_detector, crop_face
    from ..session import DEFAULT_SOURCE, fit_source, read_image

    source = source or DEFAULT_SOURCE
    driving = driving or (SHARED_ASSETS / "d0.mp4" if (SHARED_ASSETS / "d0.mp4").is_file() else None)
    described = []
    if source is not None:
        photo = fit_source(read_image(source))
        face = create_detector().detect(photo)
        if face is None:
            src = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)
        else:
            src = crop_face(photo, face, SOURCE_CROP, input_size=size).input
        described.append(f"source {source.name}")
    else:
        src = synthetic_frames(1, size, seed=1)[0]
        described.append("synthetic source")
    if driving is not None:
        try:
            from ..media.video import VideoReader  # PyAV, imported only when a video is read
        except ImportError:
            log.warning("PyAV is not installed: synthetic driving frames instead of %s", driving)
            driving = None
    if driving is not None:
        frames = []
        with VideoReader(driving, loop=True) as reader:  # a short video loops
            while len(frames) < count:
                frame, _ = reader.read()
                frames.append(cv2.resize(frame, (size, size)))
        described.append(f"driving {driving.name}")
    else:
        frames = synthetic_frames(count, size, seed=2)
        described.append("synthetic driving frames")
    return src, frames, ", ".join(described)


# ---------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model with its thread count and its speed-deciding features."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    features = cputune.cpu_features()
    amx = "AMX" if "amx_tile" in features else "no AMX"
    return f"{cputune.cpu_model()} ({torch.get_num_threads()} threads; {', '.join([*features, amx])})"


def compile_counts() -> dict[str, int]:
    """Graphs torch.compile made in this process so far, and inductor's FX-graph cache outcomes: a hit
    skips lowering and code generation (the optimized engine's frozen graphs are cached too, see
    `engine.compiled.cache_frozen_mkldnn_weights`), so a second process only traces and loads."""
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]),
            **{f"fx_cache_{k}": int(counters["inductor"][f"fxgraph_cache_{k}"]) for k in ("hit", "miss", "bypass")}}


def rss_mb() -> float:
    """Resident memory of this process now, in MiB (0 where Linux /proc is missing)."""
    return process_rss_mb() or 0.0


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
def _compile_total(seconds: dict[str, float] | None) -> float | None:
    """Total first-call (compile + capture) seconds of a compiled engine; None for eager ones."""
    return sum(seconds.values()) if seconds else None


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def stage_breakdown(timer: StageTimer, step_ms: list[float]) -> dict[str, float]:
    """Mean ms per step of each stage the timer saw during the steps timed in `step_ms`, plus
    "other": the mean step time not inside any outermost stage (nested stages are not subtracted
    twice; `timer.parents` names them)."""
    steps = max(1, len(step_ms))
    means = {k: sum(v) / steps for k, v in timer.totals.items()}
    outer = sum(v for k, v in means.items() if k not in timer.parents)
    return {**means, "other": statistics.fmean(step_ms) - outer if step_ms else float("nan")}


def stage_pass(engine: Engine, step: Callable[[np.ndarray], np.ndarray],
               batches: list[np.ndarray]) -> tuple[dict[str, float], float]:
    """A separate pass of `step` (one engine step) with the stage timer on (it synchronises at
    stage edges on CUDA): (`stage_breakdown`, mean ms per step of this pass)."""
    step_ms = []
    engine.timer.reset()
    engine.timer.enabled = True
    try:
        for frames in batches:
            t0 = time.perf_counter()
            step(frames)
            step_ms.append((time.perf_counter() - t0) * 1e3)
    finally:
        engine.timer.enabled = False
    return stage_breakdown(engine.timer, step_ms), statistics.fmean(step_ms)


def measure_mode(engine: Engine, source: np.ndarray, frames: list[np.ndarray], *, warmup: int, timed: int,
                 batch: int, stages: bool, load: CompetingLoad | None = None) -> dict[str, Any]:
    """Time one engine: source preparation, warm-up (with compile), timed steps (with the stage
    timer on a CPU, where it costs nothing), a per-stage pass on CUDA; `load` runs during the
    timed steps and the stage pass."""
    device = engine.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    peak_rss = rss_mb()
    t0 = time.perf_counter()
    with torch.no_grad():
        state = engine.prepare_source(source)
    source_ms = (time.perf_counter() - t0) * 1e3
    # one driving stream: its anchor is the first warm-up frame, as in the live app
    step = functools.partial(engine.animate_batch, state, anchors=Anchor(), options=AnimateOptions())

    def batch_at(i: int) -> np.ndarray:
        return np.stack([frames[(i * batch + j) % len(frames)] for j in range(batch)])

    warm_times = []
    with torch.no_grad():
        for i in range(warmup):
            t0 = time.perf_counter()
            step(batch_at(i))
            warm_times.append(time.perf_counter() - t0)
            peak_rss = max(peak_rss, rss_mb())
        latencies = []
        stage_ms: dict[str, float] = {}
        stage_step_ms = None
        inline_stages = stages and device.type != "cuda"  # no synchronisation: time the stages of the timed steps
        with load if load is not None else contextlib.nullcontext():
            engine.timer.reset()
            engine.timer.enabled = inline_stages
            t_start = time.perf_counter()
            try:
                for i in range(timed):
                    t0 = time.perf_counter()
                    out = step(batch_at(warmup + i))  # returns host uint8: synchronised
                    latencies.append((time.perf_counter() - t0) * 1e3)
                    peak_rss = max(peak_rss, rss_mb())
            finally:
                engine.timer.enabled = False
            total_s = time.perf_counter() - t_start
            if inline_stages:
                stage_ms = stage_breakdown(engine.timer, latencies)
            elif stages:
                stage_ms, stage_step_ms = stage_pass(engine, step, [batch_at(i) for i in range(max(1, min(timed, 5)))])
    compile_here = {k: v for k, v in (getattr(engine, "compile_seconds", None) or {}).items()
                    if k.endswith(f"@{batch}")}
    result: dict[str, Any] = {
        "batch": batch,
        "frames_timed": timed * batch,
        "steps_timed": timed,
        "ms_per_step_mean": statistics.fmean(latencies),
        "ms_per_step_p50": _percentile(latencies, 50),
        "ms_per_step_p95": _percentile(latencies, 95),
        "ms_per_frame": statistics.fmean(latencies) / batch,
        "fps": timed * batch / total_s,
        "fps_p50": batch / (_percentile(latencies, 50) / 1e3) if latencies else float("nan"),  # B / median step
        "source_ms": source_ms,
        "warmup_s": [round(t, 3) for t in warm_times],
        "compile_s": _compile_total(compile_here),  # this batch size's first calls
        "compile_s_by_function": compile_here or None,
        "stages_ms": stage_ms,
        "stages_nested": dict(engine.timer.parents),
        "stages_from": "timed steps" if inline_stages else "separate pass" if stages else None,
        "stage_pass_ms_per_step": stage_step_ms,
        "output_shape": list(out.shape),
    }
    if device.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["peak_memory_kind"] = "cuda max allocated"
    else:
        result["peak_memory_mb"] = peak_rss
        result["peak_memory_kind"] = "process RSS (sampled per step)"
    for attr in ("precision", "precisions", "precision_source", "compiled", "uses_cuda_graph", "uses_kernels",
                 "plan_report"):
        if hasattr(engine, attr):
            result[attr] = getattr(engine, attr)
    return result


def profile_step(engine: Engine, source: np.ndarray, frames: list[np.ndarray], path: Path) -> None:
    """torch.profiler table of one (already warm) step of `engine`, written to `path`."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if engine.device.type == "cuda" else [])
    with torch.no_grad():
        step = functools.partial(engine.animate_batch, engine.prepare_source(source), anchors=Anchor(),
                                 options=AnimateOptions())
        batch = np.stack(frames[:1])
        step(batch)
        with profile(activities=activities, record_shapes=False) as prof:
            step(batch)
    sort = "cuda_time_total" if engine.device.type == "cuda" else "cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"one {engine.name} step on {device_name(engine.device)}\n"
                    + prof.key_averages().table(sort_by=sort, row_limit=40) + "\n")


def run(cfg: Config, *, modes: list[str], frames: int | None = None, warmup: int | None = None,
        batch: int | Sequence[int] = 1, source: Path | None = None, driving: Path | None = None,
        kernels: bool = False, stages: bool = True, profile: Path | None = None,
        load: int = 0, roofline: bool = True) -> dict[str, Any]:
    """Measure `modes` at each batch size on the same inputs; the results as a JSON-ready dict.

    `frames` and `warmup` count steps (of `batch` driving frames each) per mode and batch size;
    `load`: competing busy processes during each timed run (`CompetingLoad`); `roofline`: the
    matmul peak and each stage's share of it (`roofline.add_roofline`; needs `stages`).
    """
    batches = [batch] if isinstance(batch, int) else list(batch)
    device = resolve_device(cfg.engine.device)
    on_cuda = device.type == "cuda"
    timed = frames if frames is not None else (20 if on_cuda else 3)
    warmup = warmup if warmup is not None else (3 if on_cuda else 1)
    size = cfg.engine.input_size
    models = load_liveportrait(resolve_weights(cfg.engine.weights, download=False), device=device)
    src, drv, inputs = load_inputs(source, driving, max(8, max(batches) * (timed + warmup)), size)
    results: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device_name(device),
            "device_type": device.type,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "git_commit": git_commit(),
            "weights": models.kind,
            "inputs": inputs,
            "input_size": size,
            "batch": batches[0],  # the batch size of "modes"
            "batches": batches,
            "threads": torch.get_num_threads(),
            "threading": cputune.describe(),
            "load": CompetingLoad(load).describe(),
        },
        "modes": {},
        "batches": {str(b): {"modes": {}} for b in batches},
    }
    competing = CompetingLoad(load) if load else None
    for mode in modes:
        log.info("measuring %s", mode)
        engine = build_engine(mode, models, device, cfg.engine, kernels_fallback=False)  # measure what was asked
        for b in batches:
            log.info("measuring %s at batch %d", mode, b)
            measured = measure_mode(engine, src, drv, warmup=warmup, timed=timed, batch=b, stages=stages,
                                    load=competing)
            results["batches"][str(b)]["modes"][mode] = measured
        results["modes"][mode] = results["batches"][str(batches[0])]["modes"][mode]
        if profile is not None and mode == "optimized":
            profile_step(engine, src, drv, profile)
        del engine
        if on_cuda:
            torch.cuda.empty_cache()
    for entry in results["batches"].values():
        if "baseline" in entry["modes"] and "optimized" in entry["modes"]:
            b, o = entry["modes"]["baseline"], entry["modes"]["optimized"]
            entry["speedup"] = {
                "time_per_frame": b["ms_per_frame"] / o["ms_per_frame"],
                "fps": o["fps"] / b["fps"],
                "peak_memory": b["peak_memory_mb"] / o["peak_memory_mb"] if o["peak_memory_mb"] else None,
            }
    if "speedup" in results["batches"][str(batches[0])]:
        results["speedup"] = results["batches"][str(batches[0])]["speedup"]
    if roofline and stages:
        from .roofline import add_roofline

        add_roofline(results, models, device, size)
    if kernels:
        from .kernel_bench import run_kernel_benchmarks

        # fp16 on CUDA, as the optimized engine runs W there; fp32 elsewhere (the reference path)
        dtype = torch.float16 if on_cuda else torch.float32
        results["kernels"] = run_kernel_benchmarks(device, dtype, repeats=50 if on_cuda else 3,
                                                   warmup=5 if on_cuda else 1, batch=batches[0])
    results["meta"]["compiled"] = compile_counts()  # the whole process: the modes and any kernel bench
    return results
