"""Headless Chromium against the page: a fake camera from a video file, driven over DevTools.

Used by the browser test and by `scripts/serve_screenshot.py` (the README's picture). Chromium
reads the fake camera from a Y4M file, written here with PyAV (no ffmpeg needed); the page is
opened with `?autostart=1` and its own figures (`window.lpStats`) are read back.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np

from ..media.video import VideoReader

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def write_y4m(video: str | Path, out: str | Path, *, max_frames: int = 50) -> Path:
    """The first `max_frames` frames of `video` as a 4:2:0 Y4M file (Chromium's fake camera format)."""
    out = Path(out)
    with VideoReader(video) as reader, out.open("wb") as f:
        rate = reader.fps
        w, h = reader.width - reader.width % 2, reader.height - reader.height % 2
        f.write(f"YUV4MPEG2 W{w} H{h} F{rate.numerator}:{rate.denominator} Ip A1:1 C420jpeg\n".encode())
        for frame, _ in itertools.islice(reader.frames(), max_frames):
            yuv = cv2.cvtColor(np.ascontiguousarray(frame[:h, :w]), cv2.COLOR_RGB2YUV_I420)  # (3h/2, w): Y, U, V
            f.write(b"FRAME\n" + yuv.tobytes())
    return out


class Browser:
    """Headless Chromium with a fake camera; `open(url)` returns a DevTools page session.

    Args:
        camera_y4m: the fake camera's video.
        chromium: the executable (default: the first of CHROMIUM_NAMES on PATH).
    """

    def __init__(self, camera_y4m: str | Path, *, chromium: str | None = None, size: tuple[int, int] = (1280, 760)):
        self.executable = chromium or find_chromium()
        if self.executable is None:
            raise FileNotFoundError("no chromium on PATH (apt-get install chromium)")
        self.profile = tempfile.TemporaryDirectory(prefix="lp-live-chromium-")
        self.proc = subprocess.Popen([
            self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={camera_y4m}", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
            "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
            f"--window-size={size[0]},{size[1]}",
            "--remote-debugging-port=0", f"--user-data-dir={self.profile.name}", "about:blank",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def devtools_port(self, timeout_s: float = 30.0) -> int:
        marker = Path(self.profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if marker.is_file() and (lines := marker.read_text().splitlines()):
                return int(lines[0])
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode} before DevTools came up")
            time.sleep(0.1)
        raise TimeoutError(f"chromium's DevTools did not come up in {timeout_s:g} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One DevTools websocket to a page target: `call(method, **params)`, `evaluate(js)`."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws
        self._ids = itertools.count(1)

    @classmethod
    async def connect(cls, port: int) -> Page:
        http = aiohttp.ClientSession()
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json(content_type=None)
        target = next(t for t in targets if t.get("type") == "page")
        return cls(http, await http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        async for message in self.ws:
            data = json.loads(message.data)
            if data.get("id") == call_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
        raise ConnectionError("the DevTools connection closed")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def screenshot(self, path: str | Path) -> Path:
        data = await self.call("Page.captureScreenshot", format="png")
        Path(path).write_bytes(base64.b64decode(data["data"]))
        return Path(path)

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


async def run_page(browser: Browser, url: str, *, min_frames: int, timeout_s: float,
                   screenshot: str | Path | None = None, settle_s: float = 0.0) -> dict[str, Any]:
    """Open `url` (the page with ?autostart=1), wait until `min_frames` animated frames were shown
    (its own `lpStats`), take the screenshot, and return the last `lpStats`."""
    page = await Page.connect(browser.devtools_port())
    try:
        await page.call("Page.enable")
        await page.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            stats = json.loads(await page.evaluate("JSON.stringify(window.lpStats || {})") or "{}")
            if stats.get("error") or max(stats.get("framesShown", 0), stats.get("framesDecoded", 0)) >= min_frames:
                break
        if settle_s:
            await asyncio.sleep(settle_s)
            stats = json.loads(await page.evaluate("JSON.stringify(window.lpStats || {})") or "{}")
        if screenshot is not None:
            await page.screenshot(screenshot)
        return stats
    finally:
        await page.close()
