"""The optimized engine's private copies of W, G and M: rewritten per plan, cast, laid out.

W and G are deep-copied (the baseline engine shares the originals, and the live app switches
engines per frame): spectral norm folded into plain conv weights (in float32, then cast), the
hourglass's (1, 2, 2) average pool rewritten as a mean (CPUs have no bf16/fp16
`avg_pool3d`), weights cast and laid out channels_last, the `RewritePlan`'s conv rewrites
applied. Every choice is made here, when the copies are built: W's sampling steps are one
`lp_live.kernels.Sampler`, its occlusion one module (or `NoOcclusion`), so the per-frame
forward has no branch on the plan.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..kernels import FusedSampler, GridSampleSampler, Sampler, SeparableSampler
from ..models.warping import WarpingNetwork
from .plan import RewritePlan
from .polyphase import polyphase_spades
from .rewrites import SplitConv3d, cast, fold_spectral_norm, occlusion_as_conv3d, replace_avg_pool_hw, split_wide_convs

MOTION_KEYS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


def build_sampler(plan: RewritePlan, grid_shape: tuple[int, int, int], device: torch.device) -> Sampler:
    """W's sampler for `plan`: the fused kernels, or PyTorch's sampler (separable slots on CPUs)."""
    if plan.kernels:
        return FusedSampler(grid_shape, device=device)
    pieces = torch.get_num_threads() if plan.split_sampling else 1
    kind = SeparableSampler if plan.separable_sampling else GridSampleSampler
    return kind(grid_shape, device=device, pieces=pieces)


class Occlusion(nn.Module):
    """feature * sigmoid(occlusion logits of the hourglass prediction), in float32, back to the
    feature's dtype. The logits come from the official Conv2d over the folded (B, C*D, H, W)
    prediction."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def logits(self, prediction: torch.Tensor) -> torch.Tensor:
        b, _, _, h, w = prediction.shape
        return self.conv(prediction.reshape(b, -1, h, w)).float()  # (B, 142*D, H, W) -> (B, 1, H, W)

    def forward(self, feature: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        return (feature.float() * torch.sigmoid(self.logits(prediction))).to(feature.dtype)


class Occlusion3d(Occlusion):
    """`Occlusion` with the conv as a float32-output Conv3d over the volume (`occlusion_as_conv3d`)."""

    def logits(self, prediction: torch.Tensor) -> torch.Tensor:
        return self.conv(prediction)[:, :, 0]  # (B, 1, 1, H, W) -> (B, 1, H, W)


class NoOcclusion(nn.Module):
    """For a W built without an occlusion map: the feature unchanged."""

    def forward(self, feature: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
        return feature


class FastWarping(nn.Module):
    """W with the source-only compression hoisted out and a float32/low-precision split.

    forward(feature_3d (S, 32, D, H, W), compressed (S, 4, D, H, W), kp_driving (B, 21, 3),
    kp_source (S, 21, 3)) -> the occlusion-weighted 2-D feature (B, 256, H, W) in `dtype`, with
    S = B (a source per slot) or S = 1 (one source for every slot: broadcast, never copied per
    slot). The math is `WarpingNetwork.forward`'s; only the dtypes, layouts and summation
    orders differ (float32 results agree to about 1e-6 relative). Coordinates, the sampled
    compressed volume, the heatmaps, the mask softmax and the deformation are float32 (the
    sampler's); the convolutions run in `dtype`.

    Args:
        warping: the (shared) warping module; it is deep-copied, not modified.
        dtype: dtype of the convolutions.
        plan: memory formats, the CPU-specific conv rewrites and the sampler.
        grid_shape: (D, H, W) of the feature volume, for the sampler's identity grid.
    """

    def __init__(self, warping: WarpingNetwork, *, dtype: torch.dtype, plan: RewritePlan,
                 grid_shape: tuple[int, int, int]) -> None:
        super().__init__()
        warping = replace_avg_pool_hw(copy.deepcopy(warping))
        dense = warping.dense_motion_network
        fmt = torch.channels_last_3d if plan.warping_channels_last else None
        self.dtype = dtype
        self.memory_format_3d = fmt or torch.contiguous_format
        hourglass = dense.hourglass
        if plan.hourglass_chunk is not None:
            hourglass = split_wide_convs(hourglass, min_channels=2 * plan.hourglass_chunk,
                                         chunk=plan.hourglass_chunk)
        self.hourglass = cast(hourglass, dtype, fmt)
        out_features = dense.hourglass.out_features
        chunk = plan.split_channels
        splits = tuple(range(chunk, out_features, chunk)) if chunk else ()
        self.mask = cast(SplitConv3d(dense.mask, splits, float_output=True), dtype, fmt)
        if dense.occlusion is None:
            self.occlusion: nn.Module = NoOcclusion()
        elif plan.occlusion_as_conv3d:
            conv3d = occlusion_as_conv3d(dense.occlusion, out_features, grid_shape[0])
            self.occlusion = Occlusion3d(cast(SplitConv3d(conv3d, splits, float_output=True), dtype, fmt))
        else:
            self.occlusion = Occlusion(cast(dense.occlusion, dtype, None))
        self.third = cast(warping.third, dtype, None)
        self.fourth = cast(warping.fourth, dtype, None)
        self.sampler = build_sampler(plan, grid_shape, warping.fourth.weight.device)

    def forward(self, feature_3d: torch.Tensor, compressed: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> torch.Tensor:
        b = kp_driving.shape[0]
        if not feature_3d.shape[0] == compressed.shape[0] == kp_source.shape[0] in (1, b):
            raise ValueError(f"source batch (feature {feature_3d.shape[0]}, compressed {compressed.shape[0]}, "
                             f"kp_source {kp_source.shape[0]}) must be 1 or the driving batch {b}")
        x = self.sampler.hourglass_input(compressed, kp_driving, kp_source)  # (B, (K+1)*5, D, H, W) float32
        prediction = self.hourglass(x.to(self.dtype, memory_format=self.memory_format_3d))
        deformation = self.sampler.deformation(self.mask(prediction), kp_driving, kp_source)  # (B, D, H, W, 3)
        warped = self.sampler.warp(feature_3d, deformation)  # (B, 32, D, H, W)
        _, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.reshape(b, c * d, h, w).to(self.dtype)))  # -> (B, 256, H, W)
        return self.occlusion(out, prediction)


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
        self.generator = cast(generator, dtype, torch.channels_last if channels_last else None)
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
        return {name: getattr(det, f"fc_{name}")(x) for name in MOTION_KEYS}


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8, as the official code: clip, *255, clip,
    truncate (float -> uint8 conversion truncates toward zero, like numpy's astype)."""
    x = image.float().permute(0, 2, 3, 1)
    return (x.clamp(0, 1) * 255).clamp(0, 255).to(torch.uint8).contiguous()

