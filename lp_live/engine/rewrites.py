"""Exact module rewrites for the optimized engine's private copies of W and G.

Each returns a module computing the original's sum (up to float32 rounding) in a form that
casts to bf16/fp16 or avoids a slow oneDNN shape: spectral norm folded into plain weights, the
hourglass's (1, 2, 2) average pool as a mean, Conv3d's over input-channel slices, W's
occlusion conv as a Conv3d. Which of them apply is the `RewritePlan`'s choice.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from ..models.spade import SpectralNormConv2d


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


def cast(module: nn.Module, dtype: torch.dtype, memory_format: torch.memory_format | None) -> nn.Module:
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

