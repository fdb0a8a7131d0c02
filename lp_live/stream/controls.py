"""Hotkeys: one `Controls` object that the preview window, the terminal and tests press keys on.

Presses are queued under a lock and applied by the inference thread before its next frame
(`apply`), so a switch takes effect on the next frame and never in the middle of one. Both
`press` and `apply` return the `perf_counter()` time taken under that lock: a frame whose
`apply` time is after a press's time was produced with that press applied.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .contract import LiveAnimator
from .hotkeys import KEYS, PHOTO_KEYS

log = logging.getLogger(__name__)

ESC = "\x1b"


class Controls:
    """Requested changes from hotkeys, applied to the Animator by the inference thread.

    Args:
        hud: draw the HUD on the sinks that show it.
        pip: draw the driving frame small in a corner of the sinks that show the HUD.
        detail: the HUD shows every figure and key (`i`), else a compact line or two.

    `quit` is set by q or Esc, and `on_quit` (if set; run_live sets its stop event) is called.
    """

    def __init__(self, *, hud: bool = True, pip: bool = False, detail: bool = False) -> None:
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._switches = [0, 0]  # engine switches (`b`) pressed, and taken by `apply`
        self.hud = hud
        self.pip = pip
        self.detail = detail
        self.quit = threading.Event()
        self.mode_switches = 0
        self.on_quit: Any = None

    def press(self, key: str) -> float:
        """Request the action of `key` (one of KEYS or Esc); unknown keys are ignored."""
        key = key.lower() if key != ESC else key
        with self._lock:
            t = time.perf_counter()
            if key in ("q", ESC):
                self.quit.set()
                if self.on_quit is not None:
                    self.on_quit()
            elif key == "h":
                self.hud = not self.hud  # drawn by the sinks: no engine change to wait for
            elif key == "d":
                self.pip = not self.pip  # drawn by the sinks too
            elif key == "i":
                self.detail = not self.detail  # so is the HUD's detail
            elif key in KEYS or (len(key) == 1 and key in PHOTO_KEYS):
                self._pending.append(key)
                self._switches[0] += key == "b"
            return t

    def pending_switches(self) -> int:
        """Engine switches pressed but not done yet (the switch in progress included)."""
        with self._lock:
            return self._switches[0] - self._switches[1]

    def apply(self, animator: LiveAnimator, before: Callable[[], None] | None = None) -> float:
        """Apply the pending presses to `animator` (inference thread only); returns the time
        the pending list was taken. `before` is called first when there is something to apply
        (the inference thread finishes its frames in flight there)."""
        with self._lock:
            t = time.perf_counter()
            pending, self._pending = self._pending, []
        if pending and before is not None:
            before()
        for key in pending:
            if key == "b":
                self._switch_engine(animator)
                with self._lock:
                    self._switches[1] += 1
            elif key in PHOTO_KEYS:
                self._select_photo(animator, int(key) - 1)
            elif key == "r":
                animator.reanchor()
                log.info("re-anchored: the next driving frame is the neutral pose")
            elif key == "p":
                animator.set_paste_back(not animator.paste_back)
            elif key == "s":
                animator.set_stitching(not animator.stitching)  # a frame in flight keeps its own options
            elif key == "m":
                animator.set_mirror(not animator.mirror)
        return t

    def _switch_engine(self, animator: LiveAnimator) -> None:
        modes = tuple(animator.modes)
        if len(modes) < 2:
            log.info("only the %s engine is loaded; start with both to toggle", animator.mode)
            return
        new = modes[(modes.index(animator.mode) + 1) % len(modes)]
        log.info("engine: switching to %s", new)
        animator.set_mode(new)  # builds it on its first use
        self.mode_switches += 1

    @staticmethod
    def _select_photo(animator: LiveAnimator, index: int) -> None:
        count = animator.source_count
        if index >= count:
            log.info("no source photo %d (%d loaded: --source several times, or a folder)", index + 1, count)
            return
        animator.select_source(index)
        log.info("source photo %d/%d", index + 1, count)


def key_from_code(code: int) -> str | None:
    """A cv2.waitKey code as a key string (None for no key)."""
    if code < 0:
        return None
    code &= 0xFF
    if code == 27:
        return ESC
    return chr(code) if 32 <= code < 127 else None


class TerminalKeys:
    """Hotkeys from the terminal while there is no window.

    Only when `stream` is a TTY of the foreground process group: it is put in cbreak mode (keys
    arrive without Enter, no echo, Ctrl-C still interrupts) and restored on exit. On Windows the
    console is read with msvcrt. Otherwise this does nothing.
    """

    def __init__(self, controls: Controls, stream: Any = None) -> None:
        self.controls = controls
        self.stream = stream if stream is not None else sys.stdin
        self.active = False
        self._saved = None
        self._fd: int | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def _usable(self) -> bool:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return False
        if not os.isatty(fd):
            return False
        if sys.platform != "win32":
            try:
                if os.tcgetpgrp(fd) != os.getpgrp():
                    return False  # a background job: changing the terminal would stop us (SIGTTOU)
            except OSError:
                pass  # not our controlling terminal: no job control to fear
        self._fd = fd
        return True

    def __enter__(self) -> TerminalKeys:
        if not self._usable():
            return self
        if sys.platform == "win32":
            target = self._read_windows
        else:
            import termios
            import tty

            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
            target = self._read_posix
        self.active = True
        self._thread = threading.Thread(target=target, name="lp-live-keys", daemon=True)
        self._thread.start()
        return self

    def _read_posix(self) -> None:
        fd = self._fd
        while not self._done.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(fd, 1)
            if not data:
                return
            ch = data.decode(errors="ignore")
            if ch == ESC and select.select([fd], [], [], 0.03)[0]:
                os.read(fd, 16)  # an escape sequence (arrow key), not Esc alone
                continue
            if ch:
                self.controls.press(ch)

    def _read_windows(self) -> None:  # pragma: no cover - Windows only
        import msvcrt

        while not self._done.is_set():
            if msvcrt.kbhit():
                ch = msvcrt.getwch()
                if ch in ("\x00", "\xe0"):
                    msvcrt.getwch()  # a function/arrow key
                    continue
                self.controls.press(ch)
            else:
                self._done.wait(0.05)

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None
        self.active = False
