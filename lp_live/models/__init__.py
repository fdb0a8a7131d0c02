"""The LivePortrait networks (F, M, W, G and the three MLPs) and their checkpoints."""

from .checkpoint import (
    SYNTHETIC,
    LivePortraitModels,
    WeightsError,
    default_cache_dir,
    load_liveportrait,
    synthetic_liveportrait,
)
from .registry import MODEL_NAMES, build

__all__ = [
    "MODEL_NAMES",
    "SYNTHETIC",
    "LivePortraitModels",
    "WeightsError",
    "build",
    "default_cache_dir",
    "load_liveportrait",
    "synthetic_liveportrait",
]
