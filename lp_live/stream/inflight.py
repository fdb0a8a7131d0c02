"""Two frames in flight: the host prepares frame N+1 and finishes N-1 while the device runs N.

A frame is host work (mirror, face tracking, crop; paste-back) around device work (motion,
warp, generate). One frame at a time the two add up; with two in flight a frame costs about
max(host, device) instead of host + device:

    host    | prep N+1 | finish N-1 | prep N+2 | finish N | ...
    device  |        run N          |      run N+1        | ...

`InFlight` keeps the frames between `Animator.submit` and `Animator.finish`, oldest first, and
never more than `depth` (1: one frame at a time, as `Animator.process`; 2: overlapped). Where
the engine only queues its device work (the optimized engine on CUDA: its own stream, a pinned
download buffer per frame, an event) the device part is launched from the calling thread;
elsewhere it runs on one worker thread, "lp-live-device", so device parts keep their order.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import numpy as np

from .contract import AnimatedResult, LiveAnimator, PendingResult

T = TypeVar("T")
DEPTHS = (1, 2)


class InFlight(Generic[T]):
    """The frames between submit and finish, oldest first, each with a caller's `tag`.

    Args:
        animator: the animator's `submit(image, timestamp, worker=...)` and `finish(pending)`
            are used (see `contract.LiveAnimator`).
        depth: frames in flight at most: 1 or 2.
    """

    def __init__(self, animator: LiveAnimator, depth: int = 2) -> None:
        if depth not in DEPTHS:
            raise ValueError(f"frames in flight must be 1 or 2, got {depth}")
        self.animator = animator
        self.depth = depth
        self._pending: deque[tuple[PendingResult, T]] = deque()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="lp-live-device") if self.depth > 1 else None

    def submit(self, image: np.ndarray, timestamp: float, tag: T) -> None:
        """Start a frame (its host part runs now); `finish` returns it with `tag`."""
        if self.full:
            raise RuntimeError(f"{self.depth} frame(s) already in flight; finish one first")
        pending = self.animator.submit(image, timestamp, worker=self._worker)
        self._pending.append((pending, tag))

    def finish(self) -> tuple[AnimatedResult, T]:
        """The oldest frame's AnimatedFrame and tag, waiting for its device part if needed."""
        pending, tag = self._pending.popleft()
        return self.animator.finish(pending), tag

    def ready(self) -> bool:
        """True when the oldest frame can be finished without waiting for the device."""
        return bool(self._pending) and self._pending[0][0].ready()

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.depth

    def __len__(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Stop the worker thread after the device part it is running (frames not finished are
        dropped). Safe to call twice."""
        self._pending.clear()
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
