"""A Python client of the serve API (aiortc): upload a photo, stream a video, receive the animation.

Used by the tests and by `serve-bench`; also a worked example of the HTTP API for other tools.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from ..media.video import VideoReader

VIDEO_CLOCK = 90_000


class ApiError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason


def read_video(path: str | Path, *, max_frames: int = 100) -> tuple[list[np.ndarray], float]:
    """Up to `max_frames` RGB frames of a video file, and its frame rate."""
    with VideoReader(path) as reader:
        return [frame for frame, _ in itertools.islice(reader.frames(), max_frames)], float(reader.fps)


class LoopTrack(MediaStreamTrack):
    """A video track playing `frames` in a loop at `fps`, like a camera."""

    kind = "video"

    def __init__(self, frames: list[np.ndarray], fps: float) -> None:
        super().__init__()
        self.frames = [av.VideoFrame.from_ndarray(f, format="rgb24") for f in frames]
        self.period = 1.0 / fps
        self.count = 0
        self._t0: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        due = self._t0 + self.count * self.period
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        frame = self.frames[self.count % len(self.frames)]
        frame.pts = round(self.count * self.period * VIDEO_CLOCK)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        self.count += 1
        return frame


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _json(response: aiohttp.ClientResponse) -> Any:
    if response.status >= 400:
        try:
            reason = (await response.json())["error"]
        except (aiohttp.ContentTypeError, KeyError, json.JSONDecodeError):
            reason = await response.text()
        raise ApiError(response.status, reason)
    return await response.json()


async def upload(http: aiohttp.ClientSession, url: str, data: bytes, token: str | None = None) -> str:
    async with http.post(f"{url}/api/sources", data=data, headers=_headers(token)) as r:
        return (await _json(r))["id"]


async def stats(http: aiohttp.ClientSession, url: str, token: str | None = None) -> dict[str, Any]:
    async with http.get(f"{url}/api/stats", headers=_headers(token)) as r:
        return await _json(r)


@dataclass
class Received:
    """What one client got back."""

    frames: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    times: list[float] = field(default_factory=list)  # perf_counter() of each received frame
    messages: list[dict[str, Any]] = field(default_factory=list)  # data channel messages
    last_image: np.ndarray | None = None

    def fps(self, skip: int = 1) -> float | None:
        t = self.times[skip:]
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) >= 2 and t[-1] > t[0] else None


async def stream(url: str, frames: list[np.ndarray], fps: float, *, token: str | None = None,
                 source: str = "default", duration_s: float = 5.0, min_frames: int | None = None,
                 controls: list[dict[str, Any]] = (), offer_extra: dict[str, Any] | None = None,
                 until: asyncio.Event | None = None) -> Received:
    """Stream `frames` to the server for `duration_s` (or until `min_frames` came back, or `until`
    is set) and return what came back."""
    received = Received()
    enough = asyncio.Event()
    pc = RTCPeerConnection()
    channel = pc.createDataChannel("control")
    channel.on("message", lambda m: received.messages.append(json.loads(m)))
    pc.addTransceiver(LoopTrack(frames, fps), direction="sendrecv")

    async def consume(track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                received.frames += 1
                received.times.append(time.perf_counter())
                received.sizes.add((frame.width, frame.height))
                if min_frames is not None and received.frames >= min_frames:
                    received.last_image = frame.to_ndarray(format="rgb24")
                    enough.set()
        except MediaStreamError:
            pass

    tasks: list[asyncio.Task] = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": "offer", "source": source, **(offer_extra or {})}
        async with aiohttp.ClientSession() as http, \
                http.post(f"{url}/api/offer", json=offer, headers=_headers(token)) as r:
            answer = await _json(r)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        for message in controls:
            while channel.readyState != "open":
                await asyncio.sleep(0.02)
            channel.send(json.dumps(message))
        waits = [asyncio.ensure_future(enough.wait())] + ([asyncio.ensure_future(until.wait())] if until else [])
        await asyncio.wait(waits, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
    finally:
        await pc.close()
        for task in tasks:
            task.cancel()
    return received
