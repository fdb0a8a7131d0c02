"""A camera or live stream that stops is opened again, with backoff, for a bounded time.

`ReconnectingSource` wraps the source `open_source` opened for a camera or a live network
stream (a video file is not wrapped: its end is the end of the input). When a read fails
(unplugged camera, dropped connection) or a live stream ends, it logs one WARNING, then tries
to open the source again after 0.5 s, 1 s, 2 s, 4 s, 5 s, 5 s, ... (an INFO line per attempt)
until it is back (INFO) or `window_s` has passed since the loss. Then `read` raises
`CameraLost`, which the live session takes as a clean end ("camera lost"): threads stopped,
sinks closed, recordings kept. The frames lost while away are estimated from the gap at the
source's frame rate.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from ..core.errors import one_line
from .source import CaptureError, FrameSource

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 5.0


class CameraLost(CaptureError):
    """The driving source stopped and did not come back within the reconnect window."""


class ReconnectingSource(FrameSource):
    """`first` (an opened source), opened again with `reopen(timeout)` when it stops.

    Args:
        reopen: opens the source again; gets the seconds left in the window (its open timeout)
            and raises CaptureError when the source is not there yet.
        first: the source as opened at start.
        window_s: how long after a loss to keep trying (0: end at the first loss).
        open_timeout: the longest a single attempt may wait for a stream to answer.
    """

    def __init__(self, reopen: Callable[[float], FrameSource], first: FrameSource, *, window_s: float,
                 open_timeout: float = 10.0) -> None:
        self._reopen, self._source = reopen, first
        self.window_s, self.open_timeout = window_s, open_timeout
        self.description, self.fps, self.is_file = first.description, first.fps, False
        self.reconnects = 0
        self.frames_lost = 0
        self.seconds_lost = 0.0
        self._interrupted = threading.Event()
        self._last_frame: float | None = None  # perf_counter() of the last frame read
        self._interval: float | None = None  # measured seconds between frames (when fps is unknown)

    def read(self) -> tuple[np.ndarray, float | None] | None:
        while True:
            try:
                item = self._source.read()
                why = "the stream ended"
            except CaptureError as e:
                item, why = None, one_line(e)
            if item is not None:
                self._count_frame()
                return item
            self._reconnect(why)

    def _count_frame(self) -> None:
        now = time.perf_counter()
        if self._last_frame is not None:
            dt = now - self._last_frame
            self._interval = dt if self._interval is None else 0.9 * self._interval + 0.1 * dt
        self._last_frame = now

    def _reconnect(self, why: str) -> None:
        """Open the source again within the window; CameraLost when it does not come back."""
        t_lost = time.perf_counter()
        with contextlib.suppress(Exception):  # a broken source may fail to close too
            self._source.close()
        if self.window_s <= 0:
            log.warning("%s lost (%s); not reconnecting (reconnect_s is 0)", self.description, why)
            raise CameraLost(f"{self.description} lost ({why})")
        log.warning("%s lost (%s); reconnecting for up to %.0f s", self.description, why, self.window_s)
        deadline = t_lost + self.window_s
        delay, attempt = BACKOFF_FIRST_S, 0
        while (left := deadline - time.perf_counter()) > 0:
            if self._interrupted.wait(min(delay, left)):
                raise CameraLost(f"{self.description} lost ({why}); stopped while reconnecting")
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            attempt += 1
            try:
                source = self._reopen(max(1.0, min(self.open_timeout, left)))
            except CaptureError as e:
                delay = min(delay * 2, BACKOFF_MAX_S)
                log.info("%s: reconnect attempt %d failed (%s); next in %.1f s", self.description, attempt,
                         one_line(e), min(delay, max(0.0, deadline - time.perf_counter())))
                continue
            if self._interrupted.is_set():
                source.close()
                raise CameraLost(f"{self.description} lost ({why}); stopped while reconnecting")
            self._back(source, t_lost, attempt)
            return
        raise CameraLost(f"{self.description} lost ({why}) and not back within {self.window_s:.0f} s")

    def _back(self, source: FrameSource, t_lost: float, attempts: int) -> None:
        now = time.perf_counter()
        gap = now - (self._last_frame or t_lost)
        interval = 1.0 / self.fps if self.fps else self._interval
        lost = max(0, round(gap / interval) - 1) if interval else 0
        self._source = source
        self.reconnects += 1
        self.frames_lost += lost
        self.seconds_lost += gap
        log.info("%s is back after %.1f s (%d attempt%s); about %d frames lost", self.description, gap, attempts,
                 "" if attempts == 1 else "s", lost)

    def stats(self) -> dict[str, object]:
        return {**self._source.stats(), "reconnects": self.reconnects, "frames_lost": self.frames_lost,
                "seconds_lost": round(self.seconds_lost, 2)}

    def interrupt(self) -> None:
        self._interrupted.set()

    def close(self) -> None:
        self._interrupted.set()
        self._source.close()
