"""Fakes for the live path's tests: an animator with a fixed cost per engine, a recording
sink, a still camera, pyvirtualcam's Camera, and the stream configuration the tests use.
Imported by the stream tests and by their child processes (no PyAV import here)."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import torch

from lp_live.core.config import StreamConfig
from lp_live.engine import AnimateOptions
from lp_live.stream import NullSink, open_source
from lp_live.stream.capture import FrameSource


class FakeAnimator:
    """The whole `LiveAnimator` contract with a fixed sleep per engine; the output is the driving
    frame subsampled to 256x256, so tests can tell which driving frame (and mirror) produced it.
    `submit` does all the work at once (so a run is one frame at a time whatever its in_flight)."""

    modes = ("baseline", "optimized")

    def __init__(self, cost: dict[str, float] | None = None, mode: str = "optimized", *,
                 no_face_every: int = 0, fail_at: int | None = None, sources: int = 1,
                 compiled: tuple[str, ...] = (), background_after: int | None = None) -> None:
        self.cost = cost or {"baseline": 0.03, "optimized": 0.01}
        self.mode = mode
        self.paste_back = True
        self.mirror = False
        self.options = AnimateOptions()
        self.weights_kind = "synthetic"
        self.device = torch.device("cpu")
        self.warnings: tuple[str, ...] = ()
        self.source_count = sources
        self.source_index = 0
        self.compiled = compiled  # the engines whose first frame compiles
        self.frames_without_face = 0
        self.no_face_every = no_face_every
        self.fail_at = fail_at
        self.calls: list[str] = []
        self.reanchored_before: list[int] = []  # call index of the frame after each re-anchor
        # background_after: start on baseline, the `mode` engine "compiles" beside it until that many frames are done
        self.background: tuple[str, int] | None = None
        self.adopted_at: int | None = None  # call index of the first frame after the switch
        if background_after is not None:
            self.background, self.mode = (mode, background_after), "baseline"

    @property
    def stitching(self) -> bool:
        return self.options.stitching

    def set_mode(self, mode: str) -> None:
        assert mode in self.modes
        self.mode = mode

    def reanchor(self) -> None:
        self.reanchored_before.append(len(self.calls))

    def select_source(self, index: int) -> None:
        assert 0 <= index < self.source_count
        self.source_index = index

    def set_mirror(self, on: bool) -> None:
        self.mirror = on

    def set_paste_back(self, on: bool) -> None:
        self.paste_back = on

    def set_stitching(self, on: bool) -> None:
        self.options = dataclasses.replace(self.options, stitching=on)

    def compiles(self, mode: str) -> bool:
        return mode in self.compiled

    def face_box(self) -> tuple[float, float, float, float] | None:
        return (0.3, 0.4, 0.7, 0.85)  # where the crop puts the face

    def background_status(self) -> str | None:
        if self.background is None:
            return None
        return f"{self.background[0]} engine compiling... 0 s"

    def background_ready(self) -> bool:
        return self.background is not None and len(self.calls) >= self.background[1]

    def adopt_background(self) -> str | None:
        assert self.background_ready()
        self.mode, self.background = self.background[0], None
        self.adopted_at = len(self.calls)
        return self.mode

    def submit(self, frame_rgb: np.ndarray, timestamp: float | None = None, *, worker=None) -> DoneFrame:
        return DoneFrame(self.process(frame_rgb, timestamp))

    def finish(self, pending: DoneFrame) -> SimpleNamespace:
        return pending.result

    def process(self, frame_rgb: np.ndarray, timestamp: float | None = None) -> SimpleNamespace:
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("engine exploded")
        time.sleep(self.cost[self.mode])
        self.calls.append(self.mode)
        face = not (self.no_face_every and len(self.calls) % self.no_face_every == 0)
        self.frames_without_face += not face
        if self.mirror:
            frame_rgb = frame_rgb[:, ::-1]
        h, w = frame_rgb.shape[:2]  # 512x512: 2x2 block means, which commute with a flip
        image = frame_rgb.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
        return SimpleNamespace(image=image, face_found=face, mode=self.mode)


@dataclasses.dataclass
class DoneFrame:
    """A `FakeAnimator` frame between submit and finish: already done."""

    result: SimpleNamespace

    def ready(self) -> bool:
        return True


class RecordingSink(NullSink):
    """A null sink that records what it got, optionally slow or failing after some frames; it
    gets the "starting…" frames only with `starting=True`."""

    def __init__(self, name: str = "rec", *, delay: float = 0.0, fail_after: int | None = None,
                 hud: bool = False, starting: bool = False) -> None:
        super().__init__()
        self.name, self.delay, self.fail_after, self.hud, self.starting = name, delay, fail_after, hud, starting
        self.images: list[np.ndarray] = []
        self.times: list[float] = []

    def write(self, image: np.ndarray, t_capture: float) -> None:
        if self.fail_after is not None and len(self.images) >= self.fail_after:
            raise OSError(28, "No space left on device")
        if self.delay:
            time.sleep(self.delay)
        self.images.append(image)
        self.times.append(t_capture)
        super().write(image, t_capture)


def stream_config(**kw) -> StreamConfig:
    kw.setdefault("sink", ["null"])
    kw.setdefault("calibrate_frames", 0)
    kw.setdefault("in_flight", 1)  # keys pressed in on_frame apply from the next frame (2: tests that ask)
    return StreamConfig(**kw)


class StillSource(FrameSource):
    """A 25 fps camera that shows one picture (the first frame of d0.mp4)."""

    description, fps, is_file = "still", 25.0, True

    def __init__(self, video: str, frames: int = 50) -> None:
        with open_source(video) as source:
            self.image = source.read()[0]
        self.left = frames
        self.closed = False

    def read(self):
        self.left -= 1
        return None if self.left < 0 else (self.image, (50 - self.left) / 25)

    def close(self):
        self.closed = True


class FakeCamera:
    """pyvirtualcam.Camera's interface; `fail_after` frames then the device disappears."""

    instances: ClassVar[list[FakeCamera]] = []
    fail_after: int | None = None

    def __init__(self, width, height, fps, *, fmt=None, device=None, **kw):
        self.width, self.height, self.fps, self.fmt, self.device = width, height, fps, fmt, device or "/dev/video9"
        self.backend = "fake"
        self.frames: list[np.ndarray] = []
        self.closed = 0
        FakeCamera.instances.append(self)

    def send(self, frame):
        if self.fail_after is not None and len(self.frames) >= self.fail_after:
            raise RuntimeError("error writing frame: No such device")
        assert frame.shape == (self.height, self.width, 3) and frame.dtype == np.uint8
        self.frames.append(frame)

    def close(self):
        self.closed += 1
