"""Precision policy of the optimized engine: which dtype W's and G's convolutions run in.

The MLPs, the keypoint math, F, M on CPUs and everything that is a coordinate stay float32
(ARCHITECTURE §8.2; README trap 15: W is the module most sensitive to low precision). The
convolutions of W and all of G run in the dtype chosen here once, when the engine is built:
fp16 on CUDA; on CPUs with AVX-512 BF16 / AMX, bf16 or float32 per network, whichever a short
timing at build finds faster (`cpu_precision`; cached), else float32. An explicit bf16 or fp16
on a CPU that only emulates it (hundreds of times slower) is refused by the CLI before models
load (`check_native`), unless --force-precision; the Python API only warns.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from ..core import cpuisa
from ..core.errors import UserError
from ..core.modes import PRECISIONS
from .cpu_precision import NETWORKS, cpu_precisions
from .dtypes import DTYPES, NAMES

log = logging.getLogger(__name__)

# the CPU flags that make each low-precision dtype native (oneDNN's matrix instructions for it)
NATIVE_FLAGS = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("avx512_fp16", "amx_fp16")}


class EmulatedPrecisionError(UserError):
    """An explicit bf16/fp16 on a CPU that would only emulate it (`check_native`)."""


def cpu_supports_bf16() -> bool:
    """True if this CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX-BF16).

    `torch.backends.cpu.get_cpu_capability()` says only "AVX512" on such CPUs, so the
    (private, long-standing) `torch.cpu` probes are asked first, then /proc/cpuinfo; under the
    `LP_LIVE_CPU_ISA` override (`core.cpuisa`) only the flags it leaves.
    """
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if cpuisa.override() is None and all(p is not None for p in probes):
        return any(p() for p in probes)
    return bool(set(NATIVE_FLAGS[torch.bfloat16]) & cpuisa.cpu_flags())


def cpu_supports_fp16() -> bool:
    """True if this CPU has native fp16 matrix instructions (AVX-512 FP16 or AMX-FP16)."""
    probe = getattr(torch.cpu, "_is_amx_fp16_supported", None)
    if cpuisa.override() is None and probe is not None and probe():
        return True
    return bool(set(NATIVE_FLAGS[torch.float16]) & cpuisa.cpu_flags())


def native_on_cpu(dtype: torch.dtype) -> bool:
    """True for float32, and for bf16/fp16 where this CPU has native instructions for them."""
    if dtype == torch.bfloat16:
        return cpu_supports_bf16()
    if dtype == torch.float16:
        return cpu_supports_fp16()
    return True


def emulation_slowdown(dtype: torch.dtype, repeats: int = 3) -> float:
    """How many times slower than float32 a small 3-D conv (W's kind of work) runs in `dtype` here:
    one thread, least of `repeats` each; tens of milliseconds where `dtype` is emulated."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a team thread stalled by another process would decide the ratio otherwise
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            conv, x = nn.Conv3d(16, 16, 3, padding=1).eval(), torch.randn(1, 16, 4, 16, 16)
            best = {}
            for dt in (torch.float32, dtype):
                c, xx = conv.to(dt), x.to(dt)
                c(xx)  # oneDNN primitive creation
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    c(xx)
                    times.append(time.perf_counter() - t0)
                best[dt] = min(times)
    finally:
        torch.set_num_threads(threads)
    return best[dtype] / max(best[torch.float32], 1e-9)


def check_native(precision: str, device: torch.device) -> None:
    """Refuse an explicit `precision` that `device`, a CPU, would only emulate (the CLI asks before
    models load, unless --force-precision): the message gives the slowdown measured here.

    Raises:
        EmulatedPrecisionError: bf16 or fp16 asked for on a CPU without native instructions for it.
    """
    if device.type != "cpu" or precision not in ("bf16", "fp16"):
        return
    dtype = DTYPES[precision]
    if native_on_cpu(dtype):
        return
    capped = f"; {cpuisa.ISA_VAR}={cpuisa.override()}" if cpuisa.override() else ""
    slowdown = emulation_slowdown(dtype)
    raise EmulatedPrecisionError(
        f"--precision {precision}: this CPU has no native {precision} ({' or '.join(NATIVE_FLAGS[dtype])} "
        f"missing{capped}), so it is emulated: a 3-D convolution measured {slowdown:.0f}x slower than fp32 here; "
        f"use --precision auto or fp32, or add --force-precision to run {precision} anyway")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of W's and G's convolutions for `precision` ("auto", "fp32", "bf16", "fp16").

    For "auto" on a CPU this is the candidate the CPU flags allow (bf16 where it is native);
    the engine then measures per network whether it beats float32 (`resolve_precisions`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        dtype = DTYPES[precision]
        if device.type == "cpu" and not native_on_cpu(dtype):
            log.warning("precision %s on a CPU without native %s (%s): emulated, far slower than fp32",
                        NAMES[dtype], NAMES[dtype], " or ".join(NATIVE_FLAGS[dtype]))
        return dtype
    if device.type == "cuda":
        return torch.float16  # the official half-precision dtype; no bf16-specific gain on GPUs
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return torch.float32


def resolve_precisions(precision: str, device: torch.device) -> tuple[dict[str, torch.dtype], str]:
    """({"warping": dtype, "generator": dtype}, how it was decided) for `precision` on `device`.

    "auto" on a CPU with native bf16 times bf16 against float32 per network, or reads the
    cached result (`cpu_precision.cpu_precisions`); without native bf16 it is float32 ("no
    native bf16": emulated bf16 is not measured); everything else is `resolve_precision`.
    """
    if precision == "auto" and device.type == "cpu":
        if not cpu_supports_bf16():
            return dict.fromkeys(NETWORKS, torch.float32), "no native bf16"
        dtypes, source, _ = cpu_precisions()
        return dtypes, source
    dtype = resolve_precision(precision, device)
    return {"warping": dtype, "generator": dtype}, "requested" if precision != "auto" else "default"

