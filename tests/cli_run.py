"""The CLI as a user runs it, in a child process: wait for a log line, then signal or kill it."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
FAST = ["--weights", "synthetic", "--mode", "baseline", "--input-size", "128"]  # an offline render, no compile
# a live run without compile or calibration (live runs load both engines)
LIVE_FAST = ["--weights", "synthetic", "--input-size", "128", "--no-compile", "--calibrate-frames", "0"]


def without_progress(stderr: str) -> str:
    """`stderr` without the progress lines (INFO) that every run prints as it starts."""
    return "\n".join(line for line in stderr.strip().splitlines() if not line.startswith("lp-live: INFO: "))


class CliRun:
    """`python -m lp_live.cli ARGS` with its stderr read line by line (also after the end)."""

    def __init__(self, *args: str, preexec_fn=None) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "lp_live.cli", *args], cwd=REPO, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, preexec_fn=preexec_fn)
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        """Until a stderr line contains `text` (AssertionError at the end of the output or the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no {text!r} within {timeout} s:\n{self.stderr}") from None
            if line is None:
                raise AssertionError(f"ended (exit {self.proc.wait()}) before {text!r}:\n{self.stderr}")
            self.lines.append(line)
            if text in line:
                return

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 120) -> int:
        """The exit code (negative: killed by that signal); stdout in `self.stdout`."""
        try:
            self.proc.wait(timeout=timeout)  # stdout holds a line or two: the pipe cannot fill
        finally:
            self.proc.kill()
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()
        self._reader.join(10)
        while not self._q.empty():
            line = self._q.get_nowait()
            if line is not None:
                self.lines.append(line)
        return self.proc.returncode

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


def decoded_frames(path: Path) -> int:
    """Frames decoded from `path` until the end or the first undecodable packet (a cut-off file)."""
    count = 0
    with av.open(str(path)) as container:
        try:
            for _ in container.decode(video=0):
                count += 1
        except av.FFmpegError:
            pass
    return count
