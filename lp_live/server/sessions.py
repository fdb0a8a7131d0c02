"""One WebRTC connection: its source, its settings, its newest driving frame and its output track.

The session is the single owner of its per-connection state. The asyncio loop puts incoming
frames (`offer_frame`: the newest replaces an unprocessed one, which is counted as dropped) and
control messages; the scheduler takes the newest frame at each step and hands back the animated
image (`deliver`: again the newest wins). `close()` drops everything the session holds at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from ..core.figures import percentiles, rate
from ..session import DrivingStream

log = logging.getLogger(__name__)

ROLLING = 120  # samples behind each per-session figure
LOG_LENGTH = 4096  # sent frames remembered (serve-bench reads a time window of them)
RATE_WINDOW_S = 10.0  # output FPS over the frames sent in the last 10 s (CPU steps take seconds)
VIDEO_CLOCK = 90_000  # RTP video clock rate


@dataclass
class Driving:
    """A driving frame waiting for the next step."""

    frame: av.VideoFrame
    t_received: float  # perf_counter() when the decoded frame reached the server


class Session:
    """Per-connection state.

    Args:
        session_id: its id.
        stream: its driving stream (photo, face tracker, motion filter, anchor, options, mirror,
            paste-back), the same per-frame state the desktop app has.
        mode: the engine it starts with.
    """

    def __init__(self, session_id: str, stream: DrivingStream, mode: str) -> None:
        self.id = session_id
        self.stream: DrivingStream | None = stream
        self.mode = mode
        self.reanchor_requested = False  # applied by the step thread before the next frame
        self.closed = False
        self.pending: Driving | None = None
        self.output: asyncio.Queue[tuple[np.ndarray, float]] = asyncio.Queue(maxsize=1)
        self.last_output: np.ndarray | None = None
        self.last_seen = time.perf_counter()
        self.created = self.last_seen
        self.frames_in = 0
        self.frames_out = 0
        self.dropped_in = 0  # replaced by a newer frame before a step took it
        self.dropped_out = 0  # replaced by a newer animated frame before the encoder took it
        # (perf_counter() when handed to the encoder, ms since the driving frame was received)
        self.sent: deque[tuple[float, float]] = deque(maxlen=LOG_LENGTH)
        self.infer_ms: deque[float] = deque(maxlen=ROLLING)  # the engine step this frame was in
        self._wake: asyncio.Event | None = None

    # -- the loop side ----------------------------------------------------------------------
    def offer_frame(self, frame: av.VideoFrame, wake: asyncio.Event) -> None:
        if self.closed:
            return
        now = time.perf_counter()
        if self.pending is not None:
            self.dropped_in += 1
        self.pending = Driving(frame, now)
        self.frames_in += 1
        self.last_seen = now
        wake.set()

    def take(self) -> Driving | None:
        pending, self.pending = self.pending, None
        return pending

    def deliver(self, image: np.ndarray, t_received: float, infer_ms: float) -> None:
        if self.closed:
            return
        self.last_output = image
        self.infer_ms.append(infer_ms)
        if self.output.full():
            self.output.get_nowait()
            self.dropped_out += 1
        self.output.put_nowait((image, t_received))

    def control(self, message: dict[str, Any], modes: tuple[str, ...]) -> str | None:
        """Apply a control message from the page; returns a one-line problem, or None.

        Every value is checked before any is applied. Settings are replaced whole (a step in
        flight keeps the ones it read); re-anchoring waits for the step thread.
        """
        stream = self.stream
        if stream is None:
            return "the session is closed"
        for key, value in message.items():
            if key == "mode":
                if value not in modes:
                    return f"unknown mode {value!r}; choose one of {', '.join(modes)}"
            elif key in ("paste_back", "mirror", "stitching"):
                if not isinstance(value, bool):
                    return f"{key} must be true or false"
            elif key != "reanchor":
                return f"unknown control {key!r}; use mode, reanchor, paste_back, stitching or mirror"
        for key, value in message.items():
            if key == "mode":
                self.mode = value
            elif key == "reanchor":
                self.reanchor_requested = bool(value)
            elif key == "paste_back":
                stream.paste_back = value
            elif key == "mirror":
                stream.mirror = value
            elif key == "stitching":
                stream.set_options(stitching=value)
        return None

    async def consume(self, track: MediaStreamTrack, wake: asyncio.Event) -> None:
        """Read the client's camera track until it ends, keeping only the newest frame."""
        try:
            while not self.closed:
                self.offer_frame(await track.recv(), wake)
        except MediaStreamError:
            pass

    def close(self) -> None:
        """Free the per-connection state now (a step in flight discards its result)."""
        self.closed = True
        self.pending = None
        self.stream = None
        self.last_output = None

    # -- figures ----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        recent_sent = list(self.sent)[-ROLLING:]
        p50, p95 = percentiles([ms for _, ms in recent_sent])
        infer = percentiles(self.infer_ms, (50,))[0]
        now = time.perf_counter()
        recent = [t for t, _ in recent_sent if now - t <= RATE_WINDOW_S]
        stream = self.stream
        settings = {} if stream is None else {
            "source": stream.photo.name, "paste_back": stream.paste_back, "mirror": stream.mirror,
            "stitching": stream.options.stitching, "frames_without_face": stream.frames_without_face}
        return {
            "id": self.id, "mode": self.mode, **settings,
            "fps": rate(recent), "frames_in": self.frames_in, "frames_out": self.frames_out,
            "dropped_in": self.dropped_in, "dropped_out": self.dropped_out,
            "server_latency_ms": {"p50": p50, "p95": p95}, "infer_ms": infer,
            "age_s": now - self.created,
        }


class AnimatedTrack(MediaStreamTrack):
    """The video track sent back: the session's animated frames, as they come."""

    kind = "video"

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self._t0: float | None = None

    async def recv(self) -> av.VideoFrame:
        session = self.session
        image, t_received = await session.output.get()
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = int((now - self._t0) * VIDEO_CLOCK)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        session.frames_out += 1
        session.sent.append((now, (now - t_received) * 1e3))
        return frame
