"""Fused kernels for the warping module (Triton on CUDA, a PyTorch reference elsewhere).

    grid_sample_3d(input, grid)                        trilinear F.grid_sample, zeros, align_corners=False
    hourglass_input(compressed, kp_driving, kp_source) -> (B, 110, D, H, W), heatmaps + deformed features
    deformation(mask, kp_driving, kp_source)           -> (B, D, H, W, 3), weighted sum of the 22 motions
    softmax_deformation(mask_logits, kp_d, kp_s)       the same from the mask conv's logits
    pointwise_conv_occlusion(x, w, b, occlusion)       W.fourth and the occlusion multiply
    warp_with_kernels(warping_module, feature_3d, kp_driving, kp_source, compressed=None)

Each takes `backend=Backend.AUTO | TRITON | REFERENCE`; see `backend.py`.
"""

from .backend import Backend, resolve_backend, triton_available
from .ops import (
    deformation,
    grid_sample_3d,
    hourglass_input,
    pointwise_conv_occlusion,
    softmax_deformation,
)
from .warping import warp_with_kernels

__all__ = [
    "Backend",
    "deformation",
    "grid_sample_3d",
    "hourglass_input",
    "pointwise_conv_occlusion",
    "resolve_backend",
    "softmax_deformation",
    "triton_available",
    "warp_with_kernels",
]
