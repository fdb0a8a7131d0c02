"""lp-live: real-time webcam portrait animation with the LivePortrait networks."""

# OpenCV before PyAV, whichever lp_live module is imported first: PyAV's wheel bundles its own
# libxcb, and when it is loaded first OpenCV's Qt preview window hangs (PyAV issues #978, #1050).
import cv2  # noqa: F401

__version__ = "0.1.0"
