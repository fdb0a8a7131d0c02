"""The live app: capture, inference and sink threads with bounded, newest-wins queues.

    stats = run_live(animator, "0", config.stream, stats_json="stats.json")

See `live.py` for the threads, `sinks.py` for the outputs, `hud.py` for the overlay and
`controls.py` for the hotkeys.
"""

# OpenCV before PyAV: PyAV's wheel bundles its own libxcb, and when it is loaded first
# OpenCV's Qt preview window hangs in its first call (PyAV issues #978, #1050).
import cv2  # noqa: F401

from .capture import CapturedFrame, CaptureError, FrameSource, list_cameras, open_source
from .controls import KEYS, Controls, TerminalKeys
from .hud import GpuMonitor, HudInfo, draw_hud, hud_lines
from .live import LiveAnimator, OutputFrame, run_live
from .metrics import LiveStats
from .queues import LatestQueue, QueueClosed
from .sinks import (
    MODPROBE,
    FileSink,
    NullSink,
    Sink,
    SinkError,
    VirtualCameraSink,
    WindowSink,
    display_status,
    resolve_sinks,
    v4l2loopback_devices,
    virtual_camera_status,
)

__all__ = [
    "KEYS",
    "MODPROBE",
    "CaptureError",
    "CapturedFrame",
    "Controls",
    "FileSink",
    "FrameSource",
    "GpuMonitor",
    "HudInfo",
    "LatestQueue",
    "LiveAnimator",
    "LiveStats",
    "NullSink",
    "OutputFrame",
    "QueueClosed",
    "Sink",
    "SinkError",
    "TerminalKeys",
    "VirtualCameraSink",
    "WindowSink",
    "display_status",
    "draw_hud",
    "hud_lines",
    "list_cameras",
    "open_source",
    "resolve_sinks",
    "run_live",
    "v4l2loopback_devices",
    "virtual_camera_status",
]
