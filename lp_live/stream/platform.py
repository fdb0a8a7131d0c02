"""What this machine offers the live path, probed without opening a window: v4l2loopback
devices and the virtual camera, the display (X server, Wayland, OpenCV's GUI backend and Qt
plugins, the PyAV-before-OpenCV import order), and the cameras OpenCV can open.

The sinks, the capture and `lp-live doctor` all ask these same functions. Nothing here makes
an OpenCV GUI call: OpenCV's Qt aborts the whole process when it cannot open a display.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import one_line

log = logging.getLogger(__name__)

MODPROBE = "sudo modprobe v4l2loopback exclusive_caps=1 card_label=lp-live"
V4L2_VIRTUAL = Path("/sys/devices/virtual/video4linux")  # v4l2loopback devices (no parent bus)
V4L2LOOPBACK_MODULE = Path("/sys/module/v4l2loopback")
OBS_HINT = "install OBS Studio and start its virtual camera once"
MAX_CAMERA_INDEX = 10  # `list_cameras` probes 0..9


# ---------------------------------------------------------------------------------------------
# virtual camera
# ---------------------------------------------------------------------------------------------
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


def v4l2loopback_loaded() -> bool:
    """Whether the v4l2loopback kernel module is loaded (it may still have no device)."""
    return V4L2LOOPBACK_MODULE.is_dir()


def virtual_camera_hint() -> str:
    """What to do to get a virtual camera on this platform."""
    return f"create one with: {MODPROBE}" if sys.platform.startswith("linux") else OBS_HINT


def virtual_camera_status() -> tuple[bool, str]:
    """(True, which device) when a virtual camera can be opened, else (False, what to do)."""
    if sys.platform.startswith("linux"):
        devices = v4l2loopback_devices()
        if not devices:
            return False, f"no v4l2loopback device; {virtual_camera_hint()}"
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
        return False, f"{one_line(e)}; {OBS_HINT}"


# ---------------------------------------------------------------------------------------------
# display
# ---------------------------------------------------------------------------------------------
def opencv_gui() -> str:
    """OpenCV's GUI backend from its build information ("QT5", "GTK3", "NONE", ...)."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip()
    return "UNKNOWN"


def qt_platforms() -> list[str] | None:
    """The Qt platform plugins bundled with opencv-python, or None when it bundles no Qt."""
    import cv2

    folder = Path(cv2.__file__).parent / "qt" / "plugins" / "platforms"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None


def x_display_answers(display: str) -> bool:
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


def av_loaded_before_cv2() -> bool:
    """Whether PyAV was imported before OpenCV (sys.modules keeps import order)."""
    order = list(sys.modules)
    return "av" in sys.modules and "cv2" in sys.modules and order.index("av") < order.index("cv2")


def display_status() -> tuple[bool, str]:
    """(True, which display) when a preview window can open, else (False, why). No GUI call."""
    gui = opencv_gui()
    if gui.upper().startswith("NONE"):
        return False, "OpenCV has no GUI (opencv-python-headless?); pip install opencv-python for a window"
    if not sys.platform.startswith("linux"):
        return True, "desktop"
    display, wayland = os.environ.get("DISPLAY"), os.environ.get("WAYLAND_DISPLAY")
    if display:
        if not x_display_answers(display):
            return False, f"DISPLAY={display} does not answer (X server gone?)"
        found = f"DISPLAY={display}"
    elif wayland:
        platforms = qt_platforms()
        if platforms is not None and not any("wayland" in p for p in platforms):
            return False, f"WAYLAND_DISPLAY={wayland} without DISPLAY: OpenCV's Qt needs X11 (enable XWayland)"
        found = f"WAYLAND_DISPLAY={wayland}"
    else:
        return False, "DISPLAY and WAYLAND_DISPLAY are unset (no desktop session)"
    if av_loaded_before_cv2():
        # PyAV's wheel bundles its own libxcb; loaded first, it makes OpenCV's Qt window hang
        # for ever in its first call (PyAV issues #978, #1050). Importing cv2 first avoids it.
        return False, f"{found}, but PyAV was imported before OpenCV, which makes OpenCV's window hang; " \
                      "import cv2 before av"
    return True, found


# ---------------------------------------------------------------------------------------------
# cameras
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own stderr warnings (a missing camera logs several) while probing."""
    import cv2

    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def camera_backend() -> int:
    """The OpenCV capture backend for cameras here."""
    import cv2

    # V4L2 directly on Linux: the default order also tries FFmpeg and Orbbec, each logging an error
    return cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY


def camera_device_exists(index: int) -> bool:
    """Whether camera `index` may exist: its /dev/videoN on Linux (probing a missing index is
    slow and noisy), always elsewhere."""
    return not sys.platform.startswith("linux") or os.path.exists(f"/dev/video{index}")


def list_cameras(max_index: int = MAX_CAMERA_INDEX) -> list[int]:
    """Indices in 0..max_index-1 of the cameras that open and give a frame, probed quietly."""
    import cv2

    found = []
    with quiet_opencv():
        for index in range(max_index):
            if not camera_device_exists(index):
                continue
            cap = cv2.VideoCapture(index, camera_backend())
            try:
                if cap.isOpened() and cap.read()[0]:
                    found.append(index)
            finally:
                cap.release()
    return found


DEFAULT_SCREEN = (1280, 720)  # assumed when the screen's size cannot be found


@functools.lru_cache(maxsize=1)
def screen_size() -> tuple[int, int]:
    """(width, height) of the screen the preview window opens on: from `xrandr`, `xdpyinfo`
    or Tk, else DEFAULT_SCREEN. Only called once a display is known to answer."""
    probes = ((["xrandr", "--current"], r"current (\d+) x (\d+)"), (["xdpyinfo"], r"dimensions:\s+(\d+)x(\d+)"))
    for argv, pattern in probes:
        if shutil.which(argv[0]) is None:
            continue
        try:
            text = subprocess.run(argv, capture_output=True, text=True, timeout=3).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        found = re.search(pattern, text)
        if found:
            return int(found[1]), int(found[2])
    try:
        import tkinter

        root = tkinter.Tk()
        try:
            return int(root.winfo_screenwidth()), int(root.winfo_screenheight())
        finally:
            root.destroy()
    except Exception as e:  # no tkinter, or Tk cannot open the display
        log.debug("screen size unknown (%s); assuming %dx%d", e, *DEFAULT_SCREEN)
    return DEFAULT_SCREEN
