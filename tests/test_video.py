"""The one PyAV reader (`lp_live.media.video.VideoReader`): frames and times, looping, low delay,
timeouts, errors in one line. The writer is tested by the render and sink tests."""

from __future__ import annotations

import socket
import time
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from lp_live.media.video import VideoError, VideoReader, VideoWriter  # noqa: E402


def test_reads_every_frame_in_order_with_times(video):
    with VideoReader(video) as reader:
        assert (reader.rate, reader.fps, reader.frame_count) == (Fraction(25), Fraction(25), 78)
        assert reader.is_file and not reader.is_url and not reader.loop
        assert reader.stream.thread_type.name == "AUTO"  # a file decodes with frame threads
        items = list(reader.frames())
        assert reader.read() is None  # the end stays the end
    assert len(items) == 78 and items[0][0].shape == (reader.height, reader.width, 3)
    times = [t for _, t in items]
    np.testing.assert_allclose(times, np.arange(78) / 25, atol=1e-6)


def test_loop_restarts_a_file_with_times_still_increasing(video):
    with VideoReader(video, loop=True) as reader:
        items = [reader.read() for _ in range(200)]
    times = np.array([t for _, t in items])
    assert np.all(np.diff(times) > 0) and times[-1] == pytest.approx(199 / 25)
    np.testing.assert_array_equal(items[78][0], items[0][0])  # frame 78 is the first frame again


def test_low_delay_for_streams_not_for_urls_to_files(video):
    """A URL is opened with low delay (no input buffering, no frame threads) unless it turns out
    to be a file, which FFmpeg does not read unbuffered (no frame at all from this MP4)."""
    with VideoReader(f"file://{video}") as reader:
        assert reader.is_url and reader.is_file and not reader.low_delay
        assert reader.stream.thread_type.name == "AUTO"
        frames = list(reader.frames())
    with VideoReader(video) as local:
        assert not local.low_delay
        assert len(frames) == 78 and np.array_equal(frames[5][0], list(local.frames())[5][0])
    with VideoReader(video, low_delay=True) as reader:  # asked for: honoured
        assert reader.low_delay and reader.stream.thread_type.name != "AUTO"


def test_frames_without_timestamps_get_their_index_at_the_frame_rate(tmp_path, monkeypatch):
    path = tmp_path / "v.mp4"
    with VideoWriter(path, 10) as writer:
        for i in range(3):
            writer.write(np.full((32, 32, 3), 60 * i, np.uint8))
    monkeypatch.setattr(av.VideoFrame, "time", property(lambda self: None))
    with VideoReader(path) as reader:
        assert [t for _, t in reader.frames()] == pytest.approx([0.0, 0.1, 0.2])


def test_a_stream_that_does_not_answer_times_out_in_one_line():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)  # accepts connections, never sends a byte
    try:
        t0 = time.perf_counter()
        with pytest.raises(VideoError) as e:
            VideoReader(f"tcp://127.0.0.1:{server.getsockname()[1]}", timeout=1.0)
        assert time.perf_counter() - t0 < 10
        assert "no answer within 1 s" in str(e.value) and "\n" not in str(e.value)
    finally:
        server.close()


@pytest.mark.parametrize("content, expected", [(None, "not found"), (b"", "empty"),
                                               (b"not a video" * 100, "cannot be opened")])
def test_bad_files_are_one_line(tmp_path, content, expected):
    path = tmp_path / "x.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError, match=expected) as e:
        VideoReader(path)
    assert "\n" not in str(e.value)


def test_close_twice(video):
    reader = VideoReader(video)
    reader.close()
    reader.close()
