"""The rewrite plan of the optimized engine's private network copies, chosen per device and dtype.

Every field is an exact rewrite (equal to the original up to float32 rounding) that dodges a
slow oneDNN/cuDNN path or saves work; `default_plan` says what was measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import kernels_runnable


@dataclass(frozen=True)
class RewritePlan:
    """Memory formats, conv rewrites and W's sampler of the optimized copies (measurements:
    `default_plan`); `fast.py` applies it once, when the copies are built.

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
    separable_sampling: `SeparableSampler`: sample the compressed volume for the 22 slots with
        three 1-D interpolations instead of grid_sample (`translated_samples`).
    kernels: `FusedSampler`: the hourglass input (22-slot sampling + heatmaps), the
        softmax-weighted deformation and the warp by the fused kernels of `lp_live.kernels`
        (Triton on CUDA, their PyTorch reference elsewhere), without materialising the repeated
        volume or the (B, 22, D, H, W, 3) sparse motions. Otherwise `GridSampleSampler`.
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


def default_plan(device: torch.device, dtype: torch.dtype) -> RewritePlan:
    """The rewrite plan for `device` and `dtype`.

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
        return RewritePlan(generator_channels_last=dtype != torch.float32, warping_channels_last=False,
                      kernels=kernels_runnable(device))
    if dtype == torch.float32:
        # float32 (oneDNN AVX-512, no AMX): the mask conv runs at the fp32 rate unsplit (0.53 s;
        # 0.73 s as 64-channel slices) and the (16, 7, 7) occlusion Conv3d at 5 GMAC/s, so
        # neither rewrite; W 1.45 -> 1.25 s
        return RewritePlan(generator_channels_last=False, warping_channels_last=False, hourglass_chunk=256,
                      polyphase_spade=True, sample_channels_last=True, split_sampling=True, separable_sampling=True)
    return RewritePlan(generator_channels_last=True, warping_channels_last=True, split_channels=64, hourglass_chunk=256,
                  occlusion_as_conv3d=True, polyphase_spade=True, sample_channels_last=True, split_sampling=True,
                  separable_sampling=True)


