"""Building the animator from a run configuration: device, models, detector, engines, warnings.

    animator = build_animator(config, read_image("me.jpg"), progress=progress)

The engine factory and the list of unmet requests are shared with the server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..core.config import Config
from ..core.modes import MODES
from ..core.progress import Progress
from ..engine import Engine
from ..engine.factory import build_engine
from ..face import FaceDetector, create_detector
from ..face.detector import HaarFaceDetector
from ..kernels import kernels_runnable
from ..models import SYNTHETIC, LivePortraitModels, load_liveportrait
from ..models.download import resolve_weights
from ..motion.smoothing import MotionSmoother
from .animator import Animator
from .photo import InputError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """The torch device of `engine.device` (auto: cuda when PyTorch sees a GPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu "
                         "(or install a CUDA build of torch)")
    return device


def create_driving_detector(config: Config, models: LivePortraitModels) -> FaceDetector:
    """A face detector and tracker for one driving stream (landmarks where the real weights have them)."""
    weights_dir = None if models.kind == SYNTHETIC else Path(models.source).parent
    face = config.face
    return create_detector(weights_dir, redetect_every=face.redetect_every, smoothing=face.box_smoothing)


def create_smoother(config: Config) -> MotionSmoother | None:
    """A driving stream's motion filter, as the configuration asks (None: off)."""
    anim = config.animation
    return MotionSmoother(anim.smoothing_min_cutoff, anim.smoothing_beta) if anim.smoothing else None


def load_models(config: Config, device: torch.device) -> LivePortraitModels:
    return load_liveportrait(resolve_weights(config.engine.weights), device=device)


def build_animator(config: Config, source_rgb: np.ndarray, *, models: LivePortraitModels | None = None,
                   more_sources: list[np.ndarray] | tuple[np.ndarray, ...] = (),
                   progress: Progress | None = None) -> Animator:
    """An Animator for `source_rgb` (and `more_sources`, selectable with `select_source`) from a
    run configuration (loads or builds the weights). `progress` gets the long steps (loading
    the models, building each engine). With `engine.mode: optimized` the animator starts on the
    baseline engine and builds the optimized one in the background (`Animator.start_background`;
    the live loop and the render switch to it when it is ready), unless
    `engine.wait_for_optimized`."""
    eng = config.engine
    device = resolve_device(eng.device)
    progress = progress or Progress()
    if models is None:
        with progress.step("loading the models"):
            models = load_models(config, device)
    with progress.step("preparing the photo and the first engine"):
        return _build(config, source_rgb, models, device, more_sources, progress)


def _build(config: Config, source_rgb: np.ndarray, models: LivePortraitModels, device: torch.device,
           more_sources: list[np.ndarray] | tuple[np.ndarray, ...], progress: Progress) -> Animator:
    eng, anim = config.engine, config.animation
    detector = create_driving_detector(config, models)
    warnings = unmet_requests(config, device, detector)
    for line in warnings:
        log.warning("%s", line)
    build = engine_factory(config, models, device)

    def factory(mode: str) -> Engine:
        with progress.step(f"building the {mode} engine"):
            return build(mode)

    background = eng.mode == "optimized" and not eng.wait_for_optimized
    animator = Animator(
        source_rgb,
        factory,
        detector,
        mode="baseline" if background else eng.mode,
        modes=MODES,
        options=anim.options(),
        paste_back=anim.paste_back,
        crop_driving=config.face.crop_driving,
        smoother=create_smoother(config),
        input_size=eng.input_size,
        weights_kind=models.kind,
        device=device,
    )
    animator.warnings = tuple(warnings)
    for more in more_sources:
        animator.add_source(more)
    if background:  # the baseline engine animates from the first frame; the optimized one compiles beside it
        animator.start_background("optimized", build)
    return animator


def engine_factory(config: Config, models: LivePortraitModels, device: torch.device) -> Callable[[str], Engine]:
    """mode -> a new engine for that mode, as the configuration asks (built when called)."""
    return lambda mode: build_engine(mode, models, device, config.engine)


def unmet_requests(config: Config, device: torch.device, detector: FaceDetector) -> list[str]:
    """One line per requested option that cannot be honoured on this machine, saying what to do."""
    out = []
    anim = config.animation
    wanted = [n for n, on in (("eye retargeting", anim.eye_retargeting), ("lip retargeting", anim.lip_retargeting),
                              ("lip normalisation", anim.normalize_lip)) if on]
    if wanted and isinstance(detector, HaarFaceDetector):
        out.append(f"{' and '.join(wanted)} off: no landmark model (lp-live download-weights, pip install "
                   "onnxruntime)")
    if config.engine.kernels == "on" and not kernels_runnable(device):
        if device.type != "cuda":
            out.append(f"Triton kernels off: they run on CUDA only, not {device.type}; PyTorch warping instead")
        else:
            out.append("Triton kernels off: triton is not importable (pip install triton); PyTorch warping instead")
    return out

