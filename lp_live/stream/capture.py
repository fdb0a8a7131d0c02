"""Driving frames: a camera through OpenCV, a video file or a network stream through PyAV
(`lp_live.media.video.VideoReader`); `platform.list_cameras` lists the cameras.

`open_source` opens (and reads the first frame from) a source in the caller's thread, so that
a camera that does not exist or a URL that does not answer fails at start with a one-line
`CaptureError` (`source.py`; `reconnect.py` opens a lost camera again). `CaptureThread` then
reads frames into a `LatestQueue`, pacing a file at its own frame rate, so a file plays like a
camera.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .gate import FirstFrameGate
from .platform import camera_backend, quiet_opencv
from .queues import LatestQueue, QueueClosed
from .reconnect import ReconnectingSource
from .source import CaptureError, FrameSource

log = logging.getLogger(__name__)

CAMERA_STALL_S = 2.0  # a camera that gives no frame for this long has gone away


@dataclass
class CapturedFrame:
    """One driving frame, stamped when it was read."""

    seq: int  # 0, 1, 2, ... in capture order, dropped frames included
    t_capture: float  # time.perf_counter() right after the read
    image: np.ndarray  # (H, W, 3) RGB uint8


class CameraSource(FrameSource):
    """An OpenCV camera by index (or a /dev/video* path), with a one-frame driver buffer."""

    def __init__(self, index: int | str) -> None:
        import cv2

        self._cv2 = cv2
        self.description = f"camera {index}"
        with quiet_opencv():
            self._cap = cv2.VideoCapture(index, camera_backend())
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
    """A video file or a network stream (rtsp://, http://, udp://, ...): `lp_live.media.video.VideoReader`
    with low delay for URLs, its errors as CaptureError.

    Args:
        timeout: seconds to wait for a network stream to open or to send data.
        loop: start a file again at its end (times keep increasing), like a camera that never ends.
    """

    def __init__(self, spec: str, *, timeout: float = 10.0, loop: bool = False) -> None:
        from ..media.video import VideoError, VideoReader  # PyAV, imported only when a file or URL is read

        self._error = VideoError
        self.description = spec
        try:
            self._reader = VideoReader(spec, timeout=timeout, loop=loop)
        except VideoError as e:
            raise CaptureError(str(e)) from e
        self.fps = float(self._reader.rate) if self._reader.rate else None
        self.is_file = self._reader.is_file
        self.loop = self._reader.loop
        self._first: tuple[np.ndarray, float] | None = None
        try:
            self._first = self.read()  # a stream that opens but sends nothing fails here, at start
        except CaptureError:
            self.close()
            raise

    def read(self) -> tuple[np.ndarray, float | None] | None:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        try:
            return self._reader.read()
        except self._error as e:
            raise CaptureError(str(e)) from e

    def close(self) -> None:
        self._reader.close()

    def stats(self) -> dict[str, object]:
        return {"frames_missing": self._reader.frames_missing} if self.is_file else {}


def open_source(camera: str | int, *, timeout: float = 10.0, loop: bool = False,
                reconnect_s: float | None = None) -> FrameSource:
    """The source for `--camera`: a digit string is an OpenCV camera index, a /dev/video* path a
    V4L2 camera, anything else a file or URL read with PyAV (`loop`: files restart at their end).

    With `reconnect_s` (seconds, 0 included) a camera or live stream that stops is opened again
    for up to that long, then ends the run as "camera lost" (`reconnect.ReconnectingSource`);
    a file's end is the end of the input. Raises CaptureError."""
    spec = str(camera).strip()
    if spec.isdigit() or spec.startswith("/dev/video"):
        index = int(spec) if spec.isdigit() else spec
        source, reopen = CameraSource(index), (lambda _timeout: CameraSource(index))
    elif "://" not in spec and not Path(spec).is_file():
        raise CaptureError(f"--camera {spec}: no such file, and not a camera index or stream URL "
                           "(e.g. 0, video.mp4, rtsp://host/stream)")
    else:
        source = StreamSource(spec, timeout=timeout, loop=loop)
        reopen = lambda t: StreamSource(spec, timeout=t, loop=loop)  # noqa: E731
    if reconnect_s is None or source.is_file:
        return source
    return ReconnectingSource(reopen, source, window_s=reconnect_s, open_timeout=timeout)


class CaptureThread(threading.Thread):
    """Reads `source` into `out` until the input ends, `out` is closed or `stop` is set.

    A file is paced at its own timestamps when `pace` is true (it then behaves like a camera);
    otherwise it is read as fast as it decodes and the queue keeps only the newest frames.
    With `wait_for`, it reads the first frame, then waits for that gate to open (the engine is
    ready) before reading on, pacing from then: a video file is not consumed while the engine builds.
    On end of input it closes `out`; on a CaptureError it stores it in `error` and sets `stop`.
    """

    def __init__(self, source: FrameSource, out: LatestQueue[CapturedFrame], stop: threading.Event, *,
                 pace: bool = True, wait_for: FirstFrameGate | None = None) -> None:
        super().__init__(name="lp-live-capture", daemon=True)
        self.source, self.out, self.stop = source, out, stop
        self.pace = pace and source.is_file
        self.wait_for = wait_for
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
                if self.wait_for is not None and not self.wait_for.is_open():
                    while not self.wait_for.wait(0.1):
                        if self.stop.is_set() or self.out.closed:
                            return
                    if pts is not None:  # pace the rest from the end of the wait
                        t0, pts0 = time.perf_counter(), pts
        except QueueClosed:
            pass  # the consumer is done (frame limit)
        except Exception as e:  # a broken source ends the run with its one-line error
            self.error = e
            self.stop.set()
        finally:
            self.out.close()
            self.source.close()
