"""Hotkeys: window key codes, and the terminal in cbreak mode (restored afterwards)."""

from __future__ import annotations

import os
import sys
import time

import pytest
from livefakes import FakeAnimator

from lp_live.stream import Controls, TerminalKeys


def test_window_keys_map_to_controls():
    from lp_live.stream.controls import ESC, key_from_code

    assert key_from_code(-1) is None and key_from_code(27) == ESC
    assert key_from_code(ord("b")) == "b" and key_from_code(0x100000 | ord("q")) == "q"  # Qt modifier bits
    assert key_from_code(0) is None


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
def test_terminal_keys_cbreak_on_a_tty_and_restored():
    import termios

    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    controls = Controls()
    animator = FakeAnimator()
    try:
        with os.fdopen(slave, "rb", buffering=0, closefd=False) as stream, TerminalKeys(controls, stream) as keys:
            assert keys.active
            during = termios.tcgetattr(slave)
            assert not during[3] & termios.ICANON and not during[3] & termios.ECHO
            assert during[3] & termios.ISIG  # Ctrl-C still interrupts
            os.write(master, b"b")
            os.write(master, b"\x1b[A")  # an arrow key: not Esc
            deadline = time.perf_counter() + 3
            while not controls._pending and time.perf_counter() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)
            assert not controls.quit.is_set()
            controls.apply(animator)
            assert animator.mode == "baseline"
            os.write(master, b"q")
            assert controls.quit.wait(3)
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_terminal_keys_do_nothing_without_a_tty(tmp_path):
    with open(tmp_path / "f", "w+") as f, TerminalKeys(Controls(), f) as keys:
        assert not keys.active
