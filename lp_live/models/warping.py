"""Warping module W: dense motion from implicit keypoints, then the warped 2-D feature.

Coordinates are (x, y, z) in [-1, 1] indexing (W, H, D) of the feature volume, with -1 and +1
on the first and last samples, while every `grid_sample` uses align_corners=False. The network
was trained with this half-texel mismatch; it is reproduced, not fixed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DownBlock3d, SameBlock2d, UpBlock3d

KP_VARIANCE = 0.01


def make_coordinate_grid(
    depth: int, height: int, width: int, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """(D, H, W, 3) grid of (x, y, z), each axis spanning [-1, 1] end point to end point."""

    def axis(n: int) -> torch.Tensor:
        return 2 * (torch.arange(n, dtype=dtype, device=device) / (n - 1)) - 1

    z, y, x = torch.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def kp2gaussian(kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Unnormalised Gaussians at keypoints: kp (B, K, 3), grid (D, H, W, 3) -> (B, K, D, H, W)."""
    diff = grid - kp[:, :, None, None, None, :]  # (B, K, D, H, W, 3)
    return torch.exp(-0.5 * (diff**2).sum(-1) / KP_VARIANCE)


def sparse_motion(grid: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
    """Per-slot sampling grids (B, K+1, D, H, W, 3): identity, then grid - kd_k + ks_k."""
    b = kp_driving.shape[0]
    kd = kp_driving[:, :, None, None, None, :]
    ks = kp_source[:, :, None, None, None, :]
    motions = grid - kd + ks  # (B, K, D, H, W, 3)
    identity = grid.expand(b, 1, *grid.shape)
    return torch.cat([identity, motions], dim=1)


def deformed_features(compressed: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """The compressed volume (B, C, D, H, W) sampled by each slot's grid `sparse`: (B, K+1, C, D, H, W)."""
    b, slots = sparse.shape[:2]
    c, d, h, w = compressed.shape[1:]
    repeated = compressed[:, None].expand(b, slots, c, d, h, w).reshape(b * slots, c, d, h, w)
    grids = sparse.reshape(b * slots, d, h, w, 3)
    sampled = F.grid_sample(repeated, grids, align_corners=False)
    return sampled.reshape(b, slots, c, d, h, w)


def heatmaps(grid: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
    """Driving minus source Gaussians, a zero background slot first: (B, K+1, 1, D, H, W)."""
    heat = kp2gaussian(kp_driving, grid) - kp2gaussian(kp_source, grid)
    zeros = heat.new_zeros(heat.shape[0], 1, *heat.shape[2:])
    return torch.cat([zeros, heat], dim=1).unsqueeze(2)


class Hourglass3d(nn.Module):
    """3-D U-Net: `num_blocks` (1, 2, 2) down/up steps, skips concatenated as [up, skip]."""

    def __init__(self, *, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()

        def width(i: int) -> int:
            return min(max_features, block_expansion * 2**i)

        self.encoder = nn.Module()
        self.encoder.down_blocks = nn.ModuleList(
            DownBlock3d(in_features if i == 0 else width(i), width(i + 1)) for i in range(num_blocks)
        )
        self.decoder = nn.Module()
        self.decoder.up_blocks = nn.ModuleList(
            UpBlock3d((1 if i == num_blocks - 1 else 2) * width(i + 1), width(i))
            for i in reversed(range(num_blocks))
        )
        self.out_features = block_expansion + in_features
        self.decoder.conv = nn.Conv3d(self.out_features, self.out_features, kernel_size=3, padding=1)
        self.decoder.norm = nn.BatchNorm3d(self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for block in self.encoder.down_blocks:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for block in self.decoder.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.decoder.norm(self.decoder.conv(out)))


class DenseMotionNetwork(nn.Module):
    """Predicts a dense deformation and an occlusion map from source/driving keypoints.

    Each of the K keypoints proposes a pure translation of the compressed source volume
    (slot 0 is the identity, for the background); the hourglass weighs the K + 1 proposals
    per voxel with a softmax mask.
    """

    def __init__(
        self,
        *,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        feature_channel: int,
        reshape_depth: int,
        compress: int,
        estimate_occlusion_map: bool = True,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.hourglass = Hourglass3d(
            block_expansion=block_expansion,
            in_features=(num_kp + 1) * (compress + 1),
            num_blocks=num_blocks,
            max_features=max_features,
        )
        hg_out = self.hourglass.out_features
        self.mask = nn.Conv3d(hg_out, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        self.occlusion = (
            nn.Conv2d(hg_out * reshape_depth, 1, kernel_size=7, padding=3) if estimate_occlusion_map else None
        )

    def compress_source(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, 32, D, H, W) -> (B, 4, D, H, W). Depends only on the source: cacheable."""
        return F.relu(self.norm(self.compress(feature)))

    def forward(
        self,
        feature: torch.Tensor,
        kp_driving: torch.Tensor,
        kp_source: torch.Tensor,
        compressed: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if compressed is None:
            compressed = self.compress_source(feature)
        b, _, d, h, w = compressed.shape
        grid = make_coordinate_grid(d, h, w, dtype=kp_source.dtype, device=kp_source.device)
        sparse = sparse_motion(grid, kp_driving, kp_source)
        deformed = deformed_features(compressed, sparse)
        heat = heatmaps(grid, kp_driving, kp_source)
        x = torch.cat([heat, deformed], dim=2).reshape(b, -1, d, h, w)  # (B, (K+1)*5, D, H, W)
        prediction = self.hourglass(x)
        mask = F.softmax(self.mask(prediction), dim=1)  # (B, K+1, D, H, W)
        # Weighted sum of the K+1 grids, written as the plain sum so rounding matches.
        deformation = (sparse.permute(0, 1, 5, 2, 3, 4) * mask.unsqueeze(2)).sum(dim=1)
        out = {"mask": mask, "deformation": deformation.permute(0, 2, 3, 4, 1)}  # (B, D, H, W, 3)
        if self.occlusion is not None:
            folded = prediction.reshape(b, -1, h, w)  # (B, 142, D, H, W) -> (B, 142*D, H, W)
            out["occlusion_map"] = torch.sigmoid(self.occlusion(folded))
        return out


class WarpingNetwork(nn.Module):
    """W(feature_3d, kp_driving, kp_source) -> dict(out, occlusion_map, deformation).

    Args:
        num_kp: implicit keypoints.
        block_expansion, max_features, num_down_blocks: give the 2-D head widths
            (max_features in, block_expansion * 2**num_down_blocks out).
        reshape_channel: C of the feature volume.
        estimate_occlusion_map: predict and apply the occlusion map.
        dense_motion_params: DenseMotionNetwork arguments.
    """

    def __init__(
        self,
        *,
        num_kp: int = 21,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        estimate_occlusion_map: bool = True,
        dense_motion_params: dict,
    ) -> None:
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp,
            feature_channel=reshape_channel,
            estimate_occlusion_map=estimate_occlusion_map,
            **dense_motion_params,
        )
        out_chs = block_expansion * 2**num_down_blocks
        self.third = SameBlock2d(max_features, out_chs, act_layer=nn.LeakyReLU)
        self.fourth = nn.Conv2d(out_chs, out_chs, kernel_size=1)

    def forward(
        self,
        feature_3d: torch.Tensor,
        kp_driving: torch.Tensor,
        kp_source: torch.Tensor,
        compressed: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """feature_3d (B, 32, 16, 64, 64); keypoints (B, 21, 3), driving first as in the official code.

        `compressed` is the source-only `compress_source(feature_3d)`, passed in when cached.
        """
        dense = self.dense_motion_network(feature_3d, kp_driving, kp_source, compressed)
        deformation = dense["deformation"]
        warped = F.grid_sample(feature_3d, deformation, align_corners=False)
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.reshape(b, c * d, h, w)))  # (B, 32, 16, H, W) -> (B, 512, H, W)
        result = {"deformation": deformation}
        if "occlusion_map" in dense:
            out = out * dense["occlusion_map"]
            result["occlusion_map"] = dense["occlusion_map"]
        result["out"] = out
        return result
