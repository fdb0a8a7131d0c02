"""Engines: the baseline (official eager path) and the optimized path behind one interface."""

from __future__ import annotations

import torch

from ..core.modes import MODES
from ..models import LivePortraitModels
from .base import Anchor, AnimateOptions, Engine, EngineBase, PendingImage, Ratios, SourceState, SourceVolumes
from .baseline import BaselineEngine


def create_engine(mode: str, models: LivePortraitModels, device: str | torch.device, **kwargs) -> Engine:
    """The engine for `mode` (one of `MODES`) on `device`; `kwargs`: its constructor's (`factory.engine_kwargs`)."""
    if mode == "baseline":
        return BaselineEngine(models, device, **kwargs)
    if mode == "optimized":
        from .optimized import OptimizedEngine

        return OptimizedEngine(models, device, **kwargs)
    raise ValueError(f"unknown engine mode {mode!r}; choose one of {', '.join(MODES)}")


__all__ = ["MODES", "Anchor", "AnimateOptions", "BaselineEngine", "Engine", "EngineBase", "PendingImage", "Ratios",
           "SourceState", "SourceVolumes", "create_engine"]
