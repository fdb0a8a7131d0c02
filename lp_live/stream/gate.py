"""The first animated frame's gate: one object for "the engine is ready" and its lock."""

from __future__ import annotations

import threading
from collections.abc import Callable


class FirstFrameGate:
    """Closed until the first animated frame goes to the sinks (or the inference thread ends).

    The inference thread opens it; a video file used as the camera waits for it before reading
    on (`CaptureThread`); the "starting…" frames (`StartingFrames`) stop when it opens, and put
    each of theirs only while it is closed (`while_closed`): no starting frame follows the first
    animated frame.
    """

    def __init__(self) -> None:
        self._open = threading.Event()
        self._lock = threading.Lock()  # held while opening, and while an action must not race it

    def is_open(self) -> bool:
        return self._open.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds for the gate to open; True when it is open."""
        return self._open.wait(timeout)

    def open(self) -> bool:
        """Open the gate; True when this call opened it (False: it was open already)."""
        if self._open.is_set():
            return False
        with self._lock:
            if self._open.is_set():
                return False
            self._open.set()
            return True

    def while_closed(self, action: Callable[[], None]) -> bool:
        """Run `action` unless the gate is open, holding it closed meanwhile; False when it was open
        (`action` not run)."""
        with self._lock:
            if self._open.is_set():
                return False
            action()
            return True
