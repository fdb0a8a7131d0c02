"""The process's resident memory over a run, for `--stats-json` (a soak shows whether it grows).

Read from /proc/self/statm (Linux); elsewhere there are no samples. `start()` samples on a
timer thread of its own every `interval_s` from the start of the run (before the first frame
too, however slow the frames are) until `stop()`; `sample()` takes one more at most every
`interval_s` (`force`: now).
"""

from __future__ import annotations

import os
import threading
import time

RSS_INTERVAL_S = 5.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float | None:
    """This process's resident set size in MiB, or None where /proc/self/statm is missing."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return None


class RssSeries:
    """(seconds since `t0`, RSS MiB) samples, at most one per `interval_s`. Thread-safe."""

    def __init__(self, t0: float | None = None, interval_s: float | None = None) -> None:
        self.t0 = time.perf_counter() if t0 is None else t0
        self.interval_s = RSS_INTERVAL_S if interval_s is None else interval_s
        self.samples: list[tuple[float, float]] = []
        self._next = self.t0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Sample now and then every `interval_s` on a timer thread, until `stop()`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="lp-live-rss", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer thread (safe twice, and without `start`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            self.sample(force=True)
            if self._stop.wait(self.interval_s):
                return

    def sample(self, *, force: bool = False) -> None:
        """Record the RSS now if `interval_s` has passed since the last sample (or `force`)."""
        now = time.perf_counter()
        if now < self._next and not force:
            return
        with self._lock:
            if now < self._next and not force:
                return
            self._next = now + self.interval_s
            mb = rss_mb()
            if mb is not None:
                self.samples.append((round(now - self.t0, 2), round(mb, 2)))

    def to_dict(self) -> dict[str, object]:
        """{"interval_s", "samples": [[s, MiB], ...], "peak_mb", "last_mb"} (peak/last None without samples)."""
        with self._lock:
            samples = [list(s) for s in self.samples]
        mbs = [mb for _, mb in samples]
        return {"interval_s": self.interval_s, "samples": samples, "peak_mb": max(mbs) if mbs else None,
                "last_mb": mbs[-1] if mbs else None}
