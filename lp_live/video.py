"""Video through PyAV: one reader (files and network streams, in order, optionally looped) and an
H.264 writer.

The writer flushes its encoder and closes the container on any exit (error, Ctrl-C), so a
partial render is still a playable file holding the frames written so far.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from .errors import UserError, one_line

log = logging.getLogger(__name__)


class VideoError(UserError):
    """A video file that cannot be read or written; the message says what to do."""


class VideoReader:
    """Frames of a video file or a network stream (rtsp://, http://, udp://, ...) as RGB uint8
    arrays, in order, with their times in seconds. The one PyAV reader of lp-live: the offline
    render, the live capture, the bench and the tests read video through it.

    Args:
        spec: a file path, or a URL (anything with "://").
        timeout: seconds to wait for a network stream to open and then for each read
            (None: FFmpeg's default, which may wait for ever).
        loop: start a file again at its end, times still increasing, like a camera that never
            ends (ignored for a live stream, which has no duration).
        low_delay: no input buffering and no frame threads, so a frame is returned as soon as it
            arrives; for live streams (default: on for a URL without a duration, off for files and
            URLs to files, which FFmpeg cannot always read unbuffered and which decode faster
            with threads).

    Attributes: `rate` (the frame rate the container states, or None), `fps` (`rate`, else 25),
    `frame_count` (0 when the container does not say), `width`, `height`, `audio` (the first
    audio stream or None), `is_url`, `is_file` (has a duration: a file, or a URL to a file),
    `low_delay` (as opened), `stream` (the PyAV video stream).

    Raises VideoError (one line) when the input cannot be opened, answers nothing within
    `timeout`, or holds no decodable frame.
    """

    def __init__(self, spec: str | Path, *, timeout: float | None = None, loop: bool = False,
                 low_delay: bool | None = None) -> None:
        self.spec = str(spec)
        self.is_url = "://" in self.spec
        self.path = Path(spec)  # meaningful for a file only
        if not self.is_url:
            if not self.path.is_file():
                raise VideoError(f"driving video {self.path} not found; pass an existing video file with --camera")
            if self.path.stat().st_size == 0:
                raise VideoError(f"driving video {self.path} is empty (0 bytes); pass a real video file")
        self.low_delay = self.is_url if low_delay is None else low_delay
        self.container = self._open(timeout)
        if low_delay is None and self.low_delay and self.container.duration is not None:
            # a URL to a file, not a live stream: FFmpeg cannot read a file (MP4 over HTTP)
            # without input buffering, and a file gains nothing from low delay
            self.container.close()
            self.low_delay = False
            self.container = self._open(timeout)
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"{self.spec} has no video stream; pass a video file")
        self.stream = self.container.streams.video[0]
        if not self.low_delay:
            self.stream.thread_type = "AUTO"  # frame threads add decode latency: fine for a file
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.rate: Fraction | None = Fraction(rate) if rate else None
        self.fps: Fraction = self.rate or Fraction(25)
        self.frame_count: int = self.stream.frames  # 0 when the container does not say
        self.width, self.height = self.stream.codec_context.width, self.stream.codec_context.height
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None
        # a file, or a URL to a file, has a duration; a live stream does not
        self.is_file = not self.is_url or self.container.duration is not None
        self.loop = loop and self.is_file
        self._frames = self.container.decode(self.stream)
        self._decoded = 0  # frames decoded, all loops together
        self._index = 0  # frames decoded in this loop
        self._offset = 0.0  # added to frame times after each loop
        self._last_time: float | None = None
        self._closed = False

    def _open(self, timeout: float | None) -> av.container.InputContainer:
        options = {"fflags": "nobuffer", "flags": "low_delay"} if self.low_delay else {}
        try:
            return av.open(self.spec, mode="r", options=options,
                           timeout=None if timeout is None else (timeout, timeout))
        except av.ExitError as e:  # FFmpeg's interrupt callback: the timeout expired
            raise VideoError(f"{self.spec}: no answer within {timeout:.0f} s; check the URL and that the stream "
                             "is being published") from e
        except (av.FFmpegError, OSError) as e:
            todo = "check the URL and that the stream is being published" if self.is_url else \
                "it is not a video FFmpeg can read; pass an MP4/MKV/MOV/WebM file"
            raise VideoError(f"{self.spec} cannot be opened ({one_line(e)}); {todo}") from e

    def read(self) -> tuple[np.ndarray, float] | None:
        """The next (RGB frame, seconds), or None at the end of the input (never with `loop`).

        A frame without a timestamp gets its index at `fps`. A file that breaks after some
        frames ends there (with a warning); a stream that stops answering raises VideoError.
        """
        try:
            frame = next(self._frames, None)
            if frame is None and self.loop and self._last_time is not None:
                self.container.seek(0)
                self._offset = self._last_time + 1.0 / float(self.fps)
                self._frames = self.container.decode(self.stream)
                self._index = 0
                frame = next(self._frames, None)
        except av.ExitError as e:
            raise VideoError(f"{self.spec}: stream stopped answering") from e
        except (av.FFmpegError, OSError) as e:
            if self._decoded == 0:
                raise VideoError(f"{self.spec} is corrupt or not a video: no frame could be decoded "
                                 f"({one_line(e)}); pass a working video file") from e
            if self.is_url:
                raise VideoError(f"{self.spec}: cannot be decoded ({one_line(e)})") from e
            log.warning("%s: decoding stopped after %d frames (%s)", self.spec, self._decoded, one_line(e))
            frame = None
        if frame is None:
            if self._decoded == 0:
                raise VideoError(f"{self.spec} holds no decodable video frame; pass a working video file")
            return None
        t = self._offset + (float(frame.time) if frame.time is not None else self._index / float(self.fps))
        self._decoded += 1
        self._index += 1
        self._last_time = t
        return frame.to_ndarray(format="rgb24"), t

    def frames(self) -> Iterator[tuple[np.ndarray, float]]:
        """(RGB frame, seconds) until the end of the input; VideoError as `read`."""
        while (item := self.read()) is not None:
            yield item

    def close(self) -> None:
        """Close the input. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """H.264 (yuv420p) MP4 writer at a fixed frame rate, optionally remuxing an audio stream.

    Args:
        path: output file.
        fps: frame rate.
        audio_from: a reader whose audio stream is copied into the output (no re-encoding).
    """

    def __init__(self, path: str | Path, fps: Fraction | float, *, audio_from: VideoReader | None = None,
                 crf: int = 18, preset: str = "veryfast") -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        try:
            self.container = av.open(str(self.path), mode="w")
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoError(f"cannot write {self.path} ({getattr(e, 'strerror', None) or e}); "
                             "choose a writable path ending in .mp4") from e
        self.stream: av.VideoStream | None = None
        self.crf, self.preset = crf, preset
        self.frames_written = 0
        self._last_pts = -1
        self._closed = False
        self._failed = False
        self._audio_in = audio_from
        self._audio_out = (
            self.container.add_stream_from_template(audio_from.audio) if audio_from and audio_from.audio else None
        )

    def _open_stream(self, width: int, height: int) -> av.VideoStream:
        stream = self.container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        return stream

    def write(self, image: np.ndarray, pts: int | None = None) -> None:
        """Append one RGB uint8 frame; every frame must have the size of the first (even sides).

        `pts` is the frame's time in frames of `fps` (default: the next one); a live recording
        passes capture times, so frames dropped live leave gaps instead of speeding the video up.
        """
        h, w = image.shape[:2]
        if self.stream is None:
            if h % 2 or w % 2:
                raise VideoError(f"frame size {w}x{h} is odd; H.264 (yuv420p) needs even sides")
            self.stream = self._open_stream(w, h)
        elif (w, h) != (self.stream.width, self.stream.height):
            raise VideoError(f"frame size {w}x{h} != {self.stream.width}x{self.stream.height} of the first frame")
        pts = self._last_pts + 1 if pts is None else max(pts, self._last_pts + 1)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = pts
        frame.time_base = 1 / self.fps
        self._mux(self.stream.encode(frame))
        self._last_pts = pts
        self.frames_written += 1

    def _mux(self, packets) -> None:
        if self._failed:
            raise VideoError(f"{self.path}: an earlier write failed; the file holds the frames before it")
        try:
            for packet in packets:
                self.container.mux(packet)
        except BaseException:
            # PyAV crashes the process (SIGSEGV) when muxing again after a failed write
            # (e.g. a full disk), so a failed file takes no more packets, not even the flush
            self._failed = True
            raise

    def _copy_audio(self) -> None:
        reader, out = self._audio_in, self._audio_out
        if reader is None or out is None:
            return
        limit = self.frames_written / self.fps  # audio no longer than the video written
        with av.open(str(reader.path)) as src:
            audio = src.streams.audio[0]
            for packet in src.demux(audio):
                if packet.dts is None:
                    continue
                if packet.pts is not None and packet.time_base and packet.pts * packet.time_base > limit:
                    break
                packet.stream = out
                self._mux([packet])

    def close(self) -> None:
        """Flush the encoder and close the file. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.stream is not None and not self._failed:
                self._mux(self.stream.encode(None))
                self._copy_audio()
        finally:
            self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
