"""SIGINT and SIGTERM end a run the same clean way, at any moment; the exit code says which.

The CLI installs `handled()` around a command. The first signal raises `Interrupted` (a
`KeyboardInterrupt`) in the main thread, so every path that already stops cleanly on Ctrl-C
(the render loop, the live run's wait, model loading) does the same on SIGTERM. While a
cleanup runs (`deferred()`: joining threads, closing files) a signal is only recorded, not
raised into the cleanup. A second signal stops the waiting for busy threads (`wait_for`); a
third ends the process at once (the recordings are fragmented, so what was written plays).

Exit codes (live and offline alike): 0 done, 2 bad input or a failed output (one line),
3 the camera or stream was lost and did not come back within `stream.reconnect_s` (a clean end:
what was recorded is kept), 128 + the signal's number for a run ended by a signal: 130 SIGINT,
143 SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CAMERA_LOST = 3
WAIT_SLICE_S = 0.1  # how often a wait for a busy thread checks whether it was told to stop waiting


class Interrupted(KeyboardInterrupt):
    """A stop signal, raised in the main thread; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """The stop signals of this process: what arrived, whether a cleanup defers them, the exit code
    once chosen. One instance (`_signals`), reset (never replaced) at the start and the end of a
    `handled()` block; the module functions below are its interface for the CLI and the stream layer."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every signal and the exit code (a new run in this process starts clean)."""
        self.received: list[int] = []
        self.deferring = 0
        self.stop_waiting = threading.Event()
        self.exit_code: int | None = None  # set by `chosen` once the run is over

    def first(self) -> int | None:
        """The first stop signal received, or None."""
        return self.received[0] if self.received else None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: raise `Interrupted` the first time, unless deferred; see the module doc."""
        if self.exit_code is not None:  # the run is over (files closed, stats written): end here
            exit_now(self.exit_code)
        self.received.append(signum)
        count = len(self.received)
        name = signal.Signals(signum).name
        if count == 1 and not self.deferring:
            raise Interrupted(signum)
        if count == 1:
            _say(f"{name}: stopping as soon as the step under way allows")
        elif count == 2:
            self.stop_waiting.set()
            _say(f"{name} again: not waiting for busy threads; once more quits at once")
        else:
            _say(f"{name} a third time: quitting at once (recordings keep what was written)")
            exit_now(exit_code_for(self.received[0]))

    def raise_pending(self) -> None:
        """Raise the recorded stop signal, if any, unless a cleanup is deferring signals."""
        if self.received and not self.deferring:
            raise Interrupted(self.received[0])


_signals = StopSignals()


def exit_code_for(signum: int) -> int:
    return 128 + signum


def received() -> int | None:
    """The first stop signal received under `handled()`, or None."""
    return _signals.first()


def _say(text: str) -> None:
    # os.write, not print: a handler that prints can interrupt a print (a reentrant call)
    with contextlib.suppress(OSError):
        os.write(2, f"lp-live: {text}\n".encode())


@contextlib.contextmanager
def handled(*, program: bool = False) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Interrupted` (main thread only; elsewhere nothing changes).

    `program`: the process ends after the block (the CLI's entry point). The handler then stays:
    a signal after the exit code is chosen (`chosen`), in the interpreter's own shutdown
    included, ends the process at once with that code instead of a traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _signals.reset()
    previous = {s: signal.signal(s, _signals.handle) for s in SIGNALS}
    try:
        yield
    finally:
        if not program:
            for s, handler in previous.items():
                signal.signal(s, handler)
            _signals.reset()  # the next run in this process starts with no signal received


def chosen(code: int) -> None:
    """The run is over and `code` is its exit code: a stop signal from now on just ends the process."""
    _signals.exit_code = code


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Record stop signals instead of raising them while the block runs (a cleanup)."""
    _signals.deferring += 1
    try:
        yield
    finally:
        _signals.deferring -= 1


def raise_pending() -> None:
    """Raise the stop signal that `deferred()` recorded, if any (a run that was being set up when
    it came stops as soon as it can write its stats)."""
    _signals.raise_pending()


def wait_for(thread: threading.Thread, timeout: float) -> bool:
    """Join `thread` for up to `timeout` s, less when a second signal says not to wait; True if it ended."""
    waited = 0.0
    while thread.is_alive() and waited < timeout and not _signals.stop_waiting.is_set():
        thread.join(min(WAIT_SLICE_S, timeout - waited))
        waited += WAIT_SLICE_S
    return not thread.is_alive()


def busy_threads() -> list[threading.Thread]:
    """lp-live's worker threads that are still running (e.g. inside a compile or a native call)."""
    me = threading.current_thread()
    return [t for t in threading.enumerate() if t is not me and t.is_alive() and t.name.startswith("lp-live-")]


def exit_now(code: int) -> None:
    """Flush the logs and the standard streams and end the process with `code`, without the
    interpreter's shutdown: a thread still inside native code (torch.compile, a device call)
    would otherwise abort it ("terminate called without an active exception", exit 134)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
