"""Video files through PyAV: a reader that yields every frame in order, and an H.264 writer.

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

from .errors import UserError

log = logging.getLogger(__name__)


class VideoError(UserError):
    """A video file that cannot be read or written; the message says what to do."""


class VideoReader:
    """Frames of a video file as RGB uint8 arrays, in order, with their timestamps in seconds."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"driving video {self.path} not found; pass an existing video file with --camera")
        if self.path.stat().st_size == 0:
            raise VideoError(f"driving video {self.path} is empty (0 bytes); pass a real video file")
        try:
            self.container = av.open(str(self.path))
        except av.FFmpegError as e:
            raise VideoError(f"{self.path} is not a video FFmpeg can read ({e.strerror or e}); "
                             "pass an MP4/MKV/MOV/WebM file") from e
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"{self.path} has no video stream; pass a video file")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps: Fraction = Fraction(rate) if rate else Fraction(25)
        self.frame_count: int = self.stream.frames  # 0 when the container does not say
        self.width, self.height = self.stream.codec_context.width, self.stream.codec_context.height
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None

    def frames(self) -> Iterator[tuple[np.ndarray, float]]:
        """(RGB frame, seconds) for every decodable frame; VideoError if the file is corrupt."""
        count = 0
        try:
            for frame in self.container.decode(self.stream):
                t = float(frame.time) if frame.time is not None else count / float(self.fps)
                count += 1
                yield frame.to_ndarray(format="rgb24"), t
        except av.FFmpegError as e:
            if count == 0:
                raise VideoError(f"{self.path} is corrupt or not a video: no frame could be decoded "
                                 f"({e.strerror or e}); pass a working video file") from e
            log.warning("%s: decoding stopped after %d frames (%s)", self.path, count, e)
        if count == 0:
            raise VideoError(f"{self.path} holds no decodable video frame; pass a working video file")

    def close(self) -> None:
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
