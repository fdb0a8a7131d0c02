"""Where animated frames go: virtual camera, preview window, H.264 file, or nowhere (null).

Sinks are context managers with an idempotent `close()` (the base class's). `write(image, t_capture)` takes an
RGB uint8 frame; a sink opens its device on the first frame (when the output size is known)
and keeps that size, letterboxing later frames of another size (e.g. after paste-back is
toggled). A sink that cannot be used raises `SinkError` with a one-line message saying what
to do. Nothing here makes an OpenCV GUI call unless `display_status()` says a display exists:
OpenCV's Qt aborts the whole process when it cannot open one. The probes are in `platform.py`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..core.errors import UserError, one_line
from .controls import key_from_code
from .platform import display_status, screen_size, virtual_camera_hint, virtual_camera_status

log = logging.getLogger(__name__)

SINK_NAMES = ("auto", "virtualcam", "window", "file", "null")
WINDOW_TITLE = "lp-live"
SCREEN_FRACTION = 0.9  # the preview window takes at most this much of the screen's width and height
NO_WINDOW = "--sink window: no display: {why}; use --sink virtualcam, file or null"


class SinkError(UserError):
    """A sink that cannot be opened or written; the message is one line saying what to do."""


def fit_frame(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` scaled to fit (width, height), centred on black (letterbox); as is if it fits exactly."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    out = np.zeros((height, width, 3), np.uint8)
    y, x = (height - nh) // 2, (width - nw) // 2
    out[y:y + nh, x:x + nw] = resized
    return out


class Sink:
    """The sink contract: `write(image, t_capture)` and `close()`, a context manager.

    Subclasses implement `_write` and `_close`; `close()` calls `_close` once (a second close
    does nothing) and a write after close raises SinkError. `hud`: whether this sink shows the
    HUD when the HUD is on. `starting`: whether it gets the "starting…" frames before the
    first animated frame (someone watches it). `fit(image)` is the frame as the sink will
    show it (scaled to its size), so overlays can be drawn at that size.
    """

    name = "sink"
    hud = False
    starting = True
    closed = False

    def fit(self, image: np.ndarray) -> np.ndarray:
        """`image` at the size this sink shows it (as is by default)."""
        return image

    def write(self, image: np.ndarray, t_capture: float) -> None:
        """Show or store one RGB uint8 frame captured at `t_capture` (perf_counter seconds)."""
        if self.closed:
            raise SinkError(f"{self.describe()} is closed")
        self._write(image, t_capture)

    def close(self) -> None:
        """Release the device (flush the file). Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._close()

    def _write(self, image: np.ndarray, t_capture: float) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Release what the sink holds; called once."""

    def describe(self) -> str:
        return self.name

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullSink(Sink):
    """Drops every frame (for measuring the pipeline without an output)."""

    name = "null"

    def __init__(self) -> None:
        self.frames = 0

    def _write(self, image: np.ndarray, t_capture: float) -> None:
        self.frames += 1


class _SizedSink(Sink):
    """A sink whose device has one frame size, fixed by `size` or by the first frame."""

    def __init__(self, size: int | None, even: bool = False) -> None:
        self.size = size
        self.even = even
        self.frame_size: tuple[int, int] | None = None  # (width, height) once open

    def fit(self, image: np.ndarray) -> np.ndarray:
        if self.frame_size is None:
            w, h = (self.size, self.size) if self.size else (image.shape[1], image.shape[0])
            if self.even:  # yuv420p needs even sides
                w, h = w - w % 2, h - h % 2
            self.frame_size = (w, h)
        return fit_frame(image, *self.frame_size)


class FileSink(_SizedSink):
    """H.264 in any container FFmpeg knows by the file extension (.mp4, .mkv, ...), with PyAV.

    Timestamps follow the capture times, so frames dropped live leave the video's timing
    right. The encoder is flushed and the file closed by `close()`, on any exit. A recording
    gets no "starting…" frames: it starts with the first animated frame.
    """

    name = "file"
    starting = False

    def __init__(self, path: str | os.PathLike, *, fps: float = 30.0, size: int | None = None,
                 hud: bool = False) -> None:
        super().__init__(size, even=True)
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.hud = hud
        if not self.path.parent.is_dir():
            raise SinkError(f"--output {self.path}: folder {self.path.parent} does not exist")
        self._writer = None  # a lp_live.media.video.VideoWriter once the first frame gives the size
        self._t0: float | None = None
        self.frames = 0

    def describe(self) -> str:
        return f"file {self.path}"

    def _write(self, image: np.ndarray, t_capture: float) -> None:
        from ..media.video import VideoError, VideoWriter  # PyAV, imported only when a file is written

        image = self.fit(image)
        try:
            if self._writer is None:
                # frames come in real time: no lookahead, so a killed run loses only the last moment
                self._writer = VideoWriter(self.path, self.fps, crf=20, low_delay=True)
                self._t0 = t_capture
            self._writer.write(image, pts=round((t_capture - self._t0) * self.fps))
        except VideoError as e:  # says what failed and what to do
            raise SinkError(one_line(e)) from e
        self.frames += 1

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class VirtualCameraSink(_SizedSink):
    """A virtual webcam that Zoom, Meet or OBS can select, through pyvirtualcam (RGB frames).

    Args:
        fps: the frame rate announced to the apps.
        size: square output side; None keeps the first frame's size.
        device: e.g. "/dev/video10"; None lets pyvirtualcam pick the first free one.
    """

    name = "virtualcam"

    def __init__(self, *, fps: float = 30.0, size: int | None = None, device: str | None = None,
                 hud: bool = False) -> None:
        super().__init__(size, even=True)
        self.fps, self.device, self.hud = fps, device, hud
        self._cam = None

    def describe(self) -> str:
        device = self._cam.device if self._cam is not None else self.device
        return f"virtual camera {device}" if device else "virtual camera"

    def _write(self, image: np.ndarray, t_capture: float) -> None:
        image = self.fit(image)
        if self._cam is None:
            import pyvirtualcam

            w, h = self.frame_size
            try:
                self._cam = pyvirtualcam.Camera(w, h, self.fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                                device=self.device)
            except Exception as e:  # pyvirtualcam raises RuntimeError/ValueError per backend
                raise SinkError(f"virtual camera: {one_line(e)}; {virtual_camera_hint()}") from e
            log.info("virtual camera %s: %dx%d at %.3g fps", self._cam.device, w, h, self.fps)
        self._cam.send(np.ascontiguousarray(image))

    def _close(self) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None


def fit_inside(width: int, height: int, limit: tuple[int, int]) -> tuple[int, int]:
    """(width, height) scaled down to fit `limit` (w, h), aspect kept; as is when it fits."""
    scale = min(1.0, limit[0] / width, limit[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


class WindowSink(Sink):
    """The preview window (OpenCV highgui). Use it from one thread only: run_live's main thread.

    The window fits the screen (at most SCREEN_FRACTION of it, aspect kept, resizable), and
    each frame is scaled to the window's size before it is shown (`fit`), so the HUD is drawn
    at a size that stays legible and a square crop shows square. When the frames change
    shape (paste-back toggled) the window takes the new shape. `poll_key()` pumps the window's
    events and returns a pressed key; `is_open()` is False once the user closed the window.

    Args:
        title: the window's title.
        screen: (width, height) of the screen; None finds it (`platform.screen_size`).
    """

    name = "window"
    hud = True

    def __init__(self, title: str = WINDOW_TITLE, screen: tuple[int, int] | None = None) -> None:
        ok, why = display_status()
        if not ok:
            raise SinkError(NO_WINDOW.format(why=why))
        self.title = title
        self.screen = screen
        self.opened = False
        self.display_size: tuple[int, int] | None = None  # (width, height) the frames are shown at
        self._shape: tuple[int, int] | None = None  # the (h, w) of the frames it was sized for

    def describe(self) -> str:
        return "preview window"

    def fit(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if self._shape != (h, w) and (self.display_size is None or not _same_aspect(self.display_size, w, h)):
            if self.screen is None:
                self.screen = screen_size()
            limit = (int(self.screen[0] * SCREEN_FRACTION), int(self.screen[1] * SCREEN_FRACTION))
            self.display_size = fit_inside(w, h, limit)
        self._shape = (h, w)
        return fit_frame(image, *self.display_size)

    def _write(self, image: np.ndarray, t_capture: float) -> None:
        image = self.fit(image)
        size = (image.shape[1], image.shape[0])
        if not self.opened:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
            self.opened = True
            self._window_size = None
        if self._window_size != size:
            cv2.resizeWindow(self.title, *size)
            self._window_size = size
        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def poll_key(self, delay_ms: int = 1) -> str | None:
        if not self.opened or self.closed:
            return None
        return key_from_code(cv2.waitKey(delay_ms))

    def is_open(self) -> bool:
        if not self.opened or self.closed:
            return not self.closed
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def _close(self) -> None:
        if self.opened:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)  # let the GUI process the close


def _same_aspect(size: tuple[int, int], width: int, height: int) -> bool:
    return abs(size[0] * height - size[1] * width) <= max(width, height)  # within a pixel


# the sinks that need a device: (name, probe, error when asked for by name, note when by `auto`)
PROBED = (
    ("virtualcam", virtual_camera_status, "--sink virtualcam: {why}", "no virtual camera: {why}"),
    ("window", display_status, NO_WINDOW, "no preview window: {why}"),
)


@dataclass(frozen=True)
class SinkChoice:
    """The sinks `choose_sinks` picked, the line saying what and why, and what `auto` missed."""

    sinks: list[Sink]
    summary: str  # "output: ...; no virtual camera: ..." (the notes, one per sink `auto` could not use)
    unavailable: dict[str, str]  # sink name -> its note, for each sink `auto` wanted but could not use


def resolve_sinks(names: list[str] | tuple[str, ...], *, output: str | os.PathLike | None = None,
                  fps: float = 30.0, size: int | None = None, hud_on_virtualcam: bool = False,
                  device: str | None = None) -> tuple[list[Sink], str]:
    """The sinks for `--sink` names, and one line saying what was picked and why (`choose_sinks`)."""
    choice = choose_sinks(names, output=output, fps=fps, size=size, hud_on_virtualcam=hud_on_virtualcam,
                          device=device)
    return choice.sinks, choice.summary


def choose_sinks(names: list[str] | tuple[str, ...], *, output: str | os.PathLike | None = None,
                 fps: float = 30.0, size: int | None = None, hud_on_virtualcam: bool = False,
                 device: str | None = None) -> SinkChoice:
    """The sinks for `--sink` names, the line saying what was picked and why, and the sinks
    `auto` could not use.

    "auto" is the virtual camera and the preview window, each when it exists (a null sink when
    neither does); `output` adds a file sink. An explicit sink that cannot work raises
    SinkError. Sinks are constructed here but open their device on the first frame.
    """
    names = [n.strip().lower() for n in names] or ["auto"]
    unknown = [n for n in names if n not in SINK_NAMES]
    if unknown:
        raise SinkError(f"--sink {', '.join(unknown)}: unknown; choose from {', '.join(SINK_NAMES)}")
    if "file" in names and output is None:
        raise SinkError("--sink file needs --output PATH (e.g. --output out.mp4)")
    sinks: list[Sink] = []
    notes: dict[str, str] = {}  # sink name -> why `auto` could not use it
    found: dict[str, str] = {}  # sink name -> the device or display it found
    wanted = list(dict.fromkeys(names))
    for name, probe, refused, note in PROBED:
        if name in wanted or "auto" in wanted:
            ok, why = probe()
            if ok:
                found[name] = why
            elif name in wanted:
                raise SinkError(refused.format(why=why))
            else:
                notes[name] = note.format(why=why)
    if "auto" in wanted:
        at = wanted.index("auto")
        wanted[at:at + 1] = [n for n in ("virtualcam", "window") if n in found]
        wanted = list(dict.fromkeys(wanted))
    if output is not None and "file" not in wanted:
        wanted.append("file")
    nothing = not wanted
    if nothing:
        wanted = ["null"]
    for name in wanted:
        if name == "virtualcam":
            sinks.append(VirtualCameraSink(fps=fps, size=size, device=device, hud=hud_on_virtualcam))
        elif name == "window":
            sinks.append(WindowSink())
        elif name == "file":
            sinks.append(FileSink(output, fps=fps, size=size))
        elif name == "null":
            sinks.append(NullSink())
    picked = " + ".join(s.describe() + (f" ({found[s.name]})" if s.name in found else "") for s in sinks)
    if nothing:
        picked += " (frames are computed but shown nowhere)"
    summary = f"output: {picked}" + "".join(f"; {n}" for n in notes.values())
    return SinkChoice(sinks, summary, notes)
