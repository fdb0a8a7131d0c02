"""Recordings survive anything: a killed process, a full disk, a failing device; audio is kept."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest
from cli_run import FAST, LIVE_FAST, REPO, CliRun, decoded_frames, without_progress

from lp_live.media.video import VideoReader, VideoWriter

# A child that records noise frames (incompressible: the file grows fast) and says each one.
RECORDER = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    from lp_live.media.video import VideoError, VideoWriter

    path, limit, low_delay = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    try:
        with VideoWriter(path, 25, low_delay=low_delay) as writer:
            for i in range(100_000):
                writer.write(np.roll(noise, 7 * i, axis=1), pts=2 * i)  # gaps, as a live recording
                print("frame", i, flush=True)
    except VideoError as e:
        print("error:", e, flush=True)
        sys.exit(2)
""")


def record(path: Path, limit: int = 0, low_delay: bool = True) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", RECORDER, str(path), str(limit), "1" if low_delay else "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def decode_all(path: Path) -> list[float]:
    """Frame times of every frame; raises if any packet is damaged."""
    with av.open(str(path)) as container:
        return [f.time for f in container.decode(video=0)]


@pytest.mark.parametrize("low_delay", [True, False], ids=["live", "render"])
def test_sigkill_leaves_a_file_playable_up_to_about_the_last_second(tmp_path, low_delay):
    out = tmp_path / "killed.mp4"
    child = record(out, low_delay=low_delay)
    assert child.stdout is not None
    written = 0
    for line in child.stdout:
        written += line.startswith("frame")
        if written == 80:  # 80 frames at pts 0, 2, ...: 6.4 s of video
            break
    time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    assert written == 80, child.stderr.read() if child.stderr else ""
    times = decode_all(out)
    # all but the last fragment (a keyframe a second: 13 frames) and the encoder's lookahead
    assert len(times) >= 80 - (13 if low_delay else 40), len(times)
    assert np.all(np.diff(times) > 0)


def test_full_file_system_ends_with_one_line_and_the_frames_before(tmp_path):
    """EFBIG from a file-size limit stands for a full disk: one VideoError line, a clean cut."""
    out = tmp_path / "limited.mp4"
    child = record(out, limit=400_000)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 2, stdout[-2000:] + stderr
    error = stdout.strip().splitlines()[-1]
    assert error.startswith("error: writing") and "File too large" in error and "frames before" in error, error
    assert "Traceback" not in stderr
    frames = len(decode_all(out))  # cut back to whole fragments: every packet decodes
    assert 10 <= frames < stdout.count("frame "), frames


def make_video_with_audio(path: Path, seconds: float = 2.0) -> None:
    with av.open(str(path), "w") as c:
        video = c.add_stream("libx264", rate=25)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = c.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for i in range(round(25 * seconds)):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 4 % 256, np.uint8), format="rgb24")
            frame.pts = i
            for p in video.encode(frame):
                c.mux(p)
        tone = (0.3 * np.sin(np.arange(1024) / 8)).astype(np.float32)[None]
        for k in range(round(48000 * seconds / 1024)):
            chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, k * 1024
            for p in audio.encode(chunk):
                c.mux(p)
        for stream in (video, audio):
            for p in stream.encode(None):
                c.mux(p)


def test_audio_is_copied_into_the_fragmented_file_up_to_the_video_length(tmp_path):
    src, out = tmp_path / "talk.mp4", tmp_path / "out.mp4"
    make_video_with_audio(src)
    with VideoReader(src) as reader, VideoWriter(out, reader.fps, audio_from=reader) as writer:
        for i, (frame, _) in enumerate(reader.frames()):
            if i == 25:
                break
            writer.write(frame)
    with av.open(str(out)) as c:
        assert {s.type for s in c.streams} == {"video", "audio"}
        assert sum(1 for _ in c.decode(video=0)) == 25
    with av.open(str(out)) as c:
        audio = [f.time for f in c.decode(audio=0)]
    assert 0.9 < audio[-1] < 1.1  # as long as the 1 s of video written, not the 2 s of the source
    assert out.read_bytes()[:64].find(b"iso5") > 0  # a fragmented MP4 (ISO base media, moof per fragment)


def test_render_on_a_full_disk_is_one_line_and_exit_2(assets, tmp_path):
    """An offline render that runs out of space (a file-size limit in the child): one line, exit 2.

    (That the frames before stay playable is `test_full_file_system_ends_with_one_line_and_the_frames_before`.)
    """
    out = tmp_path / "render.mp4"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # the header fits, 2 frames of 724x724 do not

    run = CliRun("--source", str(assets / "s6.jpg"), "--camera", str(assets / "d0.mp4"), "--output", str(out),
                 "--max-frames", "2", *FAST, preexec_fn=limit)
    rc = run.finish(timeout=300)
    err = without_progress(run.stderr)
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("lp-live: error: writing") and "File too large" in err, err


@pytest.mark.slow
def test_render_to_dev_full_is_one_line_exit_2(assets, tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    out = tmp_path / "full.mp4"
    out.symlink_to("/dev/full")
    run = CliRun("--source", str(assets / "s6.jpg"), "--camera", str(assets / "d0.mp4"), "--output", str(out),
                 "--max-frames", "2", *FAST)
    rc = run.finish(timeout=300)
    err = without_progress(run.stderr)
    assert rc == 2 and len(err.splitlines()) == 1 and "No space left" in err, err


@pytest.mark.slow
@pytest.mark.parametrize("sinks", ["null", "file"], ids=["with-null", "file-only"])
def test_live_run_that_loses_its_recording_exits_2(assets, tmp_path, sinks):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    out = tmp_path / "full.mp4"
    out.symlink_to("/dev/full")
    run = CliRun("--source", str(assets / "s6.jpg"), "--camera", str(assets / "d0.mp4"), "--sink", sinks,
                 "--output", str(out), "--max-frames", "3", *LIVE_FAST)
    rc = run.finish(timeout=300)
    assert rc == 2, run.stderr
    assert "lp-live: error: recording failed" in run.stderr and "No space left" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_sigkill_of_a_live_recording_leaves_a_playable_file(assets, tmp_path):
    out = tmp_path / "rec.mp4"
    run = CliRun("--source", str(assets / "s6.jpg"), "--camera", str(assets / "d0.mp4"), "--loop", "--sink", "null",
                 "--output", str(out), *LIVE_FAST)
    run.wait_for("running: first animated frame")
    time.sleep(8)
    run.signal(signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    assert decoded_frames(out) > 0
