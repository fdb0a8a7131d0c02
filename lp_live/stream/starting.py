"""The "starting…" frames: from the first second of a live run until its first animated frame,
every sink that shows a picture to someone (window, virtual camera, null; not a recording
file) gets a frame saying what the run is doing, so that a video call shows something while
the models load and the engine compiles.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .gate import FirstFrameGate
from .queues import LatestQueue, QueueClosed

PERIOD_S = 0.5  # a new starting frame this often (the seconds in its text count up)
DEFAULT_SIDE = 512  # the starting frame's side when there is no still picture and no output size
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class StartingFrame:
    """A "starting…" frame on its way to a sink (not an animated frame: not counted as shown)."""

    image: np.ndarray  # (H, W, 3) RGB uint8


def starting_image(still: np.ndarray | None, status: str, size: int | None = None) -> np.ndarray:
    """`still` darkened (a dark square without one) with "starting…" and `status` across its
    lower part, in letters sized to the picture."""
    if still is None:
        side = size or DEFAULT_SIDE
        image = np.full((side, side, 3), 24, np.uint8)
    else:
        image = (still.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darkened to 40%
    h, w = image.shape[:2]
    lines = ["starting...", status]
    scale = max(0.4, min(w, h) / 600)
    thickness = max(1, round(scale * 1.5))
    y = int(h * 0.7)
    for text in lines:
        (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
        while tw > 0.95 * w and scale > 0.3:  # a long status on a narrow picture: smaller letters
            scale *= 0.9
            (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
        cv2.putText(image, text, ((w - tw) // 2, y), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
        y += th + base + max(4, th // 2)
    return image


class StartingFrames(threading.Thread):
    """Puts a starting frame into every queue each PERIOD_S until `gate` opens (or `stop`), saying
    `status()`: the current step and a seconds counter.

    Each frame is put while `gate` is held closed (`FirstFrameGate.while_closed`): no starting
    frame follows the first animated frame.
    """

    def __init__(self, queues: list[LatestQueue], gate: FirstFrameGate, stop: threading.Event, *,
                 still: np.ndarray | None = None, size: int | None = None,
                 status: Callable[[], str] | None = None) -> None:
        super().__init__(name="lp-live-starting", daemon=True)
        self.queues, self.gate, self.stop = queues, gate, stop
        t0 = time.perf_counter()
        # the step and its seconds (`Progress.status`); without one, at least the seconds so far
        self.status = status or (lambda: f"starting {time.perf_counter() - t0:.0f} s")
        self.still, self.size = still, size
        self.sent = 0

    def run(self) -> None:
        while self.queues and not self.stop.is_set():
            frame = StartingFrame(starting_image(self.still, self.status(), self.size))
            if not self.gate.while_closed(functools.partial(self._put, frame)):
                return
            if self.gate.wait(PERIOD_S):
                return

    def _put(self, frame: StartingFrame) -> None:
        for q in self.queues:
            with contextlib.suppress(QueueClosed):  # that sink failed
                q.put(frame)
        self.sent += 1
