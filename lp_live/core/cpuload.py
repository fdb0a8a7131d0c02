"""A controlled competing CPU load: N busy processes, as a video call or a recorder would run beside lp-live.

Each load process is a single-threaded Python busy loop: it holds one core whenever the
scheduler gives it one, which is the worst case of "another application uses a core". It
checks every few milliseconds that its parent is still alive and exits if not, so a killed
bench leaves nothing spinning; `CompetingLoad.stop()` (also on exit from the `with` block,
including Ctrl-C) terminates and reaps the processes. Torch-free.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

log = logging.getLogger(__name__)

# Spins in slices of ~100k iterations (a few ms) and exits when its parent (`PARENT`) is gone.
_SPIN = """
import os, sys
parent = int(sys.argv[1])
sys.stdout.write("1"); sys.stdout.flush()
while os.getppid() == parent:
    for _ in range(100_000):
        pass
"""


def max_load() -> int:
    """The largest allowed `--load`: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class CompetingLoad:
    """`processes` busy single-threaded processes while the `with` block runs (0: none).

    Args:
        processes: how many; at most `max_load()` (one per usable CPU).
    """

    kind = "spin"  # one pure-Python busy loop per process

    def __init__(self, processes: int) -> None:
        if not 0 <= processes <= max_load():
            raise ValueError(f"competing load must be 0..{max_load()} processes (one per CPU), got {processes}")
        self.processes = processes
        self._procs: list[subprocess.Popen] = []

    def start(self) -> None:
        if self._procs:
            return
        try:
            for _ in range(self.processes):
                proc = subprocess.Popen([sys.executable, "-c", _SPIN, str(os.getpid())], stdout=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL)
                self._procs.append(proc)
            for proc in self._procs:  # each has started spinning
                if proc.stdout.read(1) != b"1":
                    raise RuntimeError(f"competing load process {proc.pid} did not start (exit {proc.poll()})")
        except BaseException:
            self.stop()
            raise
        log.debug("competing load: %d spinning processes %s", self.processes, [p.pid for p in self._procs])

    def stop(self) -> None:
        """Terminate and reap the load processes; safe to call twice."""
        procs, self._procs = self._procs, []
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def describe(self) -> dict:
        return {"processes": self.processes, "kind": self.kind}

    def __enter__(self) -> CompetingLoad:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
