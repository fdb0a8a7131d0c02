"""The CPU's instruction-set flags as lp-live sees them, and the one override that caps them.

Why an override: every machine CI ran on so far had AVX-512, so an AVX2-only CPU (where bf16 is
emulated, hundreds of times slower) was never tested. `LP_LIVE_CPU_ISA=avx2` makes lp-live's own
detection (`cpu_flags`: the precision choice, the bench header, doctor) treat this CPU as
AVX2-only. It changes nothing in torch: set it together with the variables that cap torch's own
code paths, `EMULATION_ENV[level]` (`make test-avx2` sets them all, `tests/test_cpuisa.py` checks
that each takes effect):

- ATEN_CPU_CAPABILITY: ATen's vectorised kernels (`torch.backends.cpu.get_cpu_capability()`), and
  the ISA inductor generates C++ for (`torch._inductor.cpu_vec_isa.pick_vec_isa()` follows it
  while `torch._inductor.config.cpp.simdlen` is unset);
- ONEDNN_MAX_CPU_ISA: oneDNN's convolutions and matmuls (`ONEDNN_VERBOSE=1` prints the ISA);
- TORCHINDUCTOR_CPP_MARCH: inductor compiles its C++ with `-march=native` otherwise, which lets
  the compiler use AVX-512 in the generated kernels whatever the picked ISA;
- MKL_ENABLE_INSTRUCTIONS: MKL's float32 GEMMs (`MKL_VERBOSE=1` prints the ISA).

This module imports no torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

ISA_VAR = "LP_LIVE_CPU_ISA"
# each level: the prefixes of the /proc/cpuinfo flags it hides (the instruction sets above it)
LEVELS: dict[str, tuple[str, ...]] = {
    "avx2": ("avx512", "amx", "avx_vnni", "avx_ne_convert", "avx_ifma"),
    "avx512": ("avx512_bf16", "avx512_fp16", "amx"),
    "avx512_bf16": ("avx512_fp16", "amx"),
}
# the torch-side variables that cap torch at each level (set them with ISA_VAR, before torch loads)
EMULATION_ENV: dict[str, dict[str, str]] = {
    "avx2": {ISA_VAR: "avx2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "TORCHINDUCTOR_CPP_MARCH": "x86-64-v3", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def override() -> str | None:
    """The level `LP_LIVE_CPU_ISA` caps this CPU at, or None where it is unset (or empty).

    Raises:
        ValueError: the variable names no level.
    """
    value = os.environ.get(ISA_VAR, "").strip().lower()
    if not value:
        return None
    if value not in LEVELS:
        raise ValueError(f"{ISA_VAR}={value!r} is not an instruction-set level; use one of {', '.join(LEVELS)} "
                         "or leave it unset")
    return value


def check_override() -> None:
    """A misspelt LP_LIVE_CPU_ISA is a one-line error (UserError), not silently no cap."""
    try:
        override()
    except ValueError as e:
        raise UserError(str(e)) from None


def _cpuinfo_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "flags":
                return set(value.split())
    except OSError:
        pass
    return set()


def cpu_flags() -> set[str]:
    """The CPU flags /proc/cpuinfo lists (empty where unreadable), less those `LP_LIVE_CPU_ISA` hides."""
    flags = _cpuinfo_flags()
    level = override()
    if level is None:
        return flags
    return {f for f in flags if not f.startswith(LEVELS[level])}
