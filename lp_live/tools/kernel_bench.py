"""`lp-live bench --kernels`: each kernel against the PyTorch path it replaces, and W's three
sampling steps through the fused sampler against the PyTorch one (`samplers.py`), in one run.

On CUDA (with triton) the kernels are the Triton ones; elsewhere `Backend.AUTO` resolves to
the PyTorch reference, so the "kernels" column times the reference path (useful to exercise
the benchmark, not as a speed claim). Times are medians over `repeats` calls after `warmup`
calls, taken with CUDA events on CUDA and `perf_counter` on CPU.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ..kernels import reference
from ..kernels.backend import Backend, resolve_backend
from ..kernels.ops import COMPRESSED_CHANNELS, grid_sample_3d, hourglass_input, softmax_deformation
from ..kernels.samplers import FusedSampler, GridSampleSampler, Sampler
from ..models.warping import sparse_motion

NUM_KP = 21
FEATURE_CHANNELS = 32  # reshape_channel of the official W


def run_kernel_benchmarks(
    device: str | torch.device = "cuda",
    dtype: torch.dtype = torch.float32,
    repeats: int = 50,
    *,
    warmup: int = 5,
    batch: int = 1,
    size: tuple[int, int, int] = (16, 64, 64),
    seed: int = 0,
) -> dict[str, Any]:
    """Median milliseconds per call, kernel vs PyTorch, and W's sampling through each sampler.

    Args:
        device: where to run; "cuda" times the Triton kernels.
        dtype: feature dtype (float32, float16, bfloat16) of the single kernels. Coordinates
            stay float32, and so do the samplers' inputs (as the optimized engine feeds them).
        repeats: timed calls per measurement (median reported).
        warmup: untimed calls first (Triton compilation, cuDNN autotuning).
        batch: B.
        size: (D, H, W) of the feature volume; W needs D = 16 and H, W divisible by 32.
        seed: for the synthetic inputs.

    Returns a dict: device, dtype, backend ("triton" or "reference"), batch, size, repeats,
    `kernels` {name: {kernel_ms, torch_ms, speedup, max_abs_diff}} and `samplers`
    {kernel_ms, torch_ms, speedup, max_abs_diff}: hourglass input, deformation and warp through
    `FusedSampler` against `GridSampleSampler` (max_abs_diff of the warped volume).
    """
    device = torch.device(device)
    d, h, w = size
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (scale * torch.randn(*shape, generator=gen)).to(device)

    feature = randn(batch, FEATURE_CHANNELS, d, h, w).to(dtype)
    compressed = torch.relu(randn(batch, COMPRESSED_CHANNELS, d, h, w)).to(dtype)
    kp_source = ((torch.rand(batch, NUM_KP, 3, generator=gen) * 1.6) - 0.8).to(device)
    kp_driving = kp_source + randn(batch, NUM_KP, 3, scale=0.05)
    mask_logits = randn(batch, NUM_KP + 1, d, h, w, scale=2.0).to(dtype)
    deformation = (reference.identity_grid(d, h, w, device) + randn(batch, d, h, w, 3, scale=0.03)).contiguous()

    slots = NUM_KP + 1
    repeated = compressed[:, None].expand(batch, slots, *compressed.shape[1:]).reshape(batch * slots, -1, d, h, w)
    sparse = sparse_motion(reference.identity_grid(d, h, w, device), kp_driving, kp_source)
    sparse = sparse.reshape(batch * slots, d, h, w, 3)

    def ref_grid_sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return reference.grid_sample_3d(x, grid)  # F.grid_sample (in float32 for fp16/bf16 features)

    cases: dict[str, tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]] = {
        # the final warp: (B, 32, 16, 64, 64) sampled at the deformation
        "grid_sample_3d (warp)": (
            lambda: grid_sample_3d(feature, deformation),
            lambda: ref_grid_sample(feature, deformation),
        ),
        # the dense motion's sampler alone, on the materialised repeated volume
        "grid_sample_3d (22 slots, repeated)": (
            lambda: grid_sample_3d(repeated, sparse),
            lambda: ref_grid_sample(repeated, sparse),
        ),
        # sparse motions + repeat + sampler + heatmaps + concatenation
        "hourglass_input": (
            lambda: hourglass_input(compressed, kp_driving, kp_source),
            lambda: reference.hourglass_input(compressed, kp_driving, kp_source),
        ),
        # softmax over the 22 slots + weighted sum of the 22 grids
        "softmax_deformation": (
            lambda: softmax_deformation(mask_logits, kp_driving, kp_source),
            lambda: reference.softmax_deformation(mask_logits, kp_driving, kp_source),
        ),
    }

    result: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "backend": resolve_backend(Backend.AUTO, feature).value,
        "batch": batch,
        "size": list(size),
        "repeats": repeats,
        "kernels": {},
    }
    with torch.inference_mode():
        for name, (kernel, torch_path) in cases.items():
            result["kernels"][name] = _compare(kernel, torch_path, device, warmup, repeats)

        fused, plain = (cls((d, h, w), device=device) for cls in (FusedSampler, GridSampleSampler))
        inputs = (feature.float(), compressed.float(), mask_logits.float(), kp_driving, kp_source)
        result["samplers"] = _compare(lambda: _sample(fused, *inputs), lambda: _sample(plain, *inputs), device,
                                      warmup, repeats)
    return result


def format_kernel_benchmarks(result: dict[str, Any]) -> str:
    """A plain-text table of `run_kernel_benchmarks`' result."""
    lines = [
        f"kernels on {result['device_name']} ({result['device']}), {result['dtype']}, backend {result['backend']}, "
        f"batch {result['batch']}, volume {'x'.join(map(str, result['size']))}, median of {result['repeats']}",
        f"{'':38s} {'kernel ms':>10s} {'torch ms':>10s} {'speedup':>8s} {'max |diff|':>11s}",
    ]
    rows = [(name, r["kernel_ms"], r["torch_ms"], r["speedup"], r["max_abs_diff"])
            for name, r in result["kernels"].items()]
    r = result["samplers"]
    rows.append(("W sampling (fused vs PyTorch sampler)", r["kernel_ms"], r["torch_ms"], r["speedup"],
                 r["max_abs_diff"]))
    lines += [f"{n:38s} {k:10.3f} {t:10.3f} {s:7.2f}x {e:11.2e}" for n, k, t, s, e in rows]
    return "\n".join(lines)


def _sample(sampler: Sampler, feature: torch.Tensor, compressed: torch.Tensor, mask_logits: torch.Tensor,
            kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
    """W's three sampling steps; the hourglass input is reduced into the mask logits so it is used."""
    x = sampler.hourglass_input(compressed, kp_driving, kp_source)
    logits = mask_logits + x[:, : mask_logits.shape[1]]
    return sampler.warp(feature, sampler.deformation(logits, kp_driving, kp_source))


def _compare(
    kernel: Callable[[], torch.Tensor], torch_path: Callable[[], torch.Tensor], device: torch.device,
    warmup: int, repeats: int,
) -> dict[str, float]:
    diff = (kernel().float() - torch_path().float()).abs().max().item()  # also the first warm-up call
    warmup = max(warmup - 1, 0)
    kernel_ms = _median_ms(kernel, device, warmup, repeats)
    torch_ms = _median_ms(torch_path, device, warmup, repeats)
    return {"kernel_ms": kernel_ms, "torch_ms": torch_ms, "speedup": torch_ms / kernel_ms, "max_abs_diff": diff}


def _median_ms(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(repeats):
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
