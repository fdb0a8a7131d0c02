"""Driving frames: a camera through OpenCV, a video file or a network stream through PyAV.

`open_source` opens (and reads the first frame from) a source in the caller's thread, so that
a camera that does not exist or a URL that does not answer fails at start with a one-line
`CaptureError`. `CaptureThread` then reads frames into a `LatestQueue`, pacing a file at its
own frame rate, so a file plays like a camera.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .queues import LatestQueue, QueueClosed

log = logging.getLogger(__name__)

CAMERA_STALL_S = 2.0  # a camera that gives no frame for this long has gone away
MAX_CAMERA_INDEX = 10  # `list_cameras` probes 0..9


class CaptureError(UserError):
    """A driving source that cannot be opened or read; the message is one line saying what to do."""


@dataclass
class CapturedFrame:
    """One driving frame, stamped when it was read."""

    seq: int  # 0, 1, 2, ... in capture order, dropped frames included
    t_capture: float  # time.perf_counter() right after the read
    image: np.ndarray  # (H, W, 3) RGB uint8


class FrameSource:
    """What `CaptureThread` reads from. `read()` returns (RGB frame, presentation time in
    seconds or None), or None at the end of the input; it raises CaptureError when the
    source breaks."""

    description: str = ""
    fps: float | None = None
    is_file: bool = False  # plays at its own rate when paced; a camera is paced by itself

    def read(self) -> tuple[np.ndarray, float | None] | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own stderr warnings (a missing camera logs several) while probing."""
    import cv2

    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _camera_backend() -> int:
    import cv2

    # V4L2 directly on Linux: the default order also tries FFmpeg and Orbbec, each logging an error
    return cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY


class CameraSource(FrameSource):
    """An OpenCV camera by index (or a /dev/video* path), with a one-frame driver buffer."""

    def __init__(self, index: int | str) -> None:
        import cv2

        self._cv2 = cv2
        self.description = f"camera {index}"
        with _quiet_opencv():
            self._cap = cv2.VideoCapture(index, _camera_backend())
            if not self._cap.isOpened():
                self._cap.release()
                raise CaptureError(f"camera {index} cannot be opened; `lp-live --list-cameras` lists the cameras "
                                   "that answer, or pass a video file or stream URL to --camera")
            self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # a queued driver frame is pure latency
            ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise CaptureError(f"camera {index} opened but gave no frame (in use by another program, or a "
                               "virtual camera with no producer?); try another index from `lp-live --list-cameras`")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None
        self._first: np.ndarray | None = first
        self._closed = False

    def read(self) -> tuple[np.ndarray, float | None] | None:
        frame, self._first = self._first, None
        if frame is None:
            t_fail = None
            while True:
                ok, frame = self._cap.read()
                if ok and frame is not None:
                    break
                now = time.perf_counter()
                t_fail = t_fail or now
                if now - t_fail > CAMERA_STALL_S:
                    raise CaptureError(f"{self.description} stopped giving frames for {CAMERA_STALL_S:.0f} s "
                                       "(unplugged or taken by another program?)")
                time.sleep(0.01)  # a failing V4L2 read returns at once; do not spin
        return self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB), None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cap.release()


class StreamSource(FrameSource):
    """A video file or a network stream (rtsp://, http://, udp://, ...) decoded with PyAV.

    Args:
        timeout: seconds to wait for a network stream to open or to send data.
        loop: start a file again at its end (times keep increasing), like a camera that never ends.
    """

    def __init__(self, spec: str, *, timeout: float = 10.0, loop: bool = False) -> None:
        import av

        is_url = "://" in spec
        if not is_url and not Path(spec).is_file():
            raise CaptureError(f"--camera {spec}: no such file, and not a camera index or stream URL "
                               "(e.g. 0, video.mp4, rtsp://host/stream)")
        self.description = spec
        options = {"fflags": "nobuffer", "flags": "low_delay"} if is_url else {}
        try:
            self._container = av.open(spec, mode="r", timeout=(timeout, timeout), options=options)
        except av.error.ExitError as e:  # FFmpeg's interrupt callback: the timeout expired
            raise CaptureError(f"{spec}: no answer within {timeout:.0f} s; check the URL and that the stream "
                               "is being published") from e
        except (av.error.FFmpegError, OSError) as e:
            raise CaptureError(f"{spec}: cannot be opened ({_one_line(e)}); check the path or URL") from e
        if not self._container.streams.video:
            self._container.close()
            raise CaptureError(f"{spec}: has no video stream")
        stream = self._container.streams.video[0]
        if not is_url:
            stream.thread_type = "AUTO"  # frame threads add decode latency; fine for a file, not a stream
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        # a file, or a URL to a file, has a duration; a live stream does not
        self.is_file = not is_url or self._container.duration is not None
        self.loop = loop and self.is_file
        self._stream = stream
        self._frames = self._container.decode(stream)
        self._offset = 0.0  # added to frame times after each loop
        self._last_time: float | None = None
        self._closed = False
        try:
            self._first = self._next()
        except CaptureError:
            self.close()
            raise
        if self._first is None:
            self.close()
            raise CaptureError(f"{spec}: contains no video frame")

    def _next(self) -> tuple[np.ndarray, float | None] | None:
        import av

        try:
            frame = next(self._frames, None)
            if frame is None and self.loop and self._last_time is not None:
                self._container.seek(0)
                self._offset = self._last_time + 1.0 / (self.fps or 25.0)
                self._frames = self._container.decode(self._stream)
                frame = next(self._frames, None)
            if frame is None:
                return None
        except av.error.ExitError as e:
            raise CaptureError(f"{self.description}: stream stopped answering") from e
        except (av.error.FFmpegError, OSError) as e:
            raise CaptureError(f"{self.description}: cannot be decoded ({_one_line(e)})") from e
        t = None if frame.time is None else self._offset + frame.time
        self._last_time = t if t is not None else self._last_time
        return frame.to_ndarray(format="rgb24"), t

    def read(self) -> tuple[np.ndarray, float | None] | None:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return self._next()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def open_source(camera: str | int, *, timeout: float = 10.0, loop: bool = False) -> FrameSource:
    """The source for `--camera`: a digit string is an OpenCV camera index, a /dev/video* path a
    V4L2 camera, anything else a file or URL read with PyAV (`loop`: files restart at their end).
    Raises CaptureError."""
    spec = str(camera).strip()
    if spec.isdigit():
        return CameraSource(int(spec))
    if spec.startswith("/dev/video"):
        return CameraSource(spec)
    return StreamSource(spec, timeout=timeout, loop=loop)


def list_cameras(max_index: int = MAX_CAMERA_INDEX) -> list[int]:
    """Indices in 0..max_index-1 of the cameras that open and give a frame, probed quietly."""
    import cv2

    found = []
    with _quiet_opencv():
        for index in range(max_index):
            if sys.platform.startswith("linux") and not os.path.exists(f"/dev/video{index}"):
                continue
            cap = cv2.VideoCapture(index, _camera_backend())
            try:
                if cap.isOpened() and cap.read()[0]:
                    found.append(index)
            finally:
                cap.release()
    return found


class CaptureThread(threading.Thread):
    """Reads `source` into `out` until the input ends, `out` is closed or `stop` is set.

    A file is paced at its own timestamps when `pace` is true (it then behaves like a camera);
    otherwise it is read as fast as it decodes and the queue keeps only the newest frames.
    On end of input it closes `out`; on a CaptureError it stores it in `error` and sets `stop`.
    """

    def __init__(self, source: FrameSource, out: LatestQueue[CapturedFrame], stop: threading.Event, *,
                 pace: bool = True) -> None:
        super().__init__(name="lp-live-capture", daemon=True)
        self.source, self.out, self.stop = source, out, stop
        self.pace = pace and source.is_file
        self.captured = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        t0 = pts0 = None
        try:
            while not self.stop.is_set():
                item = self.source.read()
                if item is None:
                    log.debug("capture: end of input after %d frames", self.captured)
                    break
                image, pts = item
                if self.pace and pts is not None:
                    if t0 is None:
                        t0, pts0 = time.perf_counter(), pts
                    delay = t0 + (pts - pts0) - time.perf_counter()
                    if delay > 0 and self.stop.wait(delay):
                        break
                frame = CapturedFrame(self.captured, time.perf_counter(), image)
                self.out.put(frame)
                self.captured += 1
        except QueueClosed:
            pass  # the consumer is done (frame limit)
        except Exception as e:  # a broken source ends the run with its one-line error
            self.error = e
            self.stop.set()
        finally:
            self.out.close()
            self.source.close()
