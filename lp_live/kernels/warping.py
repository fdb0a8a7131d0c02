"""WarpingNetwork.forward with the fused kernels, on the module's own weights."""

from __future__ import annotations

import torch

from ..models.warping import WarpingNetwork
from .backend import Backend
from .ops import grid_sample_3d, hourglass_input, pointwise_conv_occlusion, softmax_deformation


def warp_with_kernels(
    warping_module: WarpingNetwork,
    feature_3d: torch.Tensor,
    kp_driving: torch.Tensor,
    kp_source: torch.Tensor,
    compressed: torch.Tensor | None = None,
    *,
    backend: Backend | str = Backend.AUTO,
    fuse_occlusion: bool = True,
) -> dict[str, torch.Tensor]:
    """`warping_module(feature_3d, kp_driving, kp_source, compressed)`, same outputs, with the kernels.

    What changes against `WarpingNetwork.forward`:
      * sparse motions, the repeated volume, heatmaps and their concatenation become one
        `hourglass_input` kernel;
      * mask softmax and the weighted sum of the K+1 grids become `softmax_deformation`
        (the dense-motion `mask` output is not produced: W does not return it);
      * the final warp is `grid_sample_3d`;
      * `fourth` and the occlusion multiply become `pointwise_conv_occlusion`
        (`fuse_occlusion=False` keeps `fourth` and a separate multiply).
    The convolutions (compress, hourglass, mask, occlusion, third) are the module's own.

    Args:
        warping_module: a WarpingNetwork (any dtype; keypoints, grids and the deformation stay float32).
        feature_3d: (B, 32, 16, H, W) source feature volume.
        kp_driving, kp_source: (B, 21, 3).
        compressed: cached `dense_motion_network.compress_source(feature_3d)`, or None.
        backend: see `lp_live.kernels.backend`.
        fuse_occlusion: use the fused `fourth` + occlusion kernel.

    Returns dict(deformation (B, D, H, W, 3), occlusion_map (B, 1, H, W) if estimated, out (B, 256, H, W)).
    """
    dense = warping_module.dense_motion_network
    if compressed is None:
        compressed = dense.compress_source(feature_3d)
    b, _, _, h, w = compressed.shape
    prediction = dense.hourglass(hourglass_input(compressed, kp_driving, kp_source, backend=backend))
    deformation = softmax_deformation(dense.mask(prediction), kp_driving, kp_source, backend=backend)
    warped = grid_sample_3d(feature_3d, deformation, backend=backend)
    bw, c, dw, hw, ww = warped.shape
    hidden = warping_module.third(warped.reshape(bw, c * dw, hw, ww))  # (B, 32, 16, H, W) -> (B, 512, H, W)

    result = {"deformation": deformation}
    fourth = warping_module.fourth
    if dense.occlusion is None:
        out = fourth(hidden)
    else:
        occlusion_map = torch.sigmoid(dense.occlusion(prediction.reshape(b, -1, h, w)))  # (B, 142*D, H, W)
        if fuse_occlusion:
            out = pointwise_conv_occlusion(hidden, fourth.weight, fourth.bias, occlusion_map, backend=backend)
        else:
            out = fourth(hidden) * occlusion_map
        result["occlusion_map"] = occlusion_map
    result["out"] = out
    return result
