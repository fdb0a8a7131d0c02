"""Fused kernels for the warping module (Triton on CUDA, a PyTorch reference elsewhere), and
W's samplers behind one interface (`samplers.py`).

    grid_sample_3d(input, grid)                        trilinear F.grid_sample, zeros, align_corners=False
    hourglass_input(compressed, kp_driving, kp_source) -> (B, 110, D, H, W), heatmaps + deformed features
    deformation(mask, kp_driving, kp_source)           -> (B, D, H, W, 3), weighted sum of the 22 motions
    softmax_deformation(mask_logits, kp_d, kp_s)       the same from the mask conv's logits

Each takes `backend=Backend.AUTO | TRITON | REFERENCE`; see `backend.py`.
"""

from .backend import Backend, kernels_runnable, resolve_backend, triton_available
from .ops import deformation, grid_sample_3d, hourglass_input, softmax_deformation
from .samplers import FusedSampler, GridSampleSampler, Sampler, SeparableSampler

__all__ = [
    "Backend",
    "FusedSampler",
    "GridSampleSampler",
    "Sampler",
    "SeparableSampler",
    "deformation",
    "grid_sample_3d",
    "hourglass_input",
    "kernels_runnable",
    "resolve_backend",
    "softmax_deformation",
    "triton_available",
]
