"""The animator: frame -> crop -> motion -> warp/generate -> paste, for one source photo.

It joins the face detector, the crop, the engines and the paste-back. The source is prepared
once per engine; engines are created on first use, so the live app can switch between the
baseline and the optimized engine between two frames.

A frame is host work (face tracking, crop; then paste-back) around device work (motion,
keypoints, warp, generate). `process` does both in turn; `submit` and `finish` split them so
that the live app can prepare the next frame while the device works on this one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from ..core.config import Config
from ..core.errors import UserError
from ..core.progress import Progress
from ..engine import Anchor, AnimateOptions, Engine, PendingImage, Ratios, SourceState, create_engine
from ..face import DRIVING_CROP, SOURCE_CROP, Crop, Face, FaceDetector, PasteBack, create_detector, crop_face
from ..face.detector import HaarFaceDetector
from ..models import SYNTHETIC, LivePortraitModels, load_liveportrait
from ..models.download import resolve_weights
from ..motion.kinematics import Motion, eye_ratios, lip_ratio
from ..motion.smoothing import MotionSmoother

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

log = logging.getLogger(__name__)

DEFAULT_SOURCE: Traversable = resources.files("lp_live") / "data" / "astronaut.png"  # package data
MIN_SOURCE_SIDE = 64  # pixels; a face crop needs at least this much photo


class InputError(UserError):
    """An input the user gave cannot be used; the message says what to do."""


def read_image(path: str | Path | Traversable) -> np.ndarray:
    """An image file (or package resource) as RGB uint8, or InputError naming the problem."""
    path = Path(path) if isinstance(path, str) else path
    if not path.is_file():
        raise InputError(f"source photo {path} not found; pass an existing image file with --source")
    try:
        data = np.frombuffer(path.read_bytes(), np.uint8)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"{path} is not an image OpenCV can read; use a JPEG or PNG photo")
    if min(image.shape[:2]) < MIN_SOURCE_SIDE:
        h, w = image.shape[:2]
        raise InputError(f"{path} is {w}x{h} pixels; a photo needs at least {MIN_SOURCE_SIDE} pixels on each side")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def fit_source(image: np.ndarray, max_side: int = 1280) -> np.ndarray:
    """The official source preparation: longer side at most `max_side`, then even sides (for H.264)."""
    h, w = image.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        image = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_LINEAR)
        h, w = image.shape[:2]
    return np.ascontiguousarray(image[: h - h % 2, : w - w % 2])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu "
                         "(or install a CUDA build of torch)")
    return device


def landmark_ratios(face: Face, device: torch.device) -> Ratios | None:
    """Eye and lip openness from the 203-point landmarks, when the landmark model ran.

    Computed on the CPU and copied from pinned memory without blocking: a blocking copy onto a
    busy CUDA stream would wait for the frames queued on it.
    """
    if face.landmarks203 is None:
        return None
    lmk = torch.as_tensor(face.landmarks203, dtype=torch.float32)[None]
    eye, lip = eye_ratios(lmk), lip_ratio(lmk)
    if device.type == "cuda":
        eye, lip = eye.pin_memory(), lip.pin_memory()
    return Ratios(eye=eye.to(device, non_blocking=True), lip=lip.to(device, non_blocking=True))


@dataclass
class AnimatedFrame:
    image: np.ndarray  # RGB uint8: the photo size with paste-back, else the generated crop
    face_found: bool
    mode: str  # the engine that produced it


@dataclass
class PendingFrame:
    """A driving frame between `Animator.submit` and `Animator.finish`."""

    mode: str  # the engine it was submitted to
    face_found: bool
    paste_back: bool  # as it was when submitted
    # the device part: its PendingImage (None: no face seen yet, show the still photo), or a
    # Future of that when it runs on a worker thread
    job: Future | PendingImage | None

    def ready(self) -> bool:
        """True when `Animator.finish` would not wait for the device."""
        job = self.job
        if isinstance(job, Future):
            if not job.done():
                return False
            job = job.result()
        return job is None or job.ready()


@dataclass
class SourcePhoto:
    """A source photo as the Animator uses it: the photo, its face crop and landmark ratios, its
    paste-back, and its prepared state per engine (filled on first use)."""

    image: np.ndarray  # RGB uint8, scaled by `fit_source`
    crop: Crop
    ratios: Ratios | None
    paster: PasteBack
    states: dict[str, SourceState] = field(default_factory=dict)


class Animator:
    """Animates one source photo from driving frames, with switchable engines and options.

    It owns the driving state: the `Anchor` (one driving stream, kept across engine switches)
    and the `AnimateOptions`; each engine owns only its prepared `SourceState`.

    Args:
        source_rgb: the photo, RGB uint8 (scaled to at most 1280 and trimmed to even sides).
        engine_factory: mode -> engine, called once per mode on first use.
        detector: face detector for the source and the driving frames.
        mode: the first engine to use.
        options: keypoint options for every engine; the Animator owns them (`options` is
            replaced, never mutated, between frames: a frame in flight keeps its own).
        paste_back: paste the animated face back into the photo.
        crop_driving: crop driving frames around the detected face (off: use whole frames,
            for driving videos that are already face crops).
        smoother: filter for the driving motion, or None.
        input_size: network input side.
        weights_kind: "real" or "synthetic", for display.
    """

    def __init__(
        self,
        source_rgb: np.ndarray,
        engine_factory: Callable[[str], Engine],
        detector: FaceDetector,
        *,
        mode: str = "optimized",
        modes: tuple[str, ...] = ("baseline", "optimized"),
        options: AnimateOptions | None = None,
        paste_back: bool = True,
        crop_driving: bool = True,
        smoother: MotionSmoother | None = None,
        input_size: int = 256,
        weights_kind: str = SYNTHETIC,
        device: torch.device | None = None,
    ) -> None:
        self.modes = modes
        self.options = options or AnimateOptions()
        self.paste_back = paste_back
        self.crop_driving = crop_driving
        self.smoother = smoother
        self.input_size = input_size
        self.weights_kind = weights_kind
        self.device = device or torch.device("cpu")
        self.detector = detector
        self.warnings: tuple[str, ...] = ()  # requests that cannot be honoured here (logged once, shown on the HUD)
        self.frames_without_face = 0
        self._engine_factory = engine_factory
        self.anchor = Anchor()  # the driving stream's neutral pose, shared by the engines
        self._engines: dict[str, Engine] = {}
        self._last_motion: Motion | None = None
        self._last_output: np.ndarray | None = None

        self.generated_size = 2 * input_size
        self._photos = [self._load_photo(source_rgb)]
        self.source_index = 0
        self._use(self._photos[0])
        self.mode = ""
        self.set_mode(mode)

    # -- engines -----------------------------------------------------------------------------
    def engine(self, mode: str) -> Engine:
        if mode not in self.modes:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(self.modes)}")
        if mode not in self._engines:
            self._engines[mode] = self._engine_factory(mode)
        if mode not in self._sources:  # this engine's state for the photo in use, prepared once
            self._sources[mode] = self._engines[mode].prepare_source(self.source_crop.input, ratios=self.source_ratios)
        return self._engines[mode]

    def set_mode(self, mode: str) -> None:
        """Use engine `mode` from the next frame on (the anchor is the Animator's: it is kept)."""
        self.engine(mode)
        self.mode = mode

    # -- several source photos -----------------------------------------------------------------
    def _load_photo(self, source_rgb: np.ndarray) -> SourcePhoto:
        image = fit_source(source_rgb)
        face = self.detector.detect(image)
        if face is None:
            raise InputError("no face found in the source photo; use a photo with one clear, frontal face")
        crop = crop_face(image, face, SOURCE_CROP, input_size=self.input_size)
        paster = PasteBack(image, crop, generated_size=self.generated_size, device=self.device)
        return SourcePhoto(image, crop, landmark_ratios(face, self.device), paster)

    def _use(self, photo: SourcePhoto) -> None:
        self.source, self.source_crop, self.source_ratios = photo.image, photo.crop, photo.ratios
        self.paster, self._sources = photo.paster, photo.states

    @property
    def source_count(self) -> int:
        return len(self._photos)

    def add_source(self, source_rgb: np.ndarray) -> int:
        """Add another source photo (its face found now: InputError when there is none); returns
        its index for `select_source`. Each engine prepares it when it is first selected."""
        self._photos.append(self._load_photo(source_rgb))
        return len(self._photos) - 1

    def select_source(self, index: int) -> None:
        """Animate photo `index` from the next frame on, keeping the driving anchor (call it with
        no frame in flight). Its state for the engine in use is prepared on its first selection."""
        if index == self.source_index:
            return
        self._use(self._photos[index])
        self.source_index = index
        if self.mode:
            self.engine(self.mode)
            if self.anchor.motion is not None:  # the same driving pose, mapped to this photo's pose
                self.anchor.fill(self._sources[self.mode], self.anchor.motion)

    def reanchor(self) -> None:
        """Take the next driving frame as the neutral pose (the source's own pose)."""
        self.anchor.reset()
        if self.smoother is not None:
            self.smoother.reset()

    # -- per frame ---------------------------------------------------------------------------
    def driving_input(self, frame_rgb: np.ndarray) -> tuple[np.ndarray | None, Face | None]:
        """The network input for a driving frame, or None when no face is found in it."""
        if not self.crop_driving:
            return frame_rgb, None
        face = self.detector.track(frame_rgb)
        if face is None:
            return None, None
        return crop_face(frame_rgb, face, DRIVING_CROP, input_size=self.input_size).input, face

    def process(self, frame_rgb: np.ndarray, timestamp: float | None = None) -> AnimatedFrame:
        """Animate the source with one driving frame (RGB uint8, any size).

        `timestamp` (seconds) drives the motion filter; the wall clock is used when None.
        A frame without a face reuses the last good motion (and is counted).
        """
        return self.finish(self.submit(frame_rgb, timestamp))

    @torch.no_grad()
    def submit(self, frame_rgb: np.ndarray, timestamp: float | None = None, *,
               worker: Executor | None = None) -> PendingFrame:
        """Start animating one driving frame; `finish` waits for it and returns the AnimatedFrame.

        The host part runs now: face tracking and the crop. The device part (motion, filter,
        keypoints, warp, generate) is queued on the engine's stream where the engine is
        asynchronous (the optimized engine on CUDA), else runs on `worker` when given (one
        thread, so device parts run in submission order), else runs now. Finish frames in the
        order they were submitted, and change the mode or re-anchor only with none in flight.
        """
        engine, source = self._engines[self.mode], self._sources[self.mode]
        timestamp = time.perf_counter() if timestamp is None else timestamp
        driving, face = self.driving_input(frame_rgb)
        self.frames_without_face += driving is None

        options = self.options  # this frame's, even if a hotkey replaces them meanwhile

        def device_part() -> PendingImage | None:
            with torch.no_grad(), engine.launching():
                return self._device_part(engine, source, driving, face, timestamp, options)

        job = worker.submit(device_part) if worker is not None and not engine.asynchronous else device_part()
        return PendingFrame(self.mode, face_found=driving is not None, paste_back=self.paste_back, job=job)

    def _device_part(self, engine: Engine, source: SourceState, driving: np.ndarray | None, face: Face | None,
                     timestamp: float, options: AnimateOptions) -> PendingImage | None:
        if driving is None:
            motion = self._last_motion  # no face in this frame: hold the last good motion
            if motion is None:
                return None
        else:
            motion = engine.extract_motion(driving)
            if self.smoother is not None:
                motion = self.smoother(motion, timestamp)
            self._last_motion = motion
        ratios = landmark_ratios(face, self.device) if face is not None else None
        return engine.submit(source, motion, anchor=self.anchor, options=options, ratios=ratios)

    def finish(self, pending: PendingFrame) -> AnimatedFrame:
        """Wait for a submitted frame's device part, then paste it back."""
        job = pending.job.result() if isinstance(pending.job, Future) else pending.job
        if job is None:  # nothing seen yet: show the still photo
            return AnimatedFrame(self.still(pending.paste_back), face_found=False, mode=pending.mode)
        generated = job.result()
        image = self.paster(generated) if pending.paste_back else generated
        return AnimatedFrame(image, face_found=pending.face_found, mode=pending.mode)

    def still(self, paste_back: bool | None = None) -> np.ndarray:
        """The un-animated output: the photo (paste-back) or its crop at the generated size."""
        if self.paste_back if paste_back is None else paste_back:
            return self.source.copy()
        size = (self.generated_size, self.generated_size)
        return cv2.resize(self.source_crop.image, size, interpolation=cv2.INTER_AREA)

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames `process` returns."""
        if self.paste_back:
            return self.source.shape[1], self.source.shape[0]
        return self.generated_size, self.generated_size

    # -- the live path's requests (`lp_live.stream.contract.LiveAnimator`) -----------------------
    @property
    def stitching(self) -> bool:
        """Stitching is on in the current `options`."""
        return bool(self.options.stitching)

    def set_stitching(self, on: bool) -> None:
        """Stitching on or off from the next frame on; `options` are replaced, never mutated, so a
        frame in flight keeps the ones it was given."""
        import dataclasses

        self.options = dataclasses.replace(self.options, stitching=on)

    def set_paste_back(self, on: bool) -> None:
        """Paste the animated face back into the photo (or show the crop) from the next frame on."""
        self.paste_back = on

    def compiles(self, mode: str) -> bool:
        """True when the first frame of engine `mode` compiles it (builds the engine if needed)."""
        return bool(getattr(self.engine(mode), "compiled", False))


def load_models(config: Config, device: torch.device) -> LivePortraitModels:
    return load_liveportrait(resolve_weights(config.engine.weights), device=device)


def build_animator(config: Config, source_rgb: np.ndarray, *, models: LivePortraitModels | None = None,
                   more_sources: list[np.ndarray] | tuple[np.ndarray, ...] = (),
                   progress: Progress | None = None) -> Animator:
    """An Animator for `source_rgb` (and `more_sources`, selectable with `select_source`) from a
    run configuration (loads or builds the weights). `progress` gets the long steps (loading
    the models, building each engine)."""
    eng = config.engine
    device = resolve_device(eng.device)
    progress = progress or Progress()
    if models is None:
        with progress.step("loading the models"):
            models = load_models(config, device)
    weights_dir = None if models.kind == SYNTHETIC else Path(models.source).parent
    anim = config.animation
    detector = create_detector(weights_dir, redetect_every=config.face.redetect_every,
                               smoothing=config.face.box_smoothing)
    warnings = unmet_requests(config, device, detector)
    for line in warnings:
        log.warning("%s", line)
    build = engine_factory(config, models, device)

    def factory(mode: str) -> Engine:
        with progress.step(f"building the {mode} engine"):
            return build(mode)

    options = anim.options()
    smoother = MotionSmoother(anim.smoothing_min_cutoff, anim.smoothing_beta) if anim.smoothing else None
    animator = Animator(
        source_rgb,
        factory,
        detector,
        mode=eng.mode,
        options=options,
        paste_back=anim.paste_back,
        crop_driving=config.face.crop_driving,
        smoother=smoother,
        input_size=eng.input_size,
        weights_kind=models.kind,
        device=device,
    )
    animator.warnings = tuple(warnings)
    for more in more_sources:
        animator.add_source(more)
    return animator


def engine_factory(config: Config, models: LivePortraitModels, device: torch.device) -> Callable[[str], Engine]:
    """mode -> a new engine for that mode, as the configuration asks (built when called)."""
    eng = config.engine
    optimized_kwargs = eng.optimized_kwargs()
    if eng.kernels == "on" and not kernels_runnable(device):
        optimized_kwargs["kernels"] = None  # the default layout for this device (unmet_requests warns)

    def factory(mode: str) -> Engine:
        if mode == "optimized":
            return create_engine(mode, models, device, input_size=eng.input_size, **optimized_kwargs)
        return create_engine(mode, models, device, input_size=eng.input_size)

    return factory


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


def kernels_runnable(device: torch.device) -> bool:
    """Whether the fused Triton warping kernels can run on `device` (CUDA with triton importable)."""
    from ..kernels import triton_available

    return device.type == "cuda" and triton_available()
