"""Precision policy of the optimized engine: which dtype W's and G's convolutions run in.

The MLPs, the keypoint math, F, M on CPUs and everything that is a coordinate stay float32
(ARCHITECTURE §8.2; README trap 15: W is the module most sensitive to low precision). The
convolutions of W and all of G run in the dtype chosen here once, when the engine is built:
fp16 on CUDA; on CPUs with AVX-512 BF16 / AMX, bf16 or float32 per network, whichever a short
timing at build finds faster (`cpu_precision`; cached), else float32.
"""

from __future__ import annotations

import logging

import torch

from ..core.cputune import cpu_features
from ..core.modes import PRECISIONS
from .cpu_precision import NETWORKS, cpu_precisions
from .dtypes import DTYPES

log = logging.getLogger(__name__)


def cpu_supports_bf16() -> bool:
    """True if this CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX-BF16).

    `torch.backends.cpu.get_cpu_capability()` says only "AVX512" on such CPUs, so the
    (private, long-standing) `torch.cpu` probes are asked first, then /proc/cpuinfo.
    """
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(p is not None for p in probes):
        return any(p() for p in probes)
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_features()))


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of W's and G's convolutions for `precision` ("auto", "fp32", "bf16", "fp16").

    For "auto" on a CPU this is the candidate the CPU flags allow (bf16 where it is native);
    the engine then measures per network whether it beats float32 (`resolve_precisions`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        dtype = DTYPES[precision]
        if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_supports_bf16():
            log.warning("precision bf16 on a CPU without AVX-512 BF16/AMX: emulated, probably slower than fp32")
        if device.type == "cpu" and dtype == torch.float16 and not getattr(torch.cpu, "_is_amx_fp16_supported",
                                                                             lambda: False)():
            log.warning("precision fp16 on a CPU without AMX-FP16: probably slower than fp32")
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

