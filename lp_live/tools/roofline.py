"""The bench's roofline: this machine's matmul peak per dtype, each stage's GFLOP per frame, and
what share of the peak each engine's stages reach.

GFLOP per frame are counted once per network, on the baseline engine's own frame (torch's
`FlopCounterMode`: convolutions and matrix products; element-wise work, norms and `grid_sample`
count nothing), so both engines are credited with the same work: the optimized engine's
cheaper rewrites (polyphase SPADE) show as a higher achieved rate, not as less work. The
counts are cached in <user cache>/lp-live/flops.json per network kind, input size and torch
version. The peak is a square GEMM in each dtype the machine runs natively, with the bench's
threading: a second or two.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..core import cputune, usercache
from ..engine import Anchor, AnimateOptions
from ..engine.base import StageTimer
from ..engine.baseline import BaselineEngine
from ..engine.dtypes import NAMES
from ..engine.plan_choice import isa_runs_bf16
from ..engine.precision import cpu_supports_bf16

log = logging.getLogger(__name__)

CACHE_NAME = "flops.json"
ROOFLINE_STAGES = ("motion", "warping", "generator")  # the stages with a FLOP count worth a rate
GEMM_SIZES = (512, 1024)  # square GEMMs; the best rate of either is the peak
PEAK_SECONDS = 0.6  # per dtype


# ---------------------------------------------------------------------------------------------
# peak
# ---------------------------------------------------------------------------------------------
def peak_dtypes(device: torch.device) -> list[torch.dtype]:
    """The dtypes whose peak is measured: float32, and the half types the device runs natively."""
    if device.type == "cuda":
        return [torch.float32, torch.float16, torch.bfloat16]
    return [torch.float32, torch.bfloat16] if cpu_supports_bf16() and isa_runs_bf16() else [torch.float32]


def _gemms(device: torch.device, dtype: torch.dtype, size: int) -> list:
    """Two ways to run a (size x size) @ (size x size) GEMM: `torch.mm` (the BLAS: MKL on x86
    builds, which may take a generic path on AMD CPUs) and a 1x1 Conv2d over size x size pixels
    in channels_last (oneDNN, the library W's and G's convolutions run on)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
        side = int(size**0.5)
        x = torch.randn(1, size, side, size // side, device=device).to(dtype, memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(size, size, 1, bias=False).to(device, dtype, memory_format=torch.channels_last)
    out = torch.empty(size, size, device=device, dtype=dtype)
    return [lambda: torch.mm(a, b, out=out), lambda: conv(x)]


def matmul_peak(device: torch.device, dtype: torch.dtype, *, sizes: tuple[int, ...] = GEMM_SIZES,
                seconds: float = PEAK_SECONDS) -> float:
    """The best GFLOP/s of one square GEMM in `dtype` over about `seconds`, over the `sizes` and
    both libraries (`_gemms`): the best single run is the one least disturbed on a shared machine."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    best = 0.0
    cases = [(size, gemm) for size in sizes for gemm in _gemms(device, dtype, size)]
    for size, gemm in cases:
        gemm()  # primitive creation, caches
        sync()
        t_end = time.perf_counter() + seconds / len(cases)
        while True:
            t0 = time.perf_counter()
            gemm()
            sync()
            t1 = time.perf_counter()
            best = max(best, 2 * size**3 / (t1 - t0) / 1e9)
            if t1 > t_end:
                break
    return best


def measure_peaks(device: torch.device) -> dict[str, float]:
    """{dtype name: GEMM GFLOP/s} for `peak_dtypes`."""
    with torch.no_grad():
        peaks = {NAMES[d]: matmul_peak(device, d) for d in peak_dtypes(device)}
    log.info("matmul peak: %s", ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    return peaks


# ---------------------------------------------------------------------------------------------
# FLOP per frame
# ---------------------------------------------------------------------------------------------
class FlopStageTimer(StageTimer):
    """A `StageTimer` that counts FLOPs (`FlopCounterMode`) inside each stage instead of timing it."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        self.flops: dict[str, int] = {}

    def stage(self, name: str):
        return _CountedStage(self, name)


class _CountedStage:
    def __init__(self, timer: FlopStageTimer, name: str) -> None:
        self.timer, self.name = timer, name
        self.counter = FlopCounterMode(display=False)

    def __enter__(self) -> None:
        self.counter.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.counter.__exit__(*exc)
        self.timer.flops[self.name] = self.timer.flops.get(self.name, 0) + self.counter.get_total_flops()


def count_stage_flops(engine, input_size: int) -> dict[str, int]:
    """FLOPs per stage of one frame (batch 1) of `engine` at `input_size`: {stage: FLOPs}. The
    engine's timer is swapped for a counting one during the frame, then put back."""
    rng = np.random.default_rng(0)
    source, driving = (rng.integers(0, 256, (input_size, input_size, 3), dtype=np.uint8) for _ in range(2))
    timer, counting = engine.timer, FlopStageTimer(engine.device)
    try:
        with torch.no_grad():
            state = engine.prepare_source(source)
            engine.timer = counting
            engine.animate(state, driving, anchor=Anchor(), options=AnimateOptions())
    finally:
        engine.timer = timer
    return dict(counting.flops)


def flops_key(models, input_size: int) -> str:
    return f"{models.kind} weights | input {input_size} | torch {cputune.torch_version()}"


def stage_flops(models, device: torch.device, input_size: int) -> tuple[dict[str, int], str]:
    """({stage: FLOPs per frame}, "cache" or "counted"): counted once per network kind, input size
    and torch version, then read from the user cache."""
    key = flops_key(models, input_size)
    entry = usercache.cache_entry(CACHE_NAME, key)
    if entry is not None and isinstance(entry.get("flops"), dict):
        try:
            return {str(k): int(v) for k, v in entry["flops"].items()}, "cache"
        except (TypeError, ValueError) as e:
            log.warning("ignoring the cached FLOP counts for %s (%s)", key, e)
    t0 = time.perf_counter()
    flops = count_stage_flops(BaselineEngine(models, device, input_size=input_size), input_size)
    log.info("FLOPs per stage counted in %.1f s: %s", time.perf_counter() - t0, flops)
    usercache.store_cache_entry(CACHE_NAME, key, {"flops": flops})
    return flops, "counted"


# ---------------------------------------------------------------------------------------------
# the figures
# ---------------------------------------------------------------------------------------------
def stage_dtype(mode: dict[str, Any], stage: str, device: torch.device) -> str:
    """The dtype a stage's matrix work runs in, by the engine's reported precisions (baseline:
    float32 on CPUs, fp16 autocast on CUDA)."""
    precisions = mode.get("precisions") or {}
    if stage in precisions:
        return precisions[stage]
    return "fp16" if device.type == "cuda" else "fp32"


def stage_rates(mode: dict[str, Any], flops: dict[str, int], peaks: dict[str, float],
                device: torch.device) -> dict[str, dict[str, Any]]:
    """Per stage of one measured engine: GFLOP per frame, achieved GFLOP/s (by its per-frame
    stage time) and the share of the peak of the stage's dtype (None where that peak is unknown)."""
    out = {}
    batch = mode.get("batch", 1)
    for stage in ROOFLINE_STAGES:
        ms = (mode.get("stages_ms") or {}).get(stage)
        gflop = flops.get(stage, 0) / 1e9
        if not ms or gflop <= 0:
            continue
        achieved = gflop / (ms / batch / 1e3)
        dtype = stage_dtype(mode, stage, device)
        peak = peaks.get(dtype)
        out[stage] = {"gflop_per_frame": gflop, "ms_per_frame": ms / batch, "gflop_per_s": achieved,
                      "dtype": dtype, "peak_gflop_per_s": peak, "share_of_peak": achieved / peak if peak else None}
    return out


def add_roofline(results: dict[str, Any], models, device: torch.device, input_size: int) -> None:
    """Add the peaks, the FLOP counts and each engine's per-stage rates to `results` (in place):
    `results["roofline"]` and `"roofline"` in every mode entry of every batch size."""
    flops, source = stage_flops(models, device, input_size)
    peaks = measure_peaks(device)
    results["roofline"] = {"peak_gflop_per_s": peaks, "peak_gemm": f"best square matmul of sizes {GEMM_SIZES}",
                           "flops_per_frame": flops, "flops_source": source, "flop_counter": "FlopCounterMode"}
    for entry in results["batches"].values():
        for mode in entry["modes"].values():
            mode["roofline"] = stage_rates(mode, flops, peaks, device)
