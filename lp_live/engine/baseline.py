"""The baseline engine: eager PyTorch, one frame at a time, as the official pipeline runs.

float32 on the CPU; on CUDA, fp16 autocast around F, M and W+G with float32 outputs (the
official `flag_use_half_precision`). Host<->device copies are plain synchronous copies and
resizing/conversion happens on the host with OpenCV and numpy, as in the official code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from .base import EngineBase, SourceState, per_slot


class BaselineEngine(EngineBase):
    name = "baseline"

    def __init__(self, models, device, *, input_size: int = 256) -> None:
        super().__init__(models, device, input_size=input_size)
        self.half = self.device.type == "cuda"

    def _autocast(self):
        if self.half:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def to_input(self, images: np.ndarray) -> torch.Tensor:
        if images.ndim == 3:
            images = images[None]
        size = self.input_size
        if images.shape[1:3] != (size, size):
            images = np.stack([cv2.resize(im, (size, size)) for im in images])
        x = np.clip(images.astype(np.float32) / 255.0, 0, 1).transpose(0, 3, 1, 2)
        with self.timer.stage("copy_h2d"):
            return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def source_features(self, image: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.models.appearance_feature_extractor(image).float()

    def motion_raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        with self._autocast():
            return {k: v.float() for k, v in self.models.motion_extractor(image).items()}

    def warp(self, sources: SourceState | Sequence[SourceState], x_d: torch.Tensor) -> torch.Tensor:
        slots = per_slot(sources, x_d.shape[0], SourceState)
        if isinstance(slots, SourceState):  # one source: a view over the batch
            f_s = slots.feature_3d.expand(x_d.shape[0], *slots.feature_3d.shape[1:])
            x_s = slots.x_s.expand_as(x_d)
        else:
            f_s = torch.cat([s.feature_3d for s in slots])
            x_s = torch.cat([s.x_s for s in slots])
        with self._autocast():
            return self.models.warping_module(f_s, kp_driving=x_d, kp_source=x_s)["out"]

    def generate(self, sources: SourceState | Sequence[SourceState], x_d: torch.Tensor) -> np.ndarray:
        with self.timer.stage("warping"):
            feature = self.warp(sources, x_d)
        with self.timer.stage("generator"), self._autocast():
            image = self.models.spade_generator(feature).float()
        with self.timer.stage("copy_d2h"):
            image = image.permute(0, 2, 3, 1).cpu().numpy()
        with self.timer.stage("post"):
            # clip, scale, clip, truncate: the official conversion (it truncates, not rounds)
            return (np.clip(np.clip(image, 0, 1) * 255, 0, 255)).astype(np.uint8)
