"""The newest-wins queue between the live threads."""

from __future__ import annotations

import threading
import time

import pytest

from lp_live.stream import LatestQueue, QueueClosed


def test_latest_queue_keeps_newest_counts_drops_and_closes():
    q: LatestQueue[int] = LatestQueue(1, "x")
    for i in range(5):
        q.put(i)
    assert len(q) == 1 and q.dropped == 4 and q.put_count == 5
    assert q.get(timeout=0) == 4
    t0 = time.perf_counter()
    with pytest.raises(Exception) as e:
        q.get(timeout=0.05)
    assert type(e.value).__name__ == "Empty" and time.perf_counter() - t0 >= 0.04
    q.put(7)
    q.close()
    q.close()  # idempotent
    assert q.get(timeout=0) == 7  # drained after close
    with pytest.raises(QueueClosed):
        q.get(timeout=1)
    with pytest.raises(QueueClosed):
        q.put(8)


def test_latest_queue_wakes_a_waiting_consumer_on_close():
    q: LatestQueue[int] = LatestQueue(2)
    got = []

    def consume():
        try:
            q.get(timeout=5)
        except QueueClosed:
            got.append(time.perf_counter())

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.05)
    t_close = time.perf_counter()
    q.close()
    t.join(2)
    assert got and got[0] - t_close < 1.0  # woken, not timed out after 5 s
