"""Offline render: a driving video animates the photo, every frame in order, into an H.264 file."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..core import signals
from ..core.progress import TICK_S, Progress, first_frame_step
from ..media.video import VideoReader, VideoWriter
from ..session.animator import Animator

log = logging.getLogger(__name__)


@dataclass
class RenderSummary:
    frames: int
    frames_without_face: int
    seconds: float
    interrupted: bool
    output: Path
    size: tuple[int, int]  # (width, height)
    fps: float
    first_frame_s: float | None = None  # from `t_start` to the first animated frame written
    frames_missing: int = 0  # frames a truncated or damaged driving file lacks (`VideoReader.frames_missing`)
    frames_by_mode: dict[str, int] = field(default_factory=dict)  # frames each engine rendered


def fit_size(image: np.ndarray, size: int | None) -> np.ndarray:
    """Scale so that the longer side is `size` (even sides); None keeps the image."""
    if size is None:
        return image
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2)
    if (new_w, new_h) == (w, h):
        return image
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (new_w, new_h), interpolation=interp)


def _background(animator: Animator, bar: tqdm, said: float) -> float:
    """Between two frames: adopt an engine built in the background once it is ready, else say how
    long it has been compiling (progress bar; log every TICK_S). Returns when it last logged."""
    if animator.background_ready():
        mode = animator.adopt_background()
        bar.set_postfix_str(f"{animator.mode} engine", refresh=False)
        if mode is not None:
            log.info("switched to the %s engine (built in the background)", mode)
        return said
    status = animator.background_status()
    if status is None:
        return said
    bar.set_postfix_str(status, refresh=False)
    if time.perf_counter() - said >= TICK_S:
        log.info("%s (rendering with the %s engine meanwhile)", status, animator.mode)
        return time.perf_counter()
    return said


def side_by_side(driving: np.ndarray, output: np.ndarray) -> np.ndarray:
    """driving | output, the driving frame scaled to the output's height (even width)."""
    h = output.shape[0]
    w = max(2, round(driving.shape[1] * h / driving.shape[0] / 2) * 2)
    return np.concatenate([cv2.resize(driving, (w, h), interpolation=cv2.INTER_AREA), output], axis=1)


def render_video(
    animator: Animator,
    driving: str | Path,
    output: str | Path,
    *,
    max_frames: int | None = None,
    size: int | None = None,
    with_driving: bool = False,
    progress: bool = True,
    steps: Progress | None = None,
    t_start: float | None = None,
) -> RenderSummary:
    """Render `driving` through `animator` into `output`, at the driving video's frame rate.

    The first frame (which builds and may compile the engine) is a `steps` step, and "first
    animated frame after N s" is logged, counted from `t_start` (perf_counter; default: now).
    While an engine is built in the background (`Animator.start_background`) the progress bar
    and the log say "optimized engine compiling... N s", and the render switches to it between
    two frames once it is ready: every frame is rendered, the first ones by the baseline engine.

    Ctrl-C (and SIGTERM under the CLI) stops the render and still leaves a playable file with
    the frames done (`interrupted` is then True); so does a killed process, up to about its
    last second (`VideoWriter`). The driving video's audio is kept.
    """
    t0 = time.perf_counter()
    t_start = t0 if t_start is None else t_start
    steps = steps or Progress()
    first_frame_s = None
    interrupted = False
    by_mode: dict[str, int] = {}
    said = time.perf_counter()  # when the background build was last reported in the log
    with VideoReader(driving) as reader, VideoWriter(output, reader.fps, audio_from=reader) as writer:
        total = reader.frame_count or None
        if max_frames is not None:
            total = min(total or max_frames, max_frames)
        bar = tqdm(total=total, unit="frame", desc="render", disable=not progress, leave=False)
        try:
            for index, (frame, t) in enumerate(reader.frames()):
                if max_frames is not None and index >= max_frames:
                    break
                said = _background(animator, bar, said)
                if first_frame_s is None:
                    with steps.step(first_frame_step(animator.mode, animator.compiles(animator.mode))):
                        result = animator.process(frame, timestamp=t)
                    first_frame_s = time.perf_counter() - t_start
                    log.info("first animated frame after %.1f s", first_frame_s)
                else:
                    result = animator.process(frame, timestamp=t)
                by_mode[result.mode] = by_mode.get(result.mode, 0) + 1
                image = result.image
                if with_driving:
                    image = side_by_side(frame, image)
                writer.write(fit_size(image, size))
                bar.update()
                log.debug("frame %d%s rendered", index + 1, f"/{total}" if total else "")
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM where the CLI handles it (`lp_live.core.signals`)
            interrupted = True
            log.warning("interrupted%s: keeping the %d frames rendered so far", f" ({e})" if str(e) else "",
                        writer.frames_written)
        finally:
            bar.close()
            with signals.deferred():  # a signal now is recorded, not raised into the flush
                writer.close()
        frames = writer.frames_written
        stream = writer.stream
        out_size = (stream.width, stream.height) if stream is not None else (0, 0)
    return RenderSummary(
        frames=frames,
        frames_without_face=animator.frames_without_face,
        seconds=time.perf_counter() - t0,
        interrupted=interrupted,
        output=Path(output),
        size=out_size,
        fps=float(reader.fps),
        first_frame_s=first_frame_s,
        frames_missing=reader.frames_missing,
        frames_by_mode=by_mode,
    )
