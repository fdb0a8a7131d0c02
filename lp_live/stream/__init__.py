"""The live app: capture, inference and sink threads with bounded, newest-wins queues.

    stats = run_live(animator, "0", config.stream, stats_json="stats.json")
    session = open_live(AnimatorFactory(build), "0", config.stream)  # built, not started
    stats = session.run()

See `live.py` for the session that wires and runs the threads (`capture.py` the driving frames,
`inference.py` the animator's thread, `outputs.py` the sink threads, `starting.py` the frames
before the first animated one), `contract.py` for what the live path needs from the animator
(`LiveAnimator`), `sinks.py` for the outputs, `platform.py` for what the machine offers
(virtual camera, display, cameras), `hud.py` for the overlay and `controls.py` for the hotkeys.
"""

# OpenCV before PyAV: PyAV's wheel bundles its own libxcb, and when it is loaded first
# OpenCV's Qt preview window hangs in its first call (PyAV issues #978, #1050).
import cv2  # noqa: F401

from .capture import CapturedFrame, open_source
from .contract import AnimatorFactory, LiveAnimator
from .controls import KEYS, Controls, TerminalKeys
from .hud import GpuMonitor, HudInfo, draw_hud, hud_lines
from .inference import OutputFrame
from .live import LiveSession, open_live, run_live
from .metrics import LiveStats
from .platform import MODPROBE, display_status, list_cameras, v4l2loopback_devices, virtual_camera_status
from .queues import LatestQueue, QueueClosed
from .sinks import FileSink, NullSink, Sink, SinkError, VirtualCameraSink, WindowSink, resolve_sinks
from .source import CaptureError, FrameSource

__all__ = [
    "KEYS",
    "MODPROBE",
    "AnimatorFactory",
    "CaptureError",
    "CapturedFrame",
    "Controls",
    "FileSink",
    "FrameSource",
    "GpuMonitor",
    "HudInfo",
    "LatestQueue",
    "LiveAnimator",
    "LiveSession",
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
    "open_live",
    "open_source",
    "resolve_sinks",
    "run_live",
    "v4l2loopback_devices",
    "virtual_camera_status",
]
