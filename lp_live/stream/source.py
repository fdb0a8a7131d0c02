"""What the capture thread reads: the `FrameSource` interface and `CaptureError`.

Its own module so that the sources (`capture.py`) and the source that reopens them
(`reconnect.py`) both build on it, and `capture.py` imports `reconnect.py`, never the reverse.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UserError


class CaptureError(UserError):
    """A driving source that cannot be opened or read; the message is one line saying what to do."""


class FrameSource:
    """What `CaptureThread` reads from. `read()` returns (RGB frame, presentation time in
    seconds or None), or None at the end of the input; it raises CaptureError when the
    source breaks."""

    description: str = ""
    fps: float | None = None
    is_file: bool = False  # plays at its own rate when paced; a camera is paced by itself
    loop: bool = False  # a file starts again at its end (`--loop`)

    def read(self) -> tuple[np.ndarray, float | None] | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, object]:
        """Counts for the run's stats (frames missing, reconnects); none by default."""
        return {}

    def interrupt(self) -> None:
        """The run is stopping: stop waiting for the source (a reconnect); reads may then fail."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
