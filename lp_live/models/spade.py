"""SPADE generator G: warped 2-D feature (B, 256, 64, 64) -> RGB image (B, 3, 512, 512)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpectralNormConv2d(nn.Conv2d):
    """Conv2d whose weight is `weight_orig / sigma`, with sigma = u . (W v) from stored u, v.

    Eval-only form of the classic `torch.nn.utils.spectral_norm` with its checkpoint keys
    (`weight_orig`, `weight_u`, `weight_v`, no `weight`): no power iteration runs, as in the
    official modules in eval mode.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, padding: int = 0, bias: bool = True) -> None:
        super().__init__(in_chs, out_chs, kernel_size, padding=padding, bias=bias)
        weight = self.weight
        del self.weight
        self.weight_orig = nn.Parameter(weight.detach())
        self.register_buffer("weight_u", torch.zeros(out_chs))
        self.register_buffer("weight_v", torch.zeros(weight[0].numel()))

    def effective_weight(self) -> torch.Tensor:
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, torch.mv(w.reshape(w.shape[0], -1), self.weight_v))
        return w / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class SPADE(nn.Module):
    """Instance norm modulated per pixel by (1 + gamma(seg), beta(seg)); hidden width 128."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResBlock(nn.Module):
    """Two SPADE -> LeakyReLU(0.2) -> conv steps plus a shortcut (SPADE -> 1x1 conv if widths differ)."""

    def __init__(self, fin: int, fout: int, label_nc: int) -> None:
        super().__init__()
        fmiddle = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = SpectralNormConv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmiddle, fout, kernel_size=3, padding=1)
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmiddle, label_nc)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, kernel_size=1, bias=False)
            self.norm_s = SPADE(fin, label_nc)

    def shortcut(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        return self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return self.shortcut(x, seg) + dx


class SPADEDecoder(nn.Module):
    """G(feature) -> image. The input feature is also every block's SPADE conditioning map.

    Args:
        upscale: pixel-shuffle factor of the output (2: 256 -> 512).
        block_expansion, num_down_blocks, max_features: give the input width
            min(max_features, block_expansion * 2**num_down_blocks) (256).
        out_channels: width before the final conv (64).
    """

    def __init__(
        self,
        *,
        upscale: int = 2,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        out_channels: int = 64,
        num_middle_blocks: int = 6,
    ) -> None:
        super().__init__()
        in_chs = min(max_features, block_expansion * 2**num_down_blocks)
        self.num_middle_blocks = num_middle_blocks
        self.fc = nn.Conv2d(in_chs, 2 * in_chs, kernel_size=3, padding=1)
        for i in range(num_middle_blocks):
            self.add_module(f"G_middle_{i}", SPADEResBlock(2 * in_chs, 2 * in_chs, in_chs))
        self.up_0 = SPADEResBlock(2 * in_chs, in_chs, in_chs)
        self.up_1 = SPADEResBlock(in_chs, out_channels, in_chs)
        self.up = nn.Upsample(scale_factor=2)
        if upscale > 1:
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * upscale**2, kernel_size=3, padding=1), nn.PixelShuffle(upscale)
            )
        else:
            self.conv_img = nn.Conv2d(out_channels, 3, kernel_size=3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """feature: (B, 256, H, W) -> (B, 3, 4H * upscale / 2, ...) in (0, 1); 64 -> 512."""
        seg = feature
        x = self.fc(feature)
        for i in range(self.num_middle_blocks):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(self.up(x), seg)
        x = self.up_1(self.up(x), seg)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.sigmoid(x)
