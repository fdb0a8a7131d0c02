"""Video through PyAV: one reader (files and network streams, in order, optionally looped) and an
H.264 writer.

The writer flushes its encoder and closes the container on any exit (error, Ctrl-C), so a
partial render is still a playable file holding the frames written so far.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import typing
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.frame import PictureType

from ..core.errors import UserError, one_line

log = logging.getLogger(__name__)

# muxers that write fragments (movflags): MP4, MOV and their kin; Matroska needs nothing
FRAGMENTED_FORMATS = frozenset({"mp4", "mov", "ipod", "ismv", "3gp", "3g2", "psp", "f4v"})


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
    `low_delay` (as opened), `stream` (the PyAV video stream), `frames_missing` (frames a
    truncated or damaged file lacks: what its header states minus what decoded; 0 otherwise).

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
        self.frames_missing = 0

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
        except av.ExitError as e:
            raise VideoError(f"{self.spec}: stream stopped answering") from e
        except (av.FFmpegError, OSError) as e:
            if self._decoded == 0:
                raise VideoError(f"{self.spec} is corrupt or not a video: no frame could be decoded "
                                 f"({one_line(e)}); pass a working video file") from e
            if self.is_url:
                raise VideoError(f"{self.spec}: cannot be decoded ({one_line(e)})") from e
            self._report_short(f"decoding stopped ({one_line(e)})", at_least=1)
            frame = None
        if frame is None:
            if self._decoded == 0:
                raise VideoError(f"{self.spec} holds no decodable video frame; pass a working video file")
            if self.is_file:
                self._report_short("the file ends early (truncated?)")
            if not self.loop or self._index == 0:
                return None
            return self._restart()
        t = self._offset + (float(frame.time) if frame.time is not None else self._index / float(self.fps))
        self._decoded += 1
        self._index += 1
        self._last_time = t
        return frame.to_ndarray(format="rgb24"), t

    def _restart(self) -> tuple[np.ndarray, float] | None:
        """The first frame of the next loop."""
        try:
            self.container.seek(0)
        except (av.FFmpegError, OSError) as e:
            log.warning("%s: cannot go back to the start to loop (%s); the input ends here", self.spec, one_line(e))
            return None
        self._offset = (self._last_time or 0.0) + 1.0 / float(self.fps)
        self._frames = self.container.decode(self.stream)
        self._index = 0
        return self.read()

    def _expected_frames(self) -> int | None:
        """Frames per loop the header states: the frame count, else the duration at `fps`."""
        if self.frame_count:
            return self.frame_count
        if self.stream.duration is not None and self.stream.time_base:
            return round(float(self.stream.duration * self.stream.time_base) * float(self.fps))
        if self.container.duration is not None:
            return round(self.container.duration / av.time_base * float(self.fps))
        return None

    def _report_short(self, why: str, at_least: int = 0) -> None:
        """One WARNING (the first time only) for a file with fewer frames than its header states."""
        if self.frames_missing:
            return
        expected = self._expected_frames()
        # the duration is only known to about a frame: a frame less is not a truncated file
        slack = 0 if self.frame_count else 1
        missing = expected - self._index if expected is not None and expected - self._index > slack else 0
        self.frames_missing = max(missing, at_least)
        if self.frames_missing:
            of = f" of {expected}" if expected is not None and missing else ""
            log.warning("%s: %s after %d%s frames: %d frames missing", self.spec, why,
                        self._index, of, self.frames_missing)

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
    """H.264 (yuv420p) writer at a fixed frame rate, optionally copying an audio stream.

    Recordings survive the process: MP4/MOV are written fragmented (a fragment per keyframe,
    a keyframe at least every second, the index up front) and Matroska as it is, each packet
    flushed to the file as it is muxed, so a killed process (SIGKILL, power loss) leaves a file
    playable up to about its last second. A failed write (full disk, failing device) raises a
    one-line `VideoError`; the file is cut back to the last complete fragment and keeps the
    frames before it. Audio is copied as the video advances, so a partial file has it too.

    Args:
        path: output file.
        fps: frame rate.
        audio_from: a reader whose audio stream is copied into the output (no re-encoding).
        crf, preset: x264 quality and speed.
        low_delay: x264 without lookahead or B-frames (tune zerolatency): each frame reaches the
            file as it is encoded; for live recordings, where frames come in real time.
    """

    def __init__(self, path: str | Path, fps: Fraction | float, *, audio_from: VideoReader | None = None,
                 crf: int = 18, preset: str = "veryfast", low_delay: bool = False) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self._file: _CheckedFile | None = None
        try:
            self._file = _CheckedFile(self.path)
            self.container = av.open(self._file, mode="w")  # the format from the file name
        except (av.FFmpegError, OSError, ValueError) as e:
            if self._file is not None:
                self._file.close()
            raise VideoError(f"cannot write {self.path} ({getattr(e, 'strerror', None) or e}); "
                             "choose a writable path ending in .mp4") from e
        self.container.options["flush_packets"] = "1"  # on disk as muxed, not when a 32 KB buffer fills
        if self.container.format.name in FRAGMENTED_FORMATS:
            self.container.options["movflags"] = "frag_keyframe+empty_moov+default_base_moof"
        self.stream: av.VideoStream | None = None
        self.crf, self.preset, self.low_delay = crf, preset, low_delay
        self.frames_written = 0
        self._last_pts = -1
        self._next_key = 0  # pts from which the next frame is a keyframe
        self._closed = False
        self._failed = False
        self._good_size = 0  # file size after the last successful mux: a fragment boundary
        self._audio = _AudioCopy(self.container, audio_from) if audio_from and audio_from.audio else None

    def _open_stream(self, width: int, height: int) -> av.VideoStream:
        stream = self.container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = max(1, round(self.fps))  # a keyframe, so a fragment, every second
        options = {"crf": str(self.crf), "preset": self.preset}
        if self.low_delay:
            options["tune"] = "zerolatency"
        stream.options = options
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
        if pts >= self._next_key:  # by time: a live recording's frames come slower than `fps`
            frame.pict_type = PictureType.I
            self._next_key = pts + max(1, round(self.fps))
        self._mux(self.stream.encode(frame))
        self._last_pts = pts
        self.frames_written += 1
        if self._audio is not None:
            self._mux(self._audio.packets(until=(pts + 1) / self.fps))

    def _mux(self, packets: Iterable[av.Packet]) -> None:
        if self._failed:
            raise VideoError(f"{self.path}: an earlier write failed; the file holds the frames before it")
        try:
            for packet in packets:
                self.container.mux(packet)
        except (OSError, av.FFmpegError) as e:
            # PyAV crashes the process (SIGSEGV) when muxing again after a failed write
            # (e.g. a full disk), so a failed file takes no more packets, not even the flush
            self._fail(e)
        self._good_size = self._file.size()

    def _fail(self, error: BaseException) -> typing.NoReturn:
        self._failed = True
        self._file.cut(self._good_size)
        error = self._file.error or error  # the OS's reason, not FFmpeg's echo of it
        raise VideoError(f"writing {self.path} failed after {self.frames_written} frames "
                         f"({getattr(error, 'strerror', None) or error}); the frames before stay playable; "
                         "free some space or choose another output") from error

    def close(self) -> None:
        """Flush the encoder and close the file (VideoError if that fails). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.stream is not None and not self._failed:
                self._mux(self.stream.encode(None))
                if self._audio is not None:  # audio no longer than the video written
                    self._mux(self._audio.packets(until=(self._last_pts + 1) / self.fps))
        finally:
            if self._audio is not None:
                self._audio.close()
            try:
                self.container.close()  # the last fragment, then the index
            except (OSError, av.FFmpegError) as e:
                if not self._failed:
                    self._fail(e)
            finally:
                failed_late = self._file.error is not None and not self._failed
                self._file.close()
            if failed_late:  # PyAV does not always pass on a failed write of the end
                self._fail(self._file.error)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _CheckedFile(io.FileIO):
    """The output file as FFmpeg writes it: every write whole or an error, and the first error kept.

    FFmpeg drops a short write (a file-size limit) and PyAV can lose the error of the last
    writes (the final fragment, the index); this file keeps it for `VideoWriter` to report."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "w")
        self.error: OSError | None = None
        self.cut_at: int | None = None

    def write(self, data) -> int:
        if self.cut_at is not None:  # after a failure nothing more lands behind the cut
            raise OSError(errno.EIO, f"{self.name}: not written after a failed write")
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += super().write(view[done:])
        except OSError as e:
            self.error = self.error or e
            raise
        return done

    def size(self) -> int:
        """The size on disk of a regular file (0 for a device: nothing to cut back)."""
        st = os.fstat(self.fileno())
        return st.st_size if stat.S_ISREG(st.st_mode) else 0

    def cut(self, size: int) -> None:
        """Cut a regular file back to `size` bytes (its last complete fragment): a failed write
        can leave half of one, which players stumble on."""
        self.cut_at = size
        try:
            if 0 < size < self.size():
                os.ftruncate(self.fileno(), size)
        except OSError as e:
            log.debug("cannot cut %s back to %d bytes: %s", self.name, size, e)


class _AudioCopy:
    """The audio packets of a reader's file, handed out in order up to a time (no re-encoding)."""

    def __init__(self, container: av.container.OutputContainer, reader: VideoReader) -> None:
        self.out = container.add_stream_from_template(reader.audio)
        self.source = av.open(str(reader.path))
        self._packets = self.source.demux(self.source.streams.audio[0])
        self._held: av.Packet | None = None  # read ahead, not yet due

    def packets(self, until: Fraction) -> Iterator[av.Packet]:
        """The packets that start before `until` seconds and were not handed out yet."""
        while True:
            packet = self._held or next(self._packets, None)
            self._held = None
            if packet is None:
                return
            if packet.dts is None:
                continue  # the demuxer's empty flush packet
            if packet.pts is not None and packet.time_base and packet.pts * packet.time_base >= until:
                self._held = packet
                return
            packet.stream = self.out
            yield packet

    def close(self) -> None:
        self.source.close()
