"""bf16 or float32 per network on this CPU, by measurement (the optimized engine's `precision="auto"`).

A CPU flag says bf16 *can* run natively, not that it is faster: on this project's 2-core Intel(R)
Xeon(R) Processor with AVX-512 BF16 but no AMX, oneDNN's bf16 convolutions ran slower than
float32 ones (W-shaped Conv3d's 1.2-2x, G-shaped Conv2d's 1.3-1.6x, eager, busy machine),
while with AMX bf16 is several times faster. So `cpu_precisions()` times convs shaped like
the bulk of W's and of G's work in both dtypes, each in the layout the engine would use for
that dtype (`default_plan`: channels_last and the split mask conv for bf16), and keeps bf16
for a network only where it takes at most `BF16_MIN_GAIN` of the float32 time (bf16 costs
accuracy, so it must clearly pay). Only convolutions are timed: they are most of W's and G's
time, and the element-wise work around them is fused by inductor (memory-bound, where bf16
halves the traffic). About a second, once: the choice is cached per CPU model, torch version,
thread count and wait policy in <user cache>/lp-live/cpu-precision.json. M, F, the MLPs and
every coordinate stay float32 regardless (the engine's precision policy).
"""

from __future__ import annotations

import logging
import os
import time

import torch
from torch import nn

from ..core import cputune, usercache
from .dtypes import DTYPES, NAMES
from .plan import default_plan
from .rewrites import SplitConv3d

log = logging.getLogger(__name__)

CACHE_NAME = cputune.PRECISION_CACHE_NAME
NETWORKS = ("warping", "generator")
BF16_MIN_GAIN = 0.9
CANDIDATES = (torch.float32, torch.bfloat16)  # the dtypes timed per network


def proxy_convs(network: str, dtype: torch.dtype) -> list[tuple[nn.Module, torch.Tensor]]:
    """(conv, input) pairs shaped like the bulk of `network`'s work at a reduced size, in `dtype`
    and the engine's layout for it; random weights (the rate does not depend on the values)."""
    plan = default_plan(torch.device("cpu"), dtype)
    with torch.random.fork_rng(devices=[]):  # the global RNG stream is not disturbed
        torch.manual_seed(0)
        if network == "warping":
            fmt = torch.channels_last_3d if plan.warping_channels_last else torch.contiguous_format
            mask = nn.Conv3d(142, 22, 7, padding=3)
            chunk = plan.split_channels
            specs = [
                (nn.Conv3d(110, 64, 3, padding=1), (1, 110, 16, 16, 16)),  # the hourglass's first conv
                (nn.Conv3d(256, 128, 3, padding=1), (1, 256, 16, 8, 8)),  # a decoder level
                (SplitConv3d(mask, tuple(range(chunk, 142, chunk)) if chunk else ()), (1, 142, 8, 16, 16)),  # mask
            ]
        elif network == "generator":
            fmt = torch.channels_last if plan.generator_channels_last else torch.contiguous_format
            specs = [
                (nn.Conv2d(512, 512, 3, padding=1), (1, 512, 16, 16)),  # the SPADE resblocks
                (nn.Conv2d(256, 256, 3, padding=1), (1, 256, 32, 32)),  # an upsampling block
            ]
        else:
            raise ValueError(f"unknown network {network!r}; choose one of {', '.join(NETWORKS)}")
        return [(conv.to(dtype=dtype, memory_format=fmt).eval().requires_grad_(False),
                 torch.randn(shape).to(dtype=dtype, memory_format=fmt)) for conv, shape in specs]


def measure(repeats: int = 2) -> dict[str, dict[str, float]]:
    """Least ms over `repeats` of each network's proxy convs per dtype: {network: {"fp32": ms, "bf16": ms}}."""
    timings: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for network in NETWORKS:
            cases = {NAMES[dtype]: proxy_convs(network, dtype) for dtype in CANDIDATES}
            best = dict.fromkeys(cases, float("inf"))
            for convs in cases.values():  # oneDNN primitive creation
                for conv, x in convs:
                    conv(x)
            for _ in range(repeats):  # dtypes alternate: a change of machine load hits both
                for name, convs in cases.items():
                    t0 = time.perf_counter()
                    for conv, x in convs:
                        conv(x)
                    best[name] = min(best[name], (time.perf_counter() - t0) * 1e3)
            timings[network] = best
    return timings


def pick(timings: dict[str, dict[str, float]]) -> dict[str, str]:
    """bf16 for a network where it takes at most `BF16_MIN_GAIN` of the float32 time, else fp32."""
    return {n: "bf16" if t["bf16"] <= BF16_MIN_GAIN * t["fp32"] else "fp32" for n, t in timings.items()}


def cache_key() -> str:
    """The cache key: the machine (`cputune.machine_key`) and this process's threading."""
    return (f"{cputune.machine_key()} | {torch.get_num_threads()} threads | "
            f"{os.environ.get('OMP_WAIT_POLICY', 'default')} wait")


def cpu_precisions() -> tuple[dict[str, torch.dtype], str, dict]:
    """({network: dtype} for W and G, how it was decided, timings) on this CPU, which has native
    bf16 (`precision.resolve_precisions` asks only then). Decided: "cache" or "measured"."""
    key = cache_key()
    entry = usercache.cache_entry(CACHE_NAME, key)
    if entry is not None:
        try:
            choice = {n: DTYPES[entry["precisions"][n]] for n in NETWORKS}
            if not set(choice.values()) <= set(CANDIDATES):
                raise KeyError(f"not one of {[NAMES[d] for d in CANDIDATES]}: {entry['precisions']}")
            return choice, "cache", entry.get("timings", {})
        except (KeyError, TypeError) as e:
            log.warning("ignoring the cached CPU precisions for %s (%s: %s)", key, type(e).__name__, e)
    t0 = time.perf_counter()
    timings = measure()
    names = pick(timings)
    log.info("CPU precision measured in %.1f s: %s (%s)", time.perf_counter() - t0, names, timings)
    usercache.store_cache_entry(CACHE_NAME, key, {"precisions": names, "timings": timings})
    return {n: DTYPES[v] for n, v in names.items()}, "measured", timings
