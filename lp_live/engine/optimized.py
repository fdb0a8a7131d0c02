"""The optimized engine: same networks and keypoint math as the baseline, run for speed.

What differs from `BaselineEngine` (and why):

* **Source once.** `cache_source` stores F(source), x_s and the dense-motion network's
  compressed volume (`compress_source`, the only source-only part of W); every frame reuses
  them. One source for a batch of B driving frames is broadcast (views, matmul broadcasting,
  stride-0 kernel reads), never copied per slot; a batch mixing sources (one `SourceState`
  per slot) stacks the slots' tensors.
* **Precision per module.** The MLPs, the keypoint math, F, M on CPUs and everything that
  is a coordinate stay float32 (on CUDA, M's backbone runs in the W/G dtype, `FastMotion`):
  keypoints, the identity grid, sparse motions, heatmaps, the 22-way
  mask softmax, the deformation and both `grid_sample`s (ARCHITECTURE §8.2; README trap 15:
  W is the module most sensitive to low precision). The convolutions of W (hourglass, mask,
  occlusion, third, fourth) and all of G run in `precision`: fp16 on CUDA; on CPUs with
  AVX-512 BF16 / AMX, bf16 or float32 per network, whichever a short timing at build finds
  faster (`cpu_precision`; cached), else float32; `precision="fp32"` forces float32
  everywhere. Conv outputs that feed a softmax or sigmoid are cast back to float32 first.
* **Private copies.** W and G are deep-copied (the baseline engine shares the originals, and
  the live app switches engines per frame): spectral norm folded into plain conv weights (in
  float32, then cast), the hourglass's (1, 2, 2) average pool rewritten as a mean (CPUs have
  no bf16/fp16 `avg_pool3d`), weights cast and laid out channels_last. The deformation is
  computed as grid + mask-weighted keypoint shifts (one small matmul; inductor made the
  official 22-slot strided sum a 2.3 s loop). M is compiled as is, on CUDA wrapped by
  `FastMotion` (freezing snapshots its weights; the shared module is not touched). W's
  identity grid is a buffer of `FastWarping`, so a captured graph reads a tensor the engine owns.
* **CPU shape fixes (`Layout`).** Exact rewrites that dodge slow oneDNN paths or save work,
  each equal to the original up to float32 rounding (see `default_layout` for timings): the
  142-channel 7x7x7 mask conv and the occlusion conv over 64-channel input slices
  (`SplitConv3d`), hourglass convs with 512+ inputs over 256-channel slices, the occlusion
  conv as a Conv3d (no fold copy), SPADE's shared conv on the low-resolution segmap
  (`NearestUpConv2d`), source volumes channels_last_3d for `grid_sample`, and the batch-1
  warp's `grid_sample` split over the threads (`grid_sample_split`).
* **torch.compile.** M, W and G are compiled as three functions (inductor, `fullgraph=True`,
  `dynamic=False`: one graph per batch size, errors raised, never a silent eager fallback),
  with inductor *freezing* (weights become constants: conv+BN folding, oneDNN weight
  prepacking on CPUs). Three functions instead of one so that a timed run can report W and
  G apart; the boundary costs one materialised feature map. The FX graph cache lives in
  `inductor_cache_dir()` so a second process reuses the compiled kernels. The first call per
  batch size is timed into `compile_seconds` (compile + warm-up + graph capture + one run).
* **CUDA graphs (CUDA only).** Per batch size, M, then W, G and the uint8 conversion are
  captured as CUDA graphs on static buffers (one graph per stage, one shared memory pool)
  and replayed on the engine's own stream. W's graphs come in two kinds per batch size:
  one source (batch-1 source buffers shared by every batch size, broadcast in the graph)
  and a source per slot (batch-B source buffers, a slot refreshed when its state changes).
  The per-frame path never synchronises the host
  except to wait for the final pinned, non-blocking device->host copy (and, on the very
  first driving frame, the anchor's hull volume in the shared keypoint math). The source
  tensors are copied into the static buffers when the source changes.
* **Pre/post on the device.** uint8 -> float, resize and normalisation before M/F, and the
  official clip/scale/clip/truncate conversion to uint8 after G, run on the device.

The `StageTimer` stages are the baseline's ("copy_h2d", "pre", "motion", "stitching",
"warping", "generator", "post", "copy_d2h"); with the timer disabled nothing synchronises.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels
from ..kernels import triton_available
from ..kinematics import Motion
from ..models.spade import SpectralNormConv2d
from ..models.warping import DenseMotionNetwork, WarpingNetwork, make_coordinate_grid
from .base import EngineBase, PendingImage, Ratios, SourceState, per_slot

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------
# policy
# ---------------------------------------------------------------------------------------------
def cpu_supports_bf16() -> bool:
    """True if this CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX-BF16).

    `torch.backends.cpu.get_cpu_capability()` says only "AVX512" on such CPUs, so the
    (private, long-standing) `torch.cpu` probes are asked first, then /proc/cpuinfo.
    """
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(p is not None for p in probes):
        return any(p() for p in probes)
    from ..cputune import cpu_features

    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_features()))


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of W's and G's convolutions for `precision` ("auto", "fp32", "bf16", "fp16").

    For "auto" on a CPU this is the candidate the CPU flags allow (bf16 where it is native);
    the engine then measures per network whether it beats float32 (`resolve_precisions`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        dtype = _DTYPES[precision]
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
    cached result (`cpu_precision.cpu_precisions`); everything else is `resolve_precision`.
    """
    if precision == "auto" and device.type == "cpu":
        from .cpu_precision import cpu_precisions

        dtypes, source, _ = cpu_precisions()
        return dtypes, source
    dtype = resolve_precision(precision, device)
    return {"warping": dtype, "generator": dtype}, "requested" if precision != "auto" else "default"


def inductor_cache_dir() -> Path:
    """Where inductor keeps its FX graph and kernel caches: $TORCHINDUCTOR_CACHE_DIR if set,
    else <user cache>/lp-live/inductor, stable across runs (torch's default is under /tmp)."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lp-live" / "inductor"


@dataclass(frozen=True)
class Layout:
    """Memory formats and conv rewrites of the optimized copies (measurements: `default_layout`).

    generator_channels_last: G's weights and activations channels_last.
    warping_channels_last: W's Conv3d weights and activations channels_last_3d.
    split_channels: run W's 7x7x7 mask conv (and the 3-D occlusion conv) as convs over
        slices of this many input channels (`SplitConv3d`), or None.
    hourglass_chunk: run the hourglass Conv3d's with at least 2 * chunk input channels over
        chunk-channel slices (`split_wide_convs`), or None.
    occlusion_as_conv3d: W's occlusion conv as a Conv3d over the volume (`occlusion_as_conv3d`).
    polyphase_spade: G's SPADE shared convs on the low-resolution segmap (`PolyphaseSPADE`).
    sample_channels_last: cache the source volumes channels_last_3d: each sample reads one
        contiguous run of channels (PyTorch's CPU grid sampler: 47 -> 21 ms for the warp).
    split_sampling: split the batch-1 warp's depth over the intra-op threads (`grid_sample_split`).
    separable_sampling: sample the compressed volume for the 22 slots with three 1-D
        interpolations instead of grid_sample (`translated_samples`).
    kernels: build the hourglass input (22-slot sampling + heatmaps), the softmax-weighted
        deformation and the warp with `lp_live.kernels` (fused Triton kernels on CUDA, their
        PyTorch reference elsewhere), without materialising the repeated volume or the
        (B, 22, D, H, W, 3) sparse motions.
    """

    generator_channels_last: bool
    warping_channels_last: bool
    split_channels: int | None = None
    hourglass_chunk: int | None = None
    occlusion_as_conv3d: bool = False
    polyphase_spade: bool = False
    sample_channels_last: bool = False
    split_sampling: bool = False
    separable_sampling: bool = False
    kernels: bool = False


def kernels_available() -> bool:
    """True where the Triton warping kernels can run (CUDA device and triton importable)."""
    return triton_available()


def default_layout(device: torch.device, dtype: torch.dtype) -> Layout:
    """The layout policy for `device` and `dtype`.

    Measured on this project's 2-core Xeon (AVX-512 BF16 + AMX), torch 2.13, bf16, compiled
    with freezing, shared and noisy machine (+-10 %), W / G wall time at batch 1:
    * before any fix W 0.81 s (2.3 s of it the strided deformation sum, now a matmul);
    * mask conv 142 -> 22 at 7x7x7: 0.57 s as one conv, 0.08 s as 128 + 14 input channels,
      0.06 s as 64 + 64 + 14; W 1.65 -> 0.79 s with the split (contiguous, early build);
    * hourglass 512 -> 128 at 16x16x16: 28 ms, 4 ms over 2 x 256 inputs; W 0.27 -> 0.24 s;
    * `grid_sample` of the (1, 32, 16, 64, 64) volume: 47 ms, 21 ms channels_last_3d, 11 ms
      also split over 2 threads (profiler; W total within noise);
    * SPADE shared convs on the low-resolution segmap: G 0.43 -> 0.41 s (fewer MACs, but the
      small convs and the pixel shuffle run at a lower rate);
    * channels_last(_3d) weights: no difference once compiled with freezing (inductor picks
      the oneDNN layouts itself); eager bf16 G 1.62 -> 1.49 s, W 0.45 -> 0.41 s, so kept on
      for the low-precision eager path.
    The heatmap denormal flush in `FastWarping` is not a layout choice but belongs here: it
    took compiled float32 W from 1.98 to 1.45 s (bf16/AMX treats denormals as zero anyway).
    On CUDA none of the CPU fixes applies (cuDNN has other fast and slow shapes; unmeasured);
    G is channels_last in fp16/bf16, which is what cuDNN's tensor-core kernels want.
    """
    if device.type == "cuda":
        return Layout(generator_channels_last=dtype != torch.float32, warping_channels_last=False,
                      kernels=kernels_available())
    if dtype == torch.float32:
        # float32 (oneDNN AVX-512, no AMX): the mask conv runs at the fp32 rate unsplit (0.53 s;
        # 0.73 s as 64-channel slices) and the (16, 7, 7) occlusion Conv3d at 5 GMAC/s, so
        # neither rewrite; W 1.45 -> 1.25 s
        return Layout(generator_channels_last=False, warping_channels_last=False, hourglass_chunk=256,
                      polyphase_spade=True, sample_channels_last=True, split_sampling=True, separable_sampling=True)
    return Layout(generator_channels_last=True, warping_channels_last=True, split_channels=64, hourglass_chunk=256,
                  occlusion_as_conv3d=True, polyphase_spade=True, sample_channels_last=True, split_sampling=True,
                  separable_sampling=True)


# ---------------------------------------------------------------------------------------------
# module rewrites for the private copies
# ---------------------------------------------------------------------------------------------
class MeanPoolHW(nn.Module):
    """2x2 average over H and W of a (B, C, D, H, W) tensor: `AvgPool3d((1, 2, 2))` for any dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        return x.reshape(b, c, d, h // 2, 2, w // 2, 2).mean(dim=(4, 6))  # (B, C, D, H/2, 2, W/2, 2)


def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace every `SpectralNormConv2d` under `module` by a plain Conv2d with W_orig / sigma.

    sigma is computed in the weights' dtype (float32 for loaded models) before any cast, as
    ARCHITECTURE §8.2 asks; the eval-mode forward computes the same expression every call.
    """
    for name, child in module.named_children():
        if isinstance(child, SpectralNormConv2d):
            conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, stride=child.stride,
                             padding=child.padding, dilation=child.dilation, groups=child.groups,
                             bias=child.bias is not None, device=child.weight_orig.device,
                             dtype=child.weight_orig.dtype)
            with torch.no_grad():
                conv.weight.copy_(child.effective_weight())
                if child.bias is not None:
                    conv.bias.copy_(child.bias)
            setattr(module, name, conv.eval().requires_grad_(False))
        else:
            fold_spectral_norm(child)
    return module


def replace_avg_pool_hw(module: nn.Module) -> nn.Module:
    """Swap every `AvgPool3d((1, 2, 2))` under `module` for `MeanPoolHW`."""
    for name, child in module.named_children():
        if isinstance(child, nn.AvgPool3d):
            if tuple(np.broadcast_to(child.kernel_size, 3)) != (1, 2, 2):
                raise ValueError(f"unexpected AvgPool3d kernel {child.kernel_size} at {name}")
            setattr(module, name, MeanPoolHW())
        else:
            replace_avg_pool_hw(child)
    return module


def _cast(module: nn.Module, dtype: torch.dtype, memory_format: torch.memory_format | None) -> nn.Module:
    module = module.to(dtype=dtype)
    if memory_format is not None:
        module = module.to(memory_format=memory_format)
    return module.eval().requires_grad_(False)


class SplitConv3d(nn.Module):
    """A Conv3d computed as several convs over slices of its input channels, summed in float32.

    oneDNN's AMX kernels run some Conv3d shapes at a fraction of their usual rate: the 7x7x7
    mask conv on 142 input channels, and the hourglass convs with 512 or 1024 input channels
    at small H, W. The same convs over 128- or 256-channel slices run near full rate (bf16,
    2-core Xeon: mask conv 0.56 s -> 0.08 s; 512 -> 128 channels at 16^3: 28 ms -> 4 ms).
    Each slice's result is rounded to the conv dtype before the float32 sum, so low-precision
    results carry one extra rounding; float32 results agree to about 1e-7.

    Args:
        conv: the conv to split (not modified).
        splits: input-channel boundaries, e.g. (128,) for [0, 128) and [128, C).
        float_output: return the float32 sum (for a softmax or sigmoid) instead of casting
            it back to the conv dtype.
    """

    def __init__(self, conv: nn.Conv3d, splits: tuple[int, ...], *, float_output: bool = False) -> None:
        super().__init__()
        edges = [0, *sorted(s for s in splits if 0 < s < conv.in_channels), conv.in_channels]
        self.slices = tuple(itertools.pairwise(edges))
        self.float_output = float_output
        parts = []
        for i, (lo, hi) in enumerate(self.slices):
            part = nn.Conv3d(hi - lo, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                             dilation=conv.dilation, bias=conv.bias is not None and i == 0)
            with torch.no_grad():
                part.weight.copy_(conv.weight[:, lo:hi])
                if part.bias is not None:
                    part.bias.copy_(conv.bias)
            parts.append(part.to(conv.weight))
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for (lo, hi), part in zip(self.slices, self.parts):
            y = part(x[:, lo:hi] if len(self.slices) > 1 else x).float()
            out = y if out is None else out + y
        return out if self.float_output else out.to(x.dtype)


def split_wide_convs(module: nn.Module, *, min_channels: int, chunk: int) -> nn.Module:
    """Replace every Conv3d under `module` with at least `min_channels` inputs by a `SplitConv3d`
    over `chunk`-channel slices."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv3d) and child.in_channels >= min_channels:
            setattr(module, name, SplitConv3d(child, tuple(range(chunk, child.in_channels, chunk))))
        else:
            split_wide_convs(child, min_channels=min_channels, chunk=chunk)
    return module


def occlusion_as_conv3d(conv: nn.Conv2d, channels: int, depth: int) -> nn.Conv3d:
    """The occlusion Conv2d over the folded (B, C*D, H, W) volume as a Conv3d over (B, C, D, H, W)
    with kernel (D, k, k) and no depth padding: the same sum (fold index c*D + d), without
    copying the volume into the folded layout (a transposition for channels_last_3d data)."""
    k = conv.kernel_size
    conv3d = nn.Conv3d(channels, conv.out_channels, (depth, *k), padding=(0, *conv.padding),
                       bias=conv.bias is not None)
    with torch.no_grad():
        conv3d.weight.copy_(conv.weight.reshape(conv.out_channels, channels, depth, *k))
        if conv.bias is not None:
            conv3d.bias.copy_(conv.bias)
    return conv3d.to(conv.weight)


def axis_interpolation(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Linear-interpolation weights (..., n_out, size) of normalised coordinates (..., n_out),
    as `grid_sample(align_corners=False, padding_mode="zeros")` computes them per axis."""
    pos = ((coords + 1) * size - 1) / 2  # grid_sample's unnormalisation
    i0 = torch.floor(pos)
    w0, w1 = (i0 + 1) - pos, pos - i0
    idx = torch.arange(size, dtype=coords.dtype, device=coords.device)
    # out-of-range taps match no index: zero padding
    return w0[..., None] * (idx == i0[..., None]) + w1[..., None] * (idx == (i0 + 1)[..., None])


def translated_samples(volume: torch.Tensor, axes: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                       kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
    """`DenseMotionNetwork.deformed_features` without a grid: (B, C, D, H, W) -> (B, K+1, C, D, H, W).

    Slot k samples the volume at grid - kd_k + ks_k (slot 0: the grid itself). A shifted grid
    is still separable, so the trilinear sample is three 1-D interpolations, done as three
    small matmuls with dense (n_out, n_in) weight matrices: 8 ms instead of grid_sample's
    25 ms for the 22 x 4-channel volume on the 2-core CPU (compiled), 7e-8 relative apart.

    Args:
        volume: (B, C, D, H, W), or (1, C, D, H, W) for one source: broadcast, not copied.
        axes: the identity grid's x (W,), y (H,) and z (D,) coordinates.
        kp_driving: (B, K, 3); kp_source: (B or 1, K, 3).
    """
    vb, c, d, h, w = volume.shape
    b = kp_driving.shape[0]
    mats = []
    for i, (axis, size) in enumerate(zip(axes, (w, h, d))):
        shifted = (axis - kp_driving[..., i, None]) + kp_source[..., i, None]  # (B, K, n), as grid - kd + ks
        mats.append(axis_interpolation(torch.cat([axis.expand(b, 1, -1), shifted], dim=1), size))
    ax, ay, az = mats  # (B, K+1, n_out, n_in)
    slots = ax.shape[1]
    out = torch.matmul(volume.reshape(vb, 1, c * d * h, w), ax.transpose(-1, -2))  # (B, K+1, C*D*H, W)
    out = torch.matmul(ay[:, :, None], out.reshape(b, slots, c * d, h, w))  # (B, K+1, C*D, H, W)
    out = torch.matmul(az[:, :, None], out.reshape(b, slots, c, d, h * w))  # (B, K+1, C, D, H*W)
    return out.reshape(b, slots, c, d, h, w)


def grid_sample_split(volume: torch.Tensor, grid: torch.Tensor, pieces: int) -> torch.Tensor:
    """`F.grid_sample(volume, grid, align_corners=False)` (5-D), with the output depth split
    over `pieces` batch entries (the largest divisor of the depth not above `pieces`).

    PyTorch's CPU 3-D grid sampler parallelises over the batch only; at batch 1 the expanded
    (not copied) volume and a reshaped grid give each thread a slab of output depth. The
    samples are the same computations, so the result is bit-identical.
    """
    b, d = grid.shape[:2]
    pieces = max(p for p in range(1, max(1, pieces) + 1) if d % p == 0)
    if pieces == 1:
        return F.grid_sample(volume, grid, align_corners=False)
    c = volume.shape[1]
    volume = volume[:, None].expand(b, pieces, *volume.shape[1:]).reshape(b * pieces, *volume.shape[1:])
    grid = grid.reshape(b * pieces, d // pieces, *grid.shape[2:])  # (B*P, D/P, H, W, 3)
    out = F.grid_sample(volume, grid, align_corners=False)  # (B*P, C, D/P, H, W)
    out = out.reshape(b, pieces, c, d // pieces, *out.shape[3:]).transpose(1, 2)
    return out.reshape(b, c, d, *out.shape[4:])  # (B, C, P, D/P, H, W) -> (B, C, D, H, W)


class FastWarping(nn.Module):
    """W with the source-only compression hoisted out and a float32/low-precision split.

    forward(feature_3d (S, 32, D, H, W), compressed (S, 4, D, H, W), kp_driving (B, 21, 3),
    kp_source (S, 21, 3)) -> the occlusion-weighted 2-D feature (B, 256, H, W) in `dtype`, with
    S = B (a source per slot) or S = 1 (one source for every slot: broadcast, never copied per
    slot). The math is `WarpingNetwork.forward`'s; only the dtypes, layouts and summation
    orders differ (float32 results agree to about 1e-6 relative).

    Args:
        warping: the (shared) warping module; it is deep-copied, not modified.
        dtype: dtype of the convolutions.
        layout: memory formats and the CPU-specific conv rewrites.
        grid_shape: (D, H, W) of the feature volume, for the precomputed identity grid.
    """

    def __init__(self, warping: WarpingNetwork, *, dtype: torch.dtype, layout: Layout,
                 grid_shape: tuple[int, int, int]) -> None:
        super().__init__()
        warping = replace_avg_pool_hw(copy.deepcopy(warping))
        dense: DenseMotionNetwork = warping.dense_motion_network
        fmt = torch.channels_last_3d if layout.warping_channels_last else None
        self.dtype = dtype
        self.memory_format_3d = fmt or torch.contiguous_format
        hourglass = dense.hourglass
        if layout.hourglass_chunk is not None:
            hourglass = split_wide_convs(hourglass, min_channels=2 * layout.hourglass_chunk,
                                         chunk=layout.hourglass_chunk)
        self.hourglass = _cast(hourglass, dtype, fmt)
        self.out_features = dense.hourglass.out_features
        chunk = layout.split_channels
        splits = tuple(range(chunk, self.out_features, chunk)) if chunk else ()
        self.mask = _cast(SplitConv3d(dense.mask, splits, float_output=True), dtype, fmt)
        self.occlusion: nn.Module | None = None
        self.occlusion_3d = layout.occlusion_as_conv3d
        if dense.occlusion is not None:
            occlusion = dense.occlusion
            if self.occlusion_3d:
                occlusion = SplitConv3d(occlusion_as_conv3d(occlusion, self.out_features, grid_shape[0]), splits,
                                        float_output=True)
            self.occlusion = _cast(occlusion, dtype, fmt if self.occlusion_3d else None)
        self.third = _cast(warping.third, dtype, None)
        self.fourth = _cast(warping.fourth, dtype, None)
        self.dense = dense  # only its parameter-free helpers are used
        self.sample_pieces = torch.get_num_threads() if layout.split_sampling else 1
        self.separable = layout.separable_sampling
        self.kernels = layout.kernels
        del dense.hourglass, dense.mask, dense.compress, dense.norm, dense.occlusion
        # Constant, float32, not in any state dict (ARCHITECTURE §8.4).
        device = warping.fourth.weight.device
        self.register_buffer("grid", make_coordinate_grid(*grid_shape, dtype=torch.float32, device=device),
                             persistent=False)

    def forward(self, feature_3d: torch.Tensor, compressed: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> torch.Tensor:
        b = kp_driving.shape[0]
        if not feature_3d.shape[0] == compressed.shape[0] == kp_source.shape[0] in (1, b):
            raise ValueError(f"source batch (feature {feature_3d.shape[0]}, compressed {compressed.shape[0]}, "
                             f"kp_source {kp_source.shape[0]}) must be 1 or the driving batch {b}")
        _, _, d, h, w = compressed.shape
        if self.kernels:
            return self._forward_kernels(feature_3d, compressed, kp_driving, kp_source)
        # float32: coordinates, the sampled compressed volume and the heatmaps; a batch-1 source
        # broadcasts in every op below (views and matmul broadcasting, no per-slot copies)
        if self.separable:
            axes = (self.grid[0, 0, :, 0], self.grid[0, :, 0, 1], self.grid[:, 0, 0, 2])
            deformed = translated_samples(compressed.contiguous(), axes, kp_driving, kp_source)
        else:
            sparse = self.dense.sparse_motion(self.grid, kp_driving, kp_source)  # (B, K+1, D, H, W, 3)
            deformed = self.dense.deformed_features(compressed, sparse)
        heat = self.dense.heatmaps(self.grid, kp_driving, kp_source)
        # exp(-50 d^2) underflows to float32 denormals for about 9 % of the voxels; x86 float32
        # FMAs on denormal inputs are many times slower (the hourglass's first and last conv ran
        # 3-5x slower, compiled fp32). Flushing them changes values by < 1.2e-38.
        heat = torch.where(heat.abs() < torch.finfo(torch.float32).tiny, 0.0, heat)
        x = torch.cat([heat, deformed], dim=2).reshape(b, -1, d, h, w)  # (B, (K+1)*5, D, H, W)
        prediction = self.hourglass(x.to(self.dtype, memory_format=self.memory_format_3d))
        mask = F.softmax(self.mask(prediction), dim=1)  # (B, K+1, D, H, W) float32
        # sum_k mask_k * (grid - kd_k + ks_k) = grid * sum_k mask_k + sum_{k>=1} mask_k * (ks_k - kd_k),
        # with sum_k mask_k = 1: one (D*H*W, K) x (K, 3) product instead of a 22-slot strided sum
        shift = (kp_source - kp_driving).float()  # (B, K, 3)
        offset = torch.bmm(mask[:, 1:].reshape(b, shift.shape[1], -1).transpose(1, 2), shift)  # (B, D*H*W, 3)
        deformation = self.grid + offset.reshape(b, d, h, w, 3)  # (B, D, H, W, 3)
        feature_3d = feature_3d.expand(b, *feature_3d.shape[1:])  # a view for one source
        warped = grid_sample_split(feature_3d, deformation, max(1, self.sample_pieces // b))
        return self._occluded_feature(warped, prediction)

    def _occluded_feature(self, warped: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        """third, fourth and the occlusion multiply: warped volume (B, 32, D, H, W) -> (B, 256, H, W)."""
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.reshape(b, c * d, h, w).to(self.dtype)))  # (B, 32, D, H, W) -> 2-D
        if self.occlusion is not None:
            if self.occlusion_3d:
                logits = self.occlusion(prediction)[:, :, 0]  # (B, 1, 1, H, W) -> (B, 1, H, W)
            else:
                logits = self.occlusion(prediction.reshape(b, -1, h, w)).float()  # (B, 142*D, H, W)
            out = (out.float() * torch.sigmoid(logits)).to(self.dtype)
        return out


    def _forward_kernels(self, feature_3d: torch.Tensor, compressed: torch.Tensor, kp_driving: torch.Tensor,
                         kp_source: torch.Tensor) -> torch.Tensor:
        """`forward` through the fused warping kernels (all coordinates and samples float32).

        The kernels read a batch-1 source for every slot (batch stride 0) and the identity grid
        from this module's own buffer (a captured CUDA graph reads it at replay).
        """
        x = kernels.hourglass_input(compressed.contiguous(), kp_driving, kp_source, grid=self.grid)  # (B, 110, ...)
        prediction = self.hourglass(x.to(self.dtype, memory_format=self.memory_format_3d))
        deformation = kernels.softmax_deformation(self.mask(prediction), kp_driving, kp_source,
                                                  grid=self.grid)  # (B, D, H, W, 3)
        warped = kernels.grid_sample_3d(feature_3d.contiguous(), deformation)
        return self._occluded_feature(warped, prediction)


# Polyphase form of conv3x3(nearest_upsample(x, f)): output row f*i + p reads upsampled rows
# f*i + p + a (a = -1, 0, 1), i.e. low-res rows i + floor((p + a) / f). Per axis there are three
# phase kinds: p = 0 reads rows (i-1, i) with taps (a=-1 | a=0,1); 0 < p < f-1 reads row i with
# all taps; p = f-1 reads rows (i, i+1) with taps (a=-1,0 | a=1). Zero padding agrees: a
# low-res row is out of range exactly when the upsampled rows it stands for are.
_PHASE_TAPS = {"first": ((0,), (1, 2)), "inner": ((0, 1, 2),), "last": ((0, 1), (2,))}
_PHASE_PAD = {"first": (1, 0), "inner": (0, 0), "last": (0, 1)}  # low-res padding (before, after)


class NearestUpConv2d(nn.Module):
    """`conv(interpolate(x, scale_factor=f, mode="nearest"))` for a 3x3, stride-1, padding-1 conv,
    computed on the low-resolution x: one small conv per pair of phase kinds (kernels 1 or 2
    taps wide, pre-summed), interleaved by a pixel shuffle. Same sum, 2.25x (f = 2) to 5.8x
    (f = 4) fewer multiply-adds; float32 results agree to about 1e-7.

    Args:
        conv: the 3x3 conv (not modified).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError(f"NearestUpConv2d needs a plain 3x3 conv with padding 1, got {conv}")
        w = conv.weight.detach().float()
        self.kernels = nn.ParameterDict()
        for row, row_taps in _PHASE_TAPS.items():
            for col, col_taps in _PHASE_TAPS.items():
                k = torch.stack([torch.stack([w[:, :, list(r)][:, :, :, list(c)].sum((2, 3)) for c in col_taps], -1)
                                 for r in row_taps], -2)  # (out, in, rows, cols)
                self.kernels[f"{row}_{col}"] = nn.Parameter(k.to(conv.weight.dtype), requires_grad=False)
        self.bias = conv.bias

    def forward(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        kinds = ["first", *["inner"] * (factor - 2), "last"]  # phase p -> kind
        outs = {}
        for row in dict.fromkeys(kinds):
            for col in dict.fromkeys(kinds):
                (top, bottom), (left, right) = _PHASE_PAD[row], _PHASE_PAD[col]
                padded = F.pad(x, (left, right, top, bottom)) if top or bottom or left or right else x
                outs[row, col] = F.conv2d(padded, self.kernels[f"{row}_{col}"], self.bias)
        phases = torch.stack([outs[r, c] for r in kinds for c in kinds], dim=2)  # (B, C, f*f, H, W)
        b, c, _, h, w = phases.shape
        return F.pixel_shuffle(phases.reshape(b, c * factor * factor, h, w), factor)


class PolyphaseSPADE(nn.Module):
    """SPADE whose shared conv runs on the low-resolution segmap when it is upsampled by 2 or 4
    (`NearestUpConv2d`); other sizes take the original path. Wraps a copied `SPADE`."""

    def __init__(self, spade: nn.Module) -> None:
        super().__init__()
        self.param_free_norm = spade.param_free_norm
        conv, act = spade.mlp_shared[0], spade.mlp_shared[1]
        self.mlp_shared = spade.mlp_shared
        self.up_conv = NearestUpConv2d(conv)
        self.act = act
        self.mlp_gamma = spade.mlp_gamma
        self.mlp_beta = spade.mlp_beta

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        factor = x.shape[2] // seg.shape[2]
        if factor in (2, 4) and tuple(x.shape[2:]) == (factor * seg.shape[2], factor * seg.shape[3]):
            actv = self.act(self.up_conv(seg, factor))
        else:
            actv = self.mlp_shared(F.interpolate(seg, size=x.shape[2:], mode="nearest"))
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


def polyphase_spades(module: nn.Module) -> nn.Module:
    """Replace every SPADE under `module` by a `PolyphaseSPADE`."""
    from ..models.spade import SPADE

    for name, child in module.named_children():
        if isinstance(child, SPADE):
            setattr(module, name, PolyphaseSPADE(child))
        else:
            polyphase_spades(child)
    return module


class FastGenerator(nn.Module):
    """G with spectral norm folded, in `dtype`, returning the float32 image (B, 3, 2S, 2S) in (0, 1).

    Args:
        generator: the (shared) SPADE generator; deep-copied, not modified.
        dtype: dtype of every layer.
        channels_last: channels_last weights and input.
        polyphase: run the SPADE shared convs of the upsampling blocks on the low-resolution
            segmap (`PolyphaseSPADE`).
    """

    def __init__(self, generator: nn.Module, *, dtype: torch.dtype, channels_last: bool, polyphase: bool) -> None:
        super().__init__()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        generator = fold_spectral_norm(copy.deepcopy(generator))
        if polyphase:
            generator = polyphase_spades(generator)
        self.generator = _cast(generator, dtype, torch.channels_last if channels_last else None)
        self.dtype = dtype

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.generator(feature.to(self.dtype, memory_format=self.memory_format)).float()


class FastMotion(nn.Module):
    """M with its ConvNeXt backbone under autocast in `dtype`; the pooling, LayerNorm and the
    seven linear heads run in float32 (pose bins go through a softmax, ARCHITECTURE §8.2).

    The baseline runs all of M under fp16 autocast on CUDA; this is that, with float32 heads.
    The shared module is wrapped (its parameters are not copied, cast or moved).

    Args:
        motion: the shared `MotionExtractor`.
        dtype: the autocast dtype (float16 or bfloat16).
    """

    def __init__(self, motion: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.detector = motion.detector
        self.dtype = dtype

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        det = self.detector
        x = image
        # no cast cache: under CUDA-graph capture the cached weight copies would be freed on exit
        with torch.autocast(image.device.type, dtype=self.dtype, cache_enabled=False):
            for down, stage in zip(det.downsample_layers, det.stages):
                x = stage(down(x))
        x = det.norm(x.float().mean(dim=(-2, -1)))  # (B, C, H, W) -> (B, C), float32
        return {name: getattr(det, f"fc_{name}")(x) for name in _MOTION_KEYS}


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8, as the official code: clip, *255, clip,
    truncate (float -> uint8 conversion truncates toward zero, like numpy's astype)."""
    x = image.float().permute(0, 2, 3, 1)
    return (x.clamp(0, 1) * 255).clamp(0, 255).to(torch.uint8).contiguous()


class FrozenCompiled:
    """`torch.compile(fn)` (inductor, full graph, static shapes) with inductor freezing.

    Freezing turns the weights into constants (conv+BN folding, oneDNN weight prepacking and
    fused conv+activation kernels on CPUs). It must be on while dynamo *traces*, not only in
    inductor's options (`torch.compile(options={"freezing": True})` leaves the parameters as
    graph inputs and nothing is frozen), so every call runs under `config.patch(freezing=True)`;
    compilation happens lazily inside the first call per input shape. Errors propagate.
    """

    def __init__(self, fn) -> None:
        self.fn = torch.compile(fn, fullgraph=True, dynamic=False)

    def __call__(self, *args):
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True), torch.no_grad():
            return self.fn(*args)


# ---------------------------------------------------------------------------------------------
# CUDA graphs
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _cudnn_benchmark():
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


class _Graph:
    """One captured CUDA graph over static buffers: write `inputs`, `replay()`, read `outputs`.

    The caller owns the input buffers (W's source buffers are shared by every batch size).
    """

    def __init__(self, fn, inputs: tuple[torch.Tensor, ...], *, stream: torch.cuda.Stream, pool,
                 warmup: int = 2) -> None:
        self.inputs = inputs
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # compiles, autotunes and fills cuDNN caches outside the capture
                fn(*inputs)
        stream.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool, stream=stream):
            self.outputs = fn(*inputs)

    def replay(self):
        self.graph.replay()
        return self.outputs


# ---------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------
class OptimizedEngine(EngineBase):
    """Source-cached, mixed-precision, compiled (and on CUDA graph-replayed) engine.

    Args:
        models: the shared networks (not modified; W and G are copied).
        device: where to run.
        input_size: network input side (see `EngineBase`).
        precision: "auto" (fp16 on CUDA; on CPUs with native bf16, bf16 or fp32 per network
            as measured by `cpu_precision`, else fp32), "fp32", "bf16" or "fp16": the dtype
            of W's and G's convolutions.
        compile: torch.compile M, W and G (inductor, freezing).
        cuda_graph: on CUDA, capture each stage per batch size and replay it.
    """

    name = "optimized"

    def __init__(self, models, device, *, input_size: int = 256, precision: str = "auto", compile: bool = True,
                 cuda_graph: bool = True, kernels: bool | None = None) -> None:
        super().__init__(models, device, input_size=input_size)
        # W's and G's dtypes: chosen once here (on CPUs with "auto": measured or cached)
        self.dtypes, self.precision_source = resolve_precisions(precision, self.device)
        self.dtype = self.dtypes["warping"]  # also the dtype of the feature G decodes
        names = {v: k for k, v in _DTYPES.items()}
        self.precisions = {"motion": "fp32", **{k: names[v] for k, v in self.dtypes.items()}}
        w, g = self.precisions["warping"], self.precisions["generator"]
        self.precision = w if w == g else f"W {w}, G {g}"
        self.compiled = compile
        self.uses_cuda_graph = cuda_graph and self.device.type == "cuda"
        # W's part of the layout follows W's dtype, G's (channels_last) G's
        self.layout = replace(default_layout(self.device, self.dtype), generator_channels_last=default_layout(
            self.device, self.dtypes["generator"]).generator_channels_last)
        if kernels is not None:  # override the default (on for CUDA with triton)
            self.layout = replace(self.layout, kernels=kernels)
        self.uses_kernels = self.layout.kernels
        # seconds of the first call per "<stage>@<batch>": compile + warm-up/capture + one run
        self.compile_seconds: dict[str, float] = {}

        grid = _feature_grid(models, input_size)
        self.warping = FastWarping(models.warping_module, dtype=self.dtype, layout=self.layout, grid_shape=grid)
        self.generator = FastGenerator(models.spade_generator, dtype=self.dtypes["generator"],
                                       channels_last=self.layout.generator_channels_last,
                                       polyphase=self.layout.polyphase_spade)
        self.warping.to(self.device)
        self.generator.to(self.device)
        # M: float32 on CPUs (bf16 M costs pose accuracy for little time there); on CUDA the
        # backbone in the W/G dtype like the baseline's fp16 autocast (plain float32 without
        # TF32 was slower than the baseline), heads float32
        low = self.device.type == "cuda" and self.dtype != torch.float32
        self._motion = FastMotion(models.motion_extractor, self.dtype) if low else models.motion_extractor
        self._warp_fn, self._decode_fn, self._motion_fn = self.warping, self.generator, self._motion
        if compile:
            self._setup_compile()

        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._graphs: dict[tuple[str, int], _Graph] = {}
        self._graph_pool = torch.cuda.graph_pool_handle() if self.uses_cuda_graph else None
        self._source_buffers: tuple[torch.Tensor, ...] | None = None  # static one-source input of the graphs
        self._source_loaded: tuple[torch.Tensor, ...] | None = None  # what is in them
        self._slot_buffers: dict[int, tuple[torch.Tensor, ...]] = {}  # per batch size: a source per slot
        self._slot_loaded: dict[int, list[tuple[torch.Tensor, ...]]] = {}
        self._staging: dict[tuple, tuple[torch.Tensor, torch.cuda.Event]] = {}
        self._free_pinned: dict[tuple[int, ...], list[torch.Tensor]] = {}  # download buffers, by shape
        self.asynchronous = self.stream is not None  # `submit` queues on the stream and returns
        log.info("optimized engine on %s: W/G in %s (%s), compile=%s, cuda_graph=%s, layout=%s", self.device,
                 self.precision, self.precision_source, compile, self.uses_cuda_graph, self.layout)

    # -- setup -----------------------------------------------------------------------------
    def _setup_compile(self) -> None:
        # inductor reads the variable on every cache access; an empty value would mean the cwd
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache_dir())
        log.info("inductor cache: %s", os.environ["TORCHINDUCTOR_CACHE_DIR"])
        self._warp_fn = FrozenCompiled(self.warping)
        self._decode_fn = FrozenCompiled(self.generator)
        self._motion_fn = FrozenCompiled(self._motion)

    @contextlib.contextmanager
    def _on_stream(self):
        """Run the enclosed work on the engine's stream, ordered after and before the caller's."""
        if self.stream is None or torch.cuda.current_stream(self.device) == self.stream:
            yield
            return
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        try:
            with torch.cuda.stream(self.stream):
                yield
        finally:
            caller.wait_stream(self.stream)

    # -- entry points: the whole per-frame path runs on the engine's stream ----------------
    def prepare_source(self, image, *, options=None, ratios=None) -> SourceState:
        with self._on_stream():
            return super().prepare_source(image, options=options, ratios=ratios)

    def extract_motion(self, image):
        with self._on_stream():
            return super().extract_motion(image)

    def animate_batch(self, states, driving, *, ratios=None):
        with self._on_stream():
            return super().animate_batch(states, driving, ratios=ratios)

    # -- networks --------------------------------------------------------------------------
    def to_input(self, images: np.ndarray) -> torch.Tensor:
        if images.ndim == 3:
            images = images[None]
        with self.timer.stage("copy_h2d"):
            x = self._upload(np.ascontiguousarray(images))
        x = x.permute(0, 3, 1, 2).float() / 255.0  # (B, H, W, 3) uint8 -> (B, 3, H, W)
        size = self.input_size
        if x.shape[2:] != (size, size):
            # bilinear without antialiasing: cv2.resize's default (INTER_LINEAR), without its
            # intermediate rounding to uint8
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x.clamp(0, 1).contiguous()

    def _upload(self, images: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(images)
        if self.device.type != "cuda":
            return host.to(self.device)
        key = tuple(host.shape)
        if key not in self._staging:
            self._staging[key] = (torch.empty(key, dtype=torch.uint8, pin_memory=True), torch.cuda.Event())
        pinned, done = self._staging[key]
        done.synchronize()  # the previous copy out of this buffer has finished (normally long ago)
        pinned.copy_(host)
        x = pinned.to(self.device, non_blocking=True)
        done.record()
        return x

    def source_features(self, image: torch.Tensor) -> torch.Tensor:
        # once per source: the shared float32 F, eager
        return self.models.appearance_feature_extractor(image)

    def cache_source(self, state: SourceState) -> None:
        """F(source) and the compressed volume, in the layout the warp samples them in."""
        compressed = self.models.warping_module.dense_motion_network.compress_source(state.feature_3d)
        fmt = torch.channels_last_3d if self.layout.sample_channels_last else torch.contiguous_format
        state.cache["compressed"] = compressed.contiguous(memory_format=fmt)
        state.cache["feature"] = state.feature_3d.contiguous(memory_format=fmt)

    def motion_raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        b = image.shape[0]
        first = self._first(f"motion@{b}")
        if self.uses_cuda_graph:
            graph = self._graphs.get(("motion", b))
            if graph is None:
                graph = self._capture(("motion", b), _packed(self._motion_fn), (image.clone(),))
            graph.inputs[0].copy_(image, non_blocking=True)
            packed, widths = graph.replay()
            raw = _unpack(packed.clone(), widths)  # graph outputs are overwritten by the next replay
        else:
            raw = self._motion_fn(image)
        first()
        return raw

    def warp(self, states: SourceState | Sequence[SourceState], x_d: torch.Tensor) -> torch.Tensor:
        """W: the 2-D feature G decodes, (B, 256, H, W) in the engine's dtype (never graph-replayed)."""
        feature, compressed, x_s = self._source(states, x_d.shape[0])
        return self._warp_fn(feature, compressed, x_d.float(), x_s)

    def decode(self, feature: torch.Tensor) -> torch.Tensor:
        """G: feature -> float32 image (B, 3, 2S, 2S) in (0, 1) (never graph-replayed)."""
        return self._decode_fn(feature)

    def generate(self, states: SourceState | Sequence[SourceState], x_d: torch.Tensor) -> np.ndarray:
        with self._on_stream():
            image = self._generate_on_device(states, x_d)
            with self.timer.stage("copy_d2h"):
                return self._download(image)

    def _first(self, key: str):
        """A callable that, on the first call for `key` only, records the wall time since now."""
        if key in self.compile_seconds or not (self.compiled or self.uses_cuda_graph):
            return lambda: None
        t0 = time.perf_counter()

        def done() -> None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_seconds[key] = time.perf_counter() - t0
            log.info("%s: first call (compile, warm-up, capture, one run) %.1f s", key, self.compile_seconds[key])

        return done

    def _state_source(self, state: SourceState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(feature volume, compressed volume, x_s) of one state, each with batch 1, cached on first use."""
        if "compressed" not in state.cache or "feature" not in state.cache:
            self.cache_source(state)
        return state.cache["feature"], state.cache["compressed"], state.x_s.float()

    def _source(self, states: SourceState | Sequence[SourceState], b: int,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """W's source inputs for a batch of b: one source's own batch-1 tensors (W broadcasts
        them), or the slots' sources stacked (batch b; a copy per call)."""
        slots = per_slot(states, b)
        if isinstance(slots, SourceState):
            return self._state_source(slots)
        return self._stack([self._state_source(s) for s in slots])

    def _stack(self, per: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-slot (feature, compressed, x_s) stacked into batch tensors, volumes in the sampling layout."""
        fmt = torch.channels_last_3d if self.layout.sample_channels_last else torch.contiguous_format
        return (torch.cat([p[0] for p in per]).contiguous(memory_format=fmt),
                torch.cat([p[1] for p in per]).contiguous(memory_format=fmt),
                torch.cat([p[2] for p in per]))

    def _generate_graphed(self, states: SourceState | Sequence[SourceState], x_d: torch.Tensor) -> torch.Tensor:
        b = x_d.shape[0]
        slots = per_slot(states, b)
        stacked = not isinstance(slots, SourceState)  # graphs read per-slot source buffers
        f_s, compressed, x_s = self._load_slots(slots) if stacked else self._load_source(slots)
        key = (b, stacked)
        if ("post", *key) not in self._graphs:
            w = self._capture(("warping", *key), lambda *a: (self._warp_fn(*a),), (f_s, compressed, x_d.clone(), x_s))
            g = self._capture(("generator", *key), lambda f: (self._decode_fn(f),), w.outputs)
            self._capture(("post", *key), lambda im: (to_uint8(im),), g.outputs)
        with self.timer.stage("warping"):
            w = self._graphs[("warping", *key)]
            w.inputs[2].copy_(x_d, non_blocking=True)
            w.replay()
        with self.timer.stage("generator"):
            self._graphs[("generator", *key)].replay()
        with self.timer.stage("post"):
            return self._graphs[("post", *key)].replay()[0]

    def _capture(self, key: tuple, fn, inputs: tuple[torch.Tensor, ...]) -> _Graph:
        # cuDNN autotuning only while warming up and capturing: the chosen kernels are baked into
        # the graph, and the global flag (which the baseline engine also sees) is restored.
        with _cudnn_benchmark():
            graph = _Graph(fn, inputs, stream=self.stream, pool=self._graph_pool)
        log.debug("captured %s", key)
        self._graphs[key] = graph
        return graph

    def _load_source(self, state: SourceState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch-1 static source buffers of the one-source graphs (every batch size reads
        them, broadcast), refreshed when the state's tensors change."""
        tensors = self._state_source(state)
        if self._source_buffers is None:
            self._source_buffers = tuple(t.clone() for t in tensors)
        elif self._source_loaded is None or any(a is not b for a, b in zip(tensors, self._source_loaded)):
            for buf, t in zip(self._source_buffers, tensors):
                buf.copy_(t, non_blocking=True)
        self._source_loaded = tensors
        return self._source_buffers

    def _load_slots(self, slots: list[SourceState]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch-b static source buffers of the per-slot graphs; a slot is copied (device to
        device) only when its state's tensors changed since the last batch of this size."""
        b = len(slots)
        per = [self._state_source(s) for s in slots]
        if b not in self._slot_buffers:
            self._slot_buffers[b] = self._stack(per)
            self._slot_loaded[b] = per
            return self._slot_buffers[b]
        loaded = self._slot_loaded[b]
        for i, tensors in enumerate(per):
            if any(a is not c for a, c in zip(tensors, loaded[i])):
                for buf, t in zip(self._slot_buffers[b], tensors):
                    buf[i : i + 1].copy_(t, non_blocking=True)
                loaded[i] = tensors
        return self._slot_buffers[b]

    def _download(self, image: torch.Tensor) -> np.ndarray:
        if self.device.type != "cuda":
            return image.numpy()
        return self._download_async(image).result()  # the only host wait of the frame

    # -- split per-frame path (CUDA): queue the whole frame, wait for it in `result()` -------
    @contextlib.contextmanager
    def launching(self):
        """The engine's stream as the current stream, ordered after the caller's queued work.

        Unlike `_on_stream`, the caller's stream is not made to wait for the engine's at the end:
        the host waits for a frame through the event of its `PendingImage`, so work the caller
        queues meanwhile (the previous frame's paste-back) does not wait for this frame.
        """
        if self.stream is None or torch.cuda.current_stream(self.device) == self.stream:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            yield

    @torch.no_grad()
    def submit(self, state: SourceState, motion: Motion, *, ratios: Ratios | None = None) -> PendingImage:
        """On CUDA: queue keypoints, W, G, the uint8 conversion and a non-blocking copy into a
        pinned buffer on the engine's stream, and return without waiting; elsewhere `animate`."""
        if self.stream is None:
            return super().submit(state, motion, ratios=ratios)
        with self.launching():
            x_d = self.driving_keypoints(state, motion, ratios)
            return self._download_async(self._generate_on_device(state, x_d)[0])

    def _generate_on_device(self, states: SourceState | Sequence[SourceState], x_d: torch.Tensor) -> torch.Tensor:
        """W, G and the uint8 conversion, queued on the current stream: the (B, 2S, 2S, 3) image on the device."""
        first = self._first(f"generate@{x_d.shape[0]}")
        if self.uses_cuda_graph:
            image = self._generate_graphed(states, x_d.float())
        else:
            with self.timer.stage("warping"):
                feature = self.warp(states, x_d)
            with self.timer.stage("generator"):
                image = self.decode(feature)
            with self.timer.stage("post"):
                image = to_uint8(image)
        first()
        return image

    def _download_async(self, image: torch.Tensor) -> PendingImage:
        """Queue the non-blocking copy of a uint8 image ((H, W, 3) or (B, H, W, 3)) into a pinned
        buffer of its own: a buffer goes back to the free list only when `result()` has read it."""
        key = tuple(image.shape)
        free = self._free_pinned.setdefault(key, [])
        pinned = free.pop() if free else torch.empty(key, dtype=torch.uint8, pin_memory=True)
        pinned.copy_(image, non_blocking=True)
        done = torch.cuda.Event()
        done.record()  # on the engine's stream, after the copy
        return _PinnedImage(pinned, done, free)


class _PinnedImage(PendingImage):
    """A frame on its way into a pinned host buffer; the buffer returns to `free` once read."""

    def __init__(self, pinned: torch.Tensor, done: torch.cuda.Event, free: list[torch.Tensor]) -> None:
        super().__init__(np.empty(0, np.uint8))
        self._pinned, self._done, self._free = pinned, done, free
        self._read = False

    def ready(self) -> bool:
        return self._read or self._done.query()

    def result(self) -> np.ndarray:
        if not self._read:
            self._done.synchronize()  # the frame's only host wait
            self._image = self._pinned.numpy().copy()
            self._free.append(self._pinned)
            self._read = True
        return self._image


def _feature_grid(models, input_size: int) -> tuple[int, int, int]:
    """(D, H, W) of the feature volume for `input_size`: F downsamples 4x, D = reshape depth."""
    depth = models.appearance_feature_extractor.reshape_depth
    return depth, input_size // 4, input_size // 4


_MOTION_KEYS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


def _packed(motion_fn):
    """M as one (B, N) float32 tensor (one clone per frame instead of seven), plus the widths."""

    def fn(image):
        raw = motion_fn(image)
        widths = tuple(raw[k].shape[1] for k in _MOTION_KEYS)
        return torch.cat([raw[k].float() for k in _MOTION_KEYS], dim=1), widths

    return fn


def _unpack(packed: torch.Tensor, widths) -> dict[str, torch.Tensor]:
    return dict(zip(_MOTION_KEYS, packed.split(list(widths), dim=1)))

