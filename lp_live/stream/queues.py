"""A bounded hand-off between two threads where the newest item wins.

Live video must not queue: when the consumer is slower than the producer, waiting frames only
add latency. `LatestQueue` is `queue.Queue(maxsize)` with two changes: `put` on a full queue
drops the oldest item (and counts it) instead of blocking, and `close()` lets the producer say
"no more items", so the consumer drains what is left and then stops without a sentinel.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

GET_TIMEOUT_S = 0.1  # how long a live consumer waits for an item before checking its stop event


class QueueClosed(Exception):
    """`get` on a closed, drained queue, or `put` on a closed queue."""


class LatestQueue(Generic[T]):
    """Bounded FIFO with drop-oldest on full, a drop counter and `close()`.

    Args:
        maxsize: items held at most (1 or 2 for live video).
        name: used in stats ("capture", "sink:window", ...).
        placeholders: item types dropped without being counted (the "starting…" frames).
    """

    def __init__(self, maxsize: int = 1, name: str = "", placeholders: tuple[type, ...] = ()) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.name = name
        self.placeholders = placeholders
        self.dropped = 0
        self.put_count = 0
        self._items: deque[T] = deque()
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: T) -> None:
        """Add `item`; if full, drop the oldest first. Raises QueueClosed once closed."""
        with self._cond:
            if self._closed:
                raise QueueClosed(self.name)
            while len(self._items) >= self.maxsize:
                self.dropped += not isinstance(self._items.popleft(), self.placeholders)
            self._items.append(item)
            self.put_count += 1
            self._cond.notify()

    def get(self, timeout: float | None = None) -> T:
        """The oldest item. Raises queue.Empty after `timeout`, QueueClosed when closed and drained."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                raise queue.Empty
            if self._items:
                return self._items.popleft()
            raise QueueClosed(self.name)

    def close(self) -> None:
        """No more puts; consumers get the remaining items, then QueueClosed. Safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
