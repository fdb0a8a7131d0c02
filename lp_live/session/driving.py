"""One driving stream: what a camera (the desktop's, or one browser's in the server) needs to animate a photo.

    stream = DrivingStream(photo, detector, input_size=256, smoother=MotionSmoother())
    driving = stream.prepare(frame_rgb, t)          # host: mirror, track the face, crop
    job = launch(engine, mode, [(stream, driving)])[0]  # device: motion, keypoints, warp, generate
    image = stream.finish(job)                      # host: paste-back

The desktop `Animator` is one stream; the server's scheduler launches the streams of all its
sessions as one batch per engine (`step.launch`). The stream owns its face tracker, motion
filter, `Anchor` (its neutral pose, kept across engine and photo switches), options, mirror and
paste-back, what it last animated, and its counters; the photo it animates owns what is
prepared from the photo.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from ..core.config import AnimateOptions
from ..engine import Anchor, Engine, Ratios, SourceState
from ..face import DRIVING_CROP, FaceDetector, crop_face
from ..motion.kinematics import Motion
from ..motion.smoothing import MotionSmoother
from .photo import SourcePhoto, face_ratios


@dataclass(frozen=True)
class DrivingInput:
    """One driving frame after the host part."""

    crop: np.ndarray | None  # (S, S, 3) RGB uint8 network input; None: no face in the frame
    ratios: Ratios | None  # the face's eye/lip openness (CPU), where the landmark model ran
    timestamp: float  # seconds; drives the motion filter

    @property
    def face_found(self) -> bool:
        return self.crop is not None


class DrivingStream:
    """The per-stream state of the per-frame path (see the module docstring).

    Args:
        photo: the source photo animated.
        detector: this stream's own face detector and tracker.
        input_size: network input side (driving crops are made at this size).
        options: keypoint options (replaced, never mutated: a frame in flight keeps its own).
        paste_back: paste the animated face back into the photo.
        mirror: flip driving frames horizontally before anything else (selfie view).
        crop_driving: crop driving frames around the face; off: whole frames resized to the input
            size (driving videos that are already face crops).
        smoother: this stream's motion filter, or None.
    """

    def __init__(self, photo: SourcePhoto, detector: FaceDetector, *, input_size: int,
                 options: AnimateOptions | None = None, paste_back: bool = True, mirror: bool = False,
                 crop_driving: bool = True, smoother: MotionSmoother | None = None) -> None:
        self.photo = photo
        self.detector = detector
        self.input_size = input_size
        self.options = options or AnimateOptions()
        self.paste_back = paste_back
        self.mirror = mirror
        self.crop_driving = crop_driving
        self.smoother = smoother
        self.anchor = Anchor()
        self.frames = 0
        self.frames_without_face = 0
        self.last_motion: Motion | None = None  # the last good (smoothed) motion, held while no face is seen
        self.last_key: tuple | None = None  # what the last engine frame was made with (see `key`)
        self.last_output: np.ndarray | None = None
        self._refill = False  # the anchor's pose is to be mapped to a new photo

    # -- settings: changed between frames, never during one ----------------------------------
    def set_options(self, **changes: object) -> None:
        """Replace the options with `changes` applied (e.g. `stitching=False`)."""
        self.options = dataclasses.replace(self.options, **changes)

    def use_photo(self, photo: SourcePhoto) -> None:
        """Animate `photo` from the next frame on, keeping the anchor: the same driving pose
        maps to the new photo's own pose."""
        if photo is not self.photo:
            self.photo = photo
            self._refill = self.anchor.motion is not None

    def reanchor(self) -> None:
        """Take the next driving frame as the neutral pose (the source's own pose)."""
        self.anchor.reset()
        self._refill = False
        if self.smoother is not None:
            self.smoother.reset()

    def key(self, mode: str) -> tuple:
        """What an animated frame depends on besides its motion: equal keys and equal motion give
        the same image."""
        return mode, id(self.photo), self.options, self.paste_back

    # -- host part ----------------------------------------------------------------------------
    def prepare(self, frame_rgb: np.ndarray, timestamp: float) -> DrivingInput:
        """Mirror, track the face, crop: the network input of one driving frame (RGB uint8, any size)."""
        self.frames += 1
        if self.mirror:
            frame_rgb = np.ascontiguousarray(frame_rgb[:, ::-1])
        size = self.input_size
        if not self.crop_driving:
            if frame_rgb.shape[:2] != (size, size):
                frame_rgb = cv2.resize(frame_rgb, (size, size), interpolation=cv2.INTER_AREA)
            return DrivingInput(frame_rgb, None, timestamp)
        face = self.detector.track(frame_rgb)
        if face is None:
            self.frames_without_face += 1
            return DrivingInput(None, None, timestamp)
        return DrivingInput(crop_face(frame_rgb, face, DRIVING_CROP, input_size=size).input, face_ratios(face),
                            timestamp)

    # -- device part (the engine's thread; see step.launch) -------------------------------------
    def smooth(self, motion: Motion, timestamp: float) -> Motion:
        """This frame's motion through the stream's filter; kept as the motion to hold."""
        if self.smoother is not None:
            motion = self.smoother(motion, timestamp)
        self.last_motion = motion
        return motion

    def source_state(self, engine: Engine, mode: str) -> SourceState:
        """The photo as `engine` prepared it; the anchor remapped to it after a photo switch."""
        state = self.photo.state(engine, mode)
        if self._refill:
            self._refill = False
            if self.anchor.motion is not None:
                self.anchor.fill(state, self.anchor.motion)
        return state

    # -- host part, after the device -------------------------------------------------------------
    def still(self, paste_back: bool | None = None) -> np.ndarray:
        """The un-animated output: the photo (paste-back) or its crop at the generated size."""
        return self.photo.still(self.paste_back if paste_back is None else paste_back)

    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames this stream gives now."""
        return self.photo.output_size(self.paste_back)
