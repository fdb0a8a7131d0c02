"""PyTorch reference for every kernel: the same ops, in the same order, as `lp_live.models.warping`.

Used on CPU, where triton is missing, and as the ground truth in the tests. Coordinates are
float32; low-precision features are sampled in float32 and rounded once at the end.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from ..models.warping import kp2gaussian, make_coordinate_grid, sparse_motion


@lru_cache(maxsize=16)
def identity_grid(depth: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """The float32 (D, H, W, 3) grid of `make_coordinate_grid`, built once per size and device.

    Build it before any CUDA-graph capture (a warm-up call does): a tensor first made while
    capturing would live in the graph's memory pool.
    """
    with torch.inference_mode(False):  # usable outside inference mode too
        return make_coordinate_grid(depth, height, width, dtype=torch.float32, device=device)


def grid_sample_3d(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """F.grid_sample (trilinear, zeros, align_corners=False) in float32, returned in input's dtype.
    A batch-1 input is sampled by every grid."""
    input = input.expand(grid.shape[0], *input.shape[1:])
    sampled = F.grid_sample(
        input.float(), grid.float(), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return sampled.to(input.dtype)


def hourglass_input(compressed: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor,
                    grid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, (K+1)*(C+1), D, H, W): per slot [heatmap, C deformed channels], slot 0 the background.
    A batch-1 `compressed` and `kp_source` serve every driving slot."""
    b = kp_driving.shape[0]
    _, c, d, h, w = compressed.shape
    grid = identity_grid(d, h, w, compressed.device) if grid is None else grid
    compressed = compressed.expand(b, c, d, h, w)
    kp_driving, kp_source = kp_driving.float(), kp_source.float().expand_as(kp_driving)
    sparse = sparse_motion(grid, kp_driving, kp_source)
    slots = sparse.shape[1]
    repeated = compressed[:, None].expand(b, slots, c, d, h, w).reshape(b * slots, c, d, h, w)
    deformed = grid_sample_3d(repeated, sparse.reshape(b * slots, d, h, w, 3)).reshape(b, slots, c, d, h, w)
    heat = kp2gaussian(kp_driving, grid) - kp2gaussian(kp_source, grid)
    heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).unsqueeze(2).to(compressed.dtype)
    return torch.cat([heat, deformed], dim=2).reshape(b, slots * (c + 1), d, h, w)


def deformation(mask: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor,
                grid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, D, H, W, 3) float32: the mask-weighted sum of the K+1 sparse motions (kp_source: batch B or 1)."""
    d, h, w = mask.shape[2:]
    grid = identity_grid(d, h, w, mask.device) if grid is None else grid
    sparse = sparse_motion(grid, kp_driving.float(), kp_source.float().expand_as(kp_driving))
    weighted = (sparse.permute(0, 1, 5, 2, 3, 4) * mask.float().unsqueeze(2)).sum(dim=1)
    return weighted.permute(0, 2, 3, 4, 1)


def softmax_deformation(mask_logits: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor,
                        grid: torch.Tensor | None = None) -> torch.Tensor:
    """`deformation` of the float32 softmax over the K+1 slots of the mask conv's output."""
    return deformation(F.softmax(mask_logits.float(), dim=1), kp_driving, kp_source, grid)
