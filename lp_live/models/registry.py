"""`build(name)`: the networks by their checkpoint names, with the official hyper-parameters."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from .appearance import AppearanceFeatureExtractor
from .motion import MotionExtractor
from .spade import SPADEDecoder
from .stitching import RetargetingMLP
from .warping import WarpingNetwork

MODELS_YAML = Path(__file__).resolve().parents[2] / "configs" / "models.yaml"

_CLASSES: dict[str, type[nn.Module]] = {
    "appearance_feature_extractor": AppearanceFeatureExtractor,
    "motion_extractor": MotionExtractor,
    "warping_module": WarpingNetwork,
    "spade_generator": SPADEDecoder,
    "stitching": RetargetingMLP,
    "lip": RetargetingMLP,
    "eye": RetargetingMLP,
}
MODEL_NAMES: tuple[str, ...] = tuple(_CLASSES)


@cache
def model_configs(path: Path = MODELS_YAML) -> dict[str, dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    missing = set(MODEL_NAMES) - set(cfg)
    if missing:
        raise ValueError(f"{path}: no hyper-parameters for {sorted(missing)}")
    return cfg


def build(name: str, **overrides: Any) -> nn.Module:
    """The network `name` with the official hyper-parameters (overridable), in eval mode."""
    if name not in _CLASSES:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    kwargs = {**model_configs()[name], **overrides}
    return _CLASSES[name](**kwargs).eval()
