"""Where animated frames go: virtual camera, preview window, H.264 file, or nowhere (null).

Sinks are context managers with an idempotent `close()`. `write(image, t_capture)` takes an
RGB uint8 frame; a sink opens its device on the first frame (when the output size is known)
and keeps that size, letterboxing later frames of another size (e.g. after paste-back is
toggled). A sink that cannot be used raises `SinkError` with a one-line message saying what
to do. Nothing here makes an OpenCV GUI call unless `display_status()` says a display exists:
OpenCV's Qt aborts the whole process when it cannot open one.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..errors import UserError
from .controls import key_from_code

log = logging.getLogger(__name__)

MODPROBE = "sudo modprobe v4l2loopback exclusive_caps=1 card_label=lp-live"
SINK_NAMES = ("auto", "virtualcam", "window", "file", "null")
WINDOW_TITLE = "lp-live"
V4L2_VIRTUAL = Path("/sys/devices/virtual/video4linux")  # v4l2loopback devices (no parent bus)


class SinkError(UserError):
    """A sink that cannot be opened or written; the message is one line saying what to do."""


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


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
    """The sink contract. `hud`: whether this sink shows the HUD when the HUD is on."""

    name = "sink"
    hud = False

    def write(self, image: np.ndarray, t_capture: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

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
        self.closed = False

    def write(self, image: np.ndarray, t_capture: float) -> None:
        self.frames += 1

    def close(self) -> None:
        self.closed = True


class _SizedSink(Sink):
    """A sink whose device has one frame size, fixed by `size` or by the first frame."""

    def __init__(self, size: int | None, even: bool = False) -> None:
        self.size = size
        self.even = even
        self.frame_size: tuple[int, int] | None = None  # (width, height) once open

    def _fit(self, image: np.ndarray) -> np.ndarray:
        if self.frame_size is None:
            w, h = (self.size, self.size) if self.size else (image.shape[1], image.shape[0])
            if self.even:  # yuv420p needs even sides
                w, h = w - w % 2, h - h % 2
            self.frame_size = (w, h)
        return fit_frame(image, *self.frame_size)


class FileSink(_SizedSink):
    """H.264 in any container FFmpeg knows by the file extension (.mp4, .mkv, ...), with PyAV.

    Timestamps follow the capture times, so frames dropped live leave the video's timing
    right. The encoder is flushed and the file closed by `close()`, on any exit.
    """

    name = "file"

    def __init__(self, path: str | os.PathLike, *, fps: float = 30.0, size: int | None = None,
                 hud: bool = False) -> None:
        super().__init__(size, even=True)
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.hud = hud
        if not self.path.parent.is_dir():
            raise SinkError(f"--output {self.path}: folder {self.path.parent} does not exist")
        self._writer = None  # a lp_live.video.VideoWriter once the first frame gives the size
        self._t0: float | None = None
        self._closed = False
        self.frames = 0

    def describe(self) -> str:
        return f"file {self.path}"

    def write(self, image: np.ndarray, t_capture: float) -> None:
        from ..video import VideoError, VideoWriter  # PyAV, imported only when a file is written

        if self._closed:
            raise SinkError(f"file {self.path} is closed")
        image = self._fit(image)
        try:
            if self._writer is None:
                # frames come in real time: no lookahead, so a killed run loses only the last moment
                self._writer = VideoWriter(self.path, self.fps, crf=20, low_delay=True)
                self._t0 = t_capture
            self._writer.write(image, pts=round((t_capture - self._t0) * self.fps))
        except VideoError as e:  # says what failed and what to do
            raise SinkError(_one_line(e)) from e
        self.frames += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()


def v4l2loopback_devices() -> list[tuple[str, str]]:
    """(/dev/videoN, card label) of each v4l2loopback device; empty off Linux."""
    root = V4L2_VIRTUAL
    if not root.is_dir():
        return []
    found = []
    for d in root.glob("video*"):
        if not d.name[5:].isdigit():
            continue
        label = (d / "name").read_text(errors="replace").strip() if (d / "name").is_file() else ""
        found.append((int(d.name[5:]), f"/dev/{d.name}", label))
    return [(dev, label) for _, dev, label in sorted(found)]


def virtual_camera_status() -> tuple[bool, str]:
    """(True, which device) when a virtual camera can be opened, else (False, what to do)."""
    if sys.platform.startswith("linux"):
        devices = v4l2loopback_devices()
        if not devices:
            return False, f"no v4l2loopback device; create one with: {MODPROBE}"
        writable = [(d, label) for d, label in devices if os.access(d, os.W_OK)]
        if not writable:
            return False, (f"{', '.join(d for d, _ in devices)} not writable; add yourself to the video group "
                           "(sudo usermod -aG video $USER, then log in again)")
        return True, ", ".join(f"{d} ({label})" if label else d for d, label in writable)
    try:
        import pyvirtualcam

        with pyvirtualcam.Camera(64, 64, 30) as cam:
            return True, f"{cam.device} ({cam.backend})"
    except Exception as e:  # each backend raises its own type; the message says why
        return False, f"{_one_line(e)}; install OBS Studio and start its virtual camera once"


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
        self._closed = False

    def describe(self) -> str:
        device = self._cam.device if self._cam is not None else self.device
        return f"virtual camera {device}" if device else "virtual camera"

    def write(self, image: np.ndarray, t_capture: float) -> None:
        if self._closed:
            raise SinkError("virtual camera is closed")
        image = self._fit(image)
        if self._cam is None:
            import pyvirtualcam

            w, h = self.frame_size
            try:
                self._cam = pyvirtualcam.Camera(w, h, self.fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                                device=self.device)
            except Exception as e:  # pyvirtualcam raises RuntimeError/ValueError per backend
                hint = f"create one with: {MODPROBE}" if sys.platform.startswith("linux") else \
                    "install OBS Studio and start its virtual camera once"
                raise SinkError(f"virtual camera: {_one_line(e)}; {hint}") from e
            log.info("virtual camera %s: %dx%d at %.3g fps", self._cam.device, w, h, self.fps)
        self._cam.send(np.ascontiguousarray(image))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._cam is not None:
            self._cam.close()
            self._cam = None


def _opencv_gui() -> str:
    """OpenCV's GUI backend from its build information ("QT5", "GTK3", "NONE", ...)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip()
    return "UNKNOWN"


def _qt_platforms() -> list[str] | None:
    """The Qt platform plugins bundled with opencv-python, or None when it bundles no Qt."""
    folder = Path(cv2.__file__).parent / "qt" / "plugins" / "platforms"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None


def _x_display_answers(display: str) -> bool:
    """Whether the X server of `display` (":0", "localhost:10.0", ...) accepts a connection."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit() or "/" in host:
        return True  # a form we do not parse (e.g. a launchd socket path): let the GUI decide
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        for address in (path, "\0" + path):  # file socket, then Linux abstract socket
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                try:
                    s.connect(address)
                    return True
                except OSError:
                    continue
        return False
    try:
        with socket.create_connection((host, 6000 + int(number)), timeout=0.5):
            return True
    except OSError:
        return False


def _av_loaded_before_cv2() -> bool:
    """Whether PyAV was imported before OpenCV (sys.modules keeps import order)."""
    order = list(sys.modules)
    return "av" in sys.modules and "cv2" in sys.modules and order.index("av") < order.index("cv2")


def display_status() -> tuple[bool, str]:
    """(True, which display) when a preview window can open, else (False, why). No GUI call."""
    gui = _opencv_gui()
    if gui.upper().startswith("NONE"):
        return False, "OpenCV has no GUI (opencv-python-headless?); pip install opencv-python for a window"
    if not sys.platform.startswith("linux"):
        return True, "desktop"
    display, wayland = os.environ.get("DISPLAY"), os.environ.get("WAYLAND_DISPLAY")
    if display:
        if not _x_display_answers(display):
            return False, f"DISPLAY={display} does not answer (X server gone?)"
        found = f"DISPLAY={display}"
    elif wayland:
        platforms = _qt_platforms()
        if platforms is not None and not any("wayland" in p for p in platforms):
            return False, f"WAYLAND_DISPLAY={wayland} without DISPLAY: OpenCV's Qt needs X11 (enable XWayland)"
        found = f"WAYLAND_DISPLAY={wayland}"
    else:
        return False, "DISPLAY and WAYLAND_DISPLAY are unset (no desktop session)"
    if _av_loaded_before_cv2():
        # PyAV's wheel bundles its own libxcb; loaded first, it makes OpenCV's Qt window hang
        # for ever in its first call (PyAV issues #978, #1050). Importing cv2 first avoids it.
        return False, f"{found}, but PyAV was imported before OpenCV, which makes OpenCV's window hang; " \
                      "import cv2 before av"
    return True, found


class WindowSink(Sink):
    """The preview window (OpenCV highgui). Use it from one thread only: run_live's main thread.

    `poll_key()` pumps the window's events and returns a pressed key; `is_open()` is False once
    the user closed the window.
    """

    name = "window"
    hud = True

    def __init__(self, title: str = WINDOW_TITLE) -> None:
        ok, why = display_status()
        if not ok:
            raise SinkError(f"--sink window: no display: {why}; use --sink virtualcam, file or null")
        self.title = title
        self.opened = False
        self._closed = False

    def describe(self) -> str:
        return "preview window"

    def write(self, image: np.ndarray, t_capture: float) -> None:
        if self._closed:
            raise SinkError("window is closed")
        if not self.opened:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
            cv2.resizeWindow(self.title, image.shape[1], image.shape[0])
            self.opened = True
        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def poll_key(self, delay_ms: int = 1) -> str | None:
        if not self.opened or self._closed:
            return None
        return key_from_code(cv2.waitKey(delay_ms))

    def is_open(self) -> bool:
        if not self.opened or self._closed:
            return not self._closed
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.opened:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)  # let the GUI process the close


def resolve_sinks(names: list[str] | tuple[str, ...], *, output: str | os.PathLike | None = None,
                  fps: float = 30.0, size: int | None = None, hud_on_virtualcam: bool = False,
                  device: str | None = None) -> tuple[list[Sink], str]:
    """The sinks for `--sink` names, and one line saying what was picked and why.

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
    notes: list[str] = []
    found: dict[str, str] = {}  # sink name -> the device or display it found
    wanted = list(dict.fromkeys(names))
    if "virtualcam" in wanted or "auto" in wanted:
        ok, why = virtual_camera_status()
        if ok:
            found["virtualcam"] = why
        elif "virtualcam" in wanted:
            raise SinkError(f"--sink virtualcam: {why}")
        else:
            notes.append(f"no virtual camera: {why}")
    if "window" in wanted or "auto" in wanted:
        ok, why = display_status()
        if ok:
            found["window"] = why
        elif "window" in wanted:
            raise SinkError(f"--sink window: no display: {why}; use --sink virtualcam, file or null")
        else:
            notes.append(f"no preview window: {why}")
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
    summary = f"output: {picked}" + "".join(f"; {n}" for n in notes)
    return sinks, summary
