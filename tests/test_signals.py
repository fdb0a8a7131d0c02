"""SIGINT and SIGTERM at every moment of a real run end it cleanly: exit 130/143, files playable.

Each test starts the CLI in a child process, waits for the log line of a phase (models
loading, compiling, steady state, shutting down), sends the signal and checks the exit code,
that nothing aborted or printed a traceback, and that a requested file decodes.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from cli_run import FAST, LIVE_FAST, CliRun, decoded_frames

from lp_live.core import signals

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
# the log line that starts each phase of a live run (INFO lines of lp_live.stream and the engine)
PHASES = {
    "loading": "output:",  # sinks chosen; the inference thread now builds the models
    "compiling": "compiling the optimized engine",  # built; the first frame compiles
    "calibrating": "running: first animated frame",  # both engines timed on the first frames
    "steady": "running: first animated frame",  # (without calibration)
    "stopping": "stopping (",
}
SYNTHETIC = ["--weights", "synthetic", "--input-size", "128"]
PHASE_FLAGS = {  # the cheapest run that has the phase
    "loading": [*SYNTHETIC, "--no-compile"],
    "compiling": SYNTHETIC,
    "calibrating": [*SYNTHETIC, "--no-compile"],
    "steady": LIVE_FAST,
    "stopping": [*LIVE_FAST, "--max-frames", "4"],
}


def live_args(assets, tmp_path, *extra: str) -> list[str]:
    return ["--source", str(assets / "s6.jpg"), "--camera", str(assets / "d0.mp4"), "--loop", "--sink", "null",
            "--output", str(tmp_path / "rec.mp4"), "--stats-json", str(tmp_path / "stats.json"), *extra]


def assert_clean(run: CliRun, rc: int, expected: int) -> None:
    err = run.stderr
    assert rc == expected, f"exit {rc}, expected {expected}:\n{err}"
    assert "Traceback" not in err and "terminate called" not in err, err


def assert_recording_plays(tmp_path, least: int = 1) -> int:
    rec = tmp_path / "rec.mp4"
    frames = decoded_frames(rec) if rec.exists() else 0
    assert frames >= least, f"{rec}: {frames} frames"
    return frames


def test_exit_codes_are_128_plus_the_signal():
    assert signals.exit_code_for(signal.SIGINT) == 130 and signals.exit_code_for(signal.SIGTERM) == 143
    assert isinstance(signals.Interrupted(signal.SIGTERM), KeyboardInterrupt)


def test_sigterm_while_compiling_ends_cleanly(assets, tmp_path):
    """The known abort: a stop signal while the inference thread is inside torch.compile."""
    run = CliRun(*live_args(assets, tmp_path, *PHASE_FLAGS["compiling"]))
    run.wait_for(PHASES["compiling"])
    time.sleep(0.5)
    run.signal(signal.SIGTERM)
    assert_clean(run, run.finish(), 143)
    assert json.loads((tmp_path / "stats.json").read_text())["stop_reason"] == "interrupted (SIGTERM)"


def test_sigint_in_steady_state_keeps_the_recording(assets, tmp_path):
    run = CliRun(*live_args(assets, tmp_path, *PHASE_FLAGS["steady"]))
    run.wait_for(PHASES["steady"])
    time.sleep(3)
    run.signal(signal.SIGINT)
    assert_clean(run, run.finish(), 130)
    assert "stopped: interrupted" in run.stdout
    assert_recording_plays(tmp_path, least=2)
    assert json.loads((tmp_path / "stats.json").read_text())["stop_reason"] == "interrupted"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", ["loading", "compiling", "calibrating", "steady"])
def test_each_signal_in_each_phase(assets, tmp_path, phase, signum):
    run = CliRun(*live_args(assets, tmp_path, *PHASE_FLAGS[phase]))
    run.wait_for(PHASES[phase])
    if phase == "steady":
        time.sleep(2)
    run.signal(signum)
    assert_clean(run, run.finish(), EXIT[signum])
    if phase == "steady":
        assert_recording_plays(tmp_path, least=1)
    assert (tmp_path / "stats.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_stopping(assets, tmp_path, signum):
    """A signal that comes while the run already shuts down (here: the frame limit) is no abort."""
    run = CliRun(*live_args(assets, tmp_path, *PHASE_FLAGS["stopping"]))
    run.wait_for(PHASES["stopping"])
    run.signal(signum)
    rc = run.finish()
    # the signal lands in the cleanup (recorded: 128 + n) or after the exit code is chosen (0)
    assert rc in (0, EXIT[signum]), run.stderr
    assert_clean(run, rc, rc)
    assert_recording_plays(tmp_path, least=1)


@pytest.mark.slow
def test_double_ctrl_c_while_compiling_does_not_abort(assets, tmp_path):
    run = CliRun(*live_args(assets, tmp_path, *PHASE_FLAGS["compiling"]))
    run.wait_for(PHASES["compiling"])
    run.signal(signal.SIGINT)
    time.sleep(0.3)
    run.signal(signal.SIGINT)
    assert_clean(run, run.finish(), 130)


RENDER_PHASES = {  # offline (-v): marker, flags
    "loading": ("loading the models", FAST),
    "compiling": ("optimized engine on", SYNTHETIC),  # the first frame compiles, in the main thread
    "rendering": ("frame 3/78 rendered", FAST),
}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", list(RENDER_PHASES))
def test_offline_render_signal_in_each_phase(assets, tmp_path, phase, signum):
    """Live and offline end the same way: 130/143 and the frames rendered so far in the file."""
    marker, flags = RENDER_PHASES[phase]
    out = tmp_path / "rec.mp4"
    run = CliRun("--source", str(assets / "s6.jpg"), "--camera", str(assets / "d0.mp4"), "--output", str(out),
                 "-v", *flags)
    run.wait_for(marker)
    run.signal(signum)
    assert_clean(run, run.finish(), EXIT[signum])
    assert "interrupted" in run.stderr
    if phase == "rendering":
        assert 3 <= decoded_frames(out) < 78
