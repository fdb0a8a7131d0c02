"""`build(name)`: the networks by their checkpoint names, with the official hyper-parameters.

One registry entry per network: the class and its constructor arguments as released with the
official LivePortrait (human) checkpoints. They are data in code, so an installed package needs
no file beside it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .appearance import AppearanceFeatureExtractor
from .motion import MotionExtractor
from .spade import SPADEDecoder
from .stitching import RetargetingMLP
from .warping import WarpingNetwork


@dataclass(frozen=True)
class ModelSpec:
    """A network class and its official constructor arguments."""

    cls: type[nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, ModelSpec] = {
    "appearance_feature_extractor": ModelSpec(AppearanceFeatureExtractor, dict(
        image_channel=3, block_expansion=64, num_down_blocks=2, max_features=512, reshape_channel=32,
        reshape_depth=16, num_resblocks=6)),
    "motion_extractor": ModelSpec(MotionExtractor, dict(
        num_kp=21,
        num_bins=66,  # the official code default; not in the official yaml
        depths=[3, 3, 9, 3], dims=[96, 192, 384, 768])),  # ConvNeXt-V2 tiny
    "warping_module": ModelSpec(WarpingNetwork, dict(
        num_kp=21, block_expansion=64, max_features=512, num_down_blocks=2, reshape_channel=32,
        estimate_occlusion_map=True,
        dense_motion_params=dict(block_expansion=32, max_features=1024, num_blocks=5, reshape_depth=16, compress=4))),
    "spade_generator": ModelSpec(SPADEDecoder, dict(
        upscale=2, block_expansion=64, max_features=512, num_down_blocks=2,
        out_channels=64)),  # the official code default; not in the official yaml
    # The three MLPs of retargeting_models/stitching_retargeting_module.pth:
    # sub-dict `retarget_shoulder`: [x_s, x_d] -> 63 deltas + (tx, ty)
    "stitching": ModelSpec(RetargetingMLP, dict(input_size=126, hidden_sizes=[128, 128, 64], output_size=65)),
    # sub-dict `retarget_mouth`: [x_s, c_s_lip, c_d_lip] -> 63 deltas
    "lip": ModelSpec(RetargetingMLP, dict(input_size=65, hidden_sizes=[128, 128, 64], output_size=63)),
    # sub-dict `retarget_eye`: [x_s, c_s_eyeL, c_s_eyeR, c_d_eyeL] -> 63 deltas
    "eye": ModelSpec(RetargetingMLP, dict(input_size=66, hidden_sizes=[256, 256, 128, 128, 64], output_size=63)),
}
MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)


def model_configs() -> dict[str, dict[str, Any]]:
    """The official constructor arguments of every network, by name (a copy)."""
    return {name: copy.deepcopy(spec.kwargs) for name, spec in REGISTRY.items()}


def build(name: str, **overrides: Any) -> nn.Module:
    """The network `name` with the official hyper-parameters (overridable), in eval mode."""
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    spec = REGISTRY[name]
    return spec.cls(**{**model_configs()[name], **overrides}).eval()
