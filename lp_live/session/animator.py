"""The desktop animator: one driving stream, its source photos and the engines, with submit/finish.

A frame is host work (face tracking, crop; then paste-back) around device work (motion,
keypoints, warp, generate), both done by the shared per-frame path (`driving.py`, `step.py`)
that the server runs for many streams at once. `process` does a frame in one go; `submit` and
`finish` split it so that the live app can prepare the next frame while the device works on
this one. Engines are created on first use, so the live app can switch between the baseline
and the optimized engine between two frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np
import torch

from ..core.config import AnimateOptions
from ..engine import Anchor, Engine
from ..face import FaceDetector
from ..models import SYNTHETIC
from ..motion.smoothing import MotionSmoother
from .driving import DrivingStream
from .engines import EnginePool, warm_frame
from .photo import SourcePhoto, load_photo
from .step import Job, finish, launch


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
    job: Future | Job  # the launched frame, or a Future of it where the device part runs on a worker
    locked: bool = False  # it holds the pool's device lock until `finish` (an exclusive background build)

    def ready(self) -> bool:
        """True when `Animator.finish` would not wait for the device."""
        job = self.job
        if isinstance(job, Future):
            if not job.done():
                return False
            job = job.result()
        return job.ready()


class Animator:
    """Animates source photos from one driving camera, with switchable engines and options.

    Args:
        source_rgb: the first photo, RGB uint8 (fitted to at most 1280 and even sides here).
        engine_factory: mode -> engine, called once per mode on first use.
        detector: face detector for the source photos and the driving frames.
        mode: the first engine to use; modes: the engines it may switch between.
        options: keypoint options (replaced, never mutated, between frames).
        paste_back: paste the animated face back into the photo.
        crop_driving: crop driving frames around the detected face (off: whole frames).
        smoother: filter for the driving motion, or None.
        input_size: network input side.
        weights_kind: "real" or "synthetic", for display.
        device: the engines' device.
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
        self.pool = EnginePool(engine_factory, modes)
        self.weights_kind = weights_kind
        self.device = device or torch.device("cpu")
        self.input_size = input_size
        self.warnings: tuple[str, ...] = ()  # requests that cannot be honoured here (logged once, shown on the HUD)
        self._photos = [self._load_photo(source_rgb, detector)]
        self.source_index = 0
        self.stream = DrivingStream(self._photos[0], detector, input_size=input_size, options=options,
                                    paste_back=paste_back, crop_driving=crop_driving, smoother=smoother)
        self.mode = ""
        self.set_mode(mode)

    def _load_photo(self, source_rgb: np.ndarray, detector: FaceDetector) -> SourcePhoto:
        return load_photo(source_rgb, detector, input_size=self.input_size, device=self.device)

    # -- engines -----------------------------------------------------------------------------
    @property
    def modes(self) -> tuple[str, ...]:
        return self.pool.modes

    def engine(self, mode: str) -> Engine:
        """The engine of `mode` (built on first use) with the photo in use prepared for it."""
        engine = self.pool.get(mode)
        self.stream.photo.state(engine, mode)
        return engine

    def set_mode(self, mode: str) -> None:
        """Use engine `mode` from the next frame on (the anchor is the stream's: it is kept)."""
        self.engine(mode)
        self.mode = mode

    def compiles(self, mode: str) -> bool:
        """Whether the first frame of engine `mode` compiles it (a long first frame)."""
        return bool(getattr(self.engine(mode), "compiled", False))

    # -- the optimized engine built beside the running one --------------------------------------
    def start_background(self, mode: str, factory: Callable[[str], Engine] | None = None) -> None:
        """Build, compile and warm engine `mode` on a thread of its own while the current engine
        animates; the live loop switches to it between two frames (`adopt_background`).

        Args:
            mode: the engine to build.
            factory: builds it (default: the pool's; one that reports progress steps must not be
                used here, the steps are the foreground's).
        """
        self.pool.build_in_background(mode, warm_frame(self.stream.photo, mode), device=self.device,
                                      factory=factory)

    def background_status(self) -> str | None:
        """"optimized engine compiling... 12 s" while an engine is built in the background, else None."""
        build = self.pool.pending()
        if build is None:
            return None
        return f"{build.mode} engine compiling... {build.seconds():.0f} s"

    def background_ready(self) -> bool:
        """True when the engine built in the background can be adopted without waiting."""
        return self.pool.ready()

    def adopt_background(self) -> str | None:
        """Switch to the engine built in the background (call between two frames, none in flight):
        its mode, or None when its build failed (then said in `warnings`)."""
        mode = self.pool.adopt()
        if mode is None:
            if self.pool.background_error and self.pool.background_error not in self.warnings:
                self.warnings = (*self.warnings, self.pool.background_error)
            return None
        self.set_mode(mode)
        return mode

    # -- the driving stream's state, as the live app and its tests see it ----------------------
    @property
    def detector(self) -> FaceDetector:
        return self.stream.detector

    @property
    def anchor(self) -> Anchor:
        return self.stream.anchor

    @property
    def source(self) -> np.ndarray:
        """The photo in use (fitted)."""
        return self.stream.photo.image

    @property
    def options(self) -> AnimateOptions:
        return self.stream.options

    @property
    def paste_back(self) -> bool:
        return self.stream.paste_back

    @property
    def mirror(self) -> bool:
        return self.stream.mirror

    @property
    def stitching(self) -> bool:
        return self.stream.options.stitching

    @property
    def frames_without_face(self) -> int:
        return self.stream.frames_without_face

    def set_paste_back(self, on: bool) -> None:
        self.stream.paste_back = on

    def set_mirror(self, on: bool) -> None:
        self.stream.mirror = on

    def set_stitching(self, on: bool) -> None:
        self.stream.set_options(stitching=on)

    def reanchor(self) -> None:
        """Take the next driving frame as the neutral pose."""
        self.stream.reanchor()

    # -- several source photos -----------------------------------------------------------------
    @property
    def source_count(self) -> int:
        return len(self._photos)

    def add_source(self, source_rgb: np.ndarray) -> int:
        """Add another source photo (its face found now: NoFaceError when there is none); returns
        its index for `select_source`. Each engine prepares it when it is first selected."""
        self._photos.append(self._load_photo(source_rgb, self.stream.detector))
        return len(self._photos) - 1

    def select_source(self, index: int) -> None:
        """Animate photo `index` from the next frame on, keeping the driving anchor (call it with
        no frame in flight). Its state for the engine in use is prepared on its first selection."""
        if index == self.source_index:
            return
        self.stream.use_photo(self._photos[index])
        self.source_index = index
        if self.mode:
            self.engine(self.mode)

    # -- per frame ---------------------------------------------------------------------------
    def process(self, frame_rgb: np.ndarray, timestamp: float | None = None) -> AnimatedFrame:
        """Animate the source with one driving frame (RGB uint8, any size).

        `timestamp` (seconds) drives the motion filter; the wall clock is used when None.
        A frame without a face holds the last good motion (and is counted).
        """
        return self.finish(self.submit(frame_rgb, timestamp))

    def submit(self, frame_rgb: np.ndarray, timestamp: float | None = None, *,
               worker: Executor | None = None) -> PendingFrame:
        """Start animating one driving frame; `finish` waits for it and returns the AnimatedFrame.

        The host part runs now: face tracking and the crop. The device part (motion, filter,
        keypoints, warp, generate) is queued on the engine's stream where the engine is
        asynchronous (the optimized engine on CUDA), else runs on `worker` when given (one
        thread, so device parts run in submission order), else runs now. Finish frames in the
        order they were submitted, and change the mode or re-anchor only with none in flight.
        """
        mode, engine, stream = self.mode, self.pool.get(self.mode), self.stream
        locked = self.pool.exclusive()
        if locked:  # no device work of this frame while the background engine captures its graphs
            self.pool.device_lock.acquire()
        try:
            driving = stream.prepare(frame_rgb, time.perf_counter() if timestamp is None else timestamp)

            def device_part() -> Job:
                return launch(engine, mode, [(stream, driving)])[0]

            job = worker.submit(device_part) if worker is not None and not engine.asynchronous else device_part()
        except BaseException:
            if locked:
                self.pool.device_lock.release()
            raise
        return PendingFrame(mode, driving.face_found, job, locked)

    def finish(self, pending: PendingFrame) -> AnimatedFrame:
        """Wait for a submitted frame's device part, then paste it back."""
        try:
            job = pending.job.result() if isinstance(pending.job, Future) else pending.job
            return AnimatedFrame(finish(job), face_found=pending.face_found, mode=pending.mode)
        finally:
            if pending.locked:
                pending.locked = False
                self.pool.device_lock.release()

    def still(self, paste_back: bool | None = None) -> np.ndarray:
        """The un-animated output: the photo (paste-back) or its crop at the generated size."""
        return self.stream.still(paste_back)

    def face_box(self) -> tuple[float, float, float, float] | None:
        """Where the face is in the frames `process` returns now, as fractions of their width and height."""
        return self.stream.photo.face_box(self.stream.paste_back)

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames `process` returns."""
        return self.stream.output_size()
