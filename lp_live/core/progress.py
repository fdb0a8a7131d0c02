"""Start-up progress: what a run is doing while the user waits, as log lines and as a status.

A long step (loading the models, building an engine, the first frame that compiles it) runs
inside `Progress.step(text)`: the text is logged when it starts, again every `tick_s` with the
seconds so far ("compiling the optimized engine 12 s…"), and `status()` gives it, always with a
seconds counter, to whoever draws a "starting…" frame. One `Progress` belongs to one run; the code
that builds the run passes it down.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

TICK_S = 10.0  # a step that lasts longer says so again this often


class Progress:
    """The current start-up step of one run (thread-safe).

    Args:
        tick_s: how often a step still running is logged again.
        logger: where the lines go (INFO).
    """

    def __init__(self, tick_s: float = TICK_S, logger: logging.Logger = log) -> None:
        self.tick_s = tick_s
        self.log = logger
        self.t_start = time.perf_counter()
        self._lock = threading.Lock()
        self._step: tuple[str, float] | None = None  # (text, perf_counter at its start)
        self.durations: dict[str, float] = {}  # seconds per finished step, by text

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        """Run the body as step `text`: logged at the start and every `tick_s` while it lasts."""
        t0 = time.perf_counter()
        with self._lock:
            outer, self._step = self._step, (text, t0)
        self.log.info("%s…", text)
        done = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(text, t0, done), name="lp-live-progress", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
            seconds = time.perf_counter() - t0
            self.durations[text] = seconds
            self.log.debug("%s: done in %.1f s", text, seconds)
            with self._lock:
                self._step = outer

    def _tick(self, text: str, t0: float, done: threading.Event) -> None:
        while not done.wait(self.tick_s):
            self.log.info("%s %.0f s…", text, time.perf_counter() - t0)

    def status(self) -> str:
        """The current step with its seconds so far ("loading the models 3 s"); between steps, the
        run's seconds so far ("starting 12 s"): never a status without a counter."""
        with self._lock:
            step = self._step
        if step is None:
            return f"starting {self.elapsed():.0f} s"
        text, t0 = step
        return f"{text} {time.perf_counter() - t0:.0f} s"

    def elapsed(self) -> float:
        """Seconds since this run started."""
        return time.perf_counter() - self.t_start


def first_frame_step(mode: str, compiles: bool, *, cached: bool | None = None) -> str:
    """The step text for the first frame of engine `mode` (`compiles`: that frame compiles the engine;
    `cached`: whether its compiled code is known to come from the cache, None: not known)."""
    if compiles:
        where = {True: " (from the cache)", False: " (nothing cached yet)", None: ""}[cached]
        return f"compiling the {mode} engine{where}"
    return f"first {mode} frame"
