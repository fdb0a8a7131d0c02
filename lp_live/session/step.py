"""The per-frame path of N driving streams on one engine: one motion extraction and one engine call.

    jobs = launch(engine, mode, [(stream, driving), ...])   # device part, inside the engine's thread
    images = [finish(job) for job in jobs]                  # host part: paste-back, in launch order

The desktop app launches one stream per call (and finishes it while it prepares the next
frame); the server launches the newest frame of every session as one mixed-source batch.

A frame without a face holds the stream's last motion. When nothing that the image depends on
has changed since the stream's last animated frame (`DrivingStream.key`: engine, photo,
options, paste-back), the engine is not run again and the last image is shown; when something
has (a hotkey, a photo switch), the engine runs on the held motion so the change shows at once.
Before any face has been seen the stream shows its still photo.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..engine import Engine, PendingImage, Ratios
from ..motion.kinematics import Motion
from .driving import DrivingInput, DrivingStream
from .photo import SourcePhoto, ratios_to


class Outcome(enum.Enum):
    ANIMATED = "animated"  # the engine ran: `Job.image` gives the generated frame
    HELD = "held"  # no face, nothing changed: the stream's last image again
    STILL = "still"  # no face seen yet: the un-animated photo


@dataclass
class Job:
    """One stream's frame between `launch` and `finish`."""

    stream: DrivingStream
    photo: SourcePhoto  # as when launched
    paste_back: bool  # as when launched
    face_found: bool
    outcome: Outcome
    image: PendingImage | None = None

    def ready(self) -> bool:
        """True when `finish` would not wait for the device."""
        return self.image is None or self.image.ready()


def launch(engine: Engine, mode: str, frames: Sequence[tuple[DrivingStream, DrivingInput]]) -> list[Job]:
    """Start the device part of one frame per stream on `engine` (the engine of `mode`).

    Motion is extracted once for every frame with a face, each stream's filter smooths its own
    row, and the frames to animate go to the engine as one batch (one `submit` for a batch of
    one, which is asynchronous where the engine is). Streams must be distinct.
    """
    with torch.no_grad(), engine.launching():
        rows = _motion_rows(engine, frames)
        jobs: list[Job] = []
        todo: list[tuple[Job, DrivingStream, DrivingInput, Motion]] = []
        for i, (stream, driving) in enumerate(frames):
            job = Job(stream, stream.photo, stream.paste_back, driving.face_found, Outcome.ANIMATED)
            jobs.append(job)
            key = stream.key(mode)
            if i in rows:
                motion = stream.smooth(rows[i], driving.timestamp)
            elif stream.last_motion is None:
                job.outcome = Outcome.STILL
                continue
            elif key == stream.last_key and stream.last_output is not None:
                job.outcome = Outcome.HELD
                continue
            else:
                motion = stream.last_motion
            stream.last_key = key
            todo.append((job, stream, driving, motion))
        if todo:
            _animate(engine, mode, todo)
    return jobs


def _motion_rows(engine: Engine, frames: Sequence[tuple[DrivingStream, DrivingInput]]) -> dict[int, Motion]:
    """Frame index -> its motion (a batch of one), for the frames with a face."""
    with_face = [i for i, (_, driving) in enumerate(frames) if driving.crop is not None]
    if len(with_face) == 1:
        i = with_face[0]
        return {i: engine.extract_motion(frames[i][1].crop)}
    if not with_face:
        return {}
    motion = engine.extract_motion(np.stack([frames[i][1].crop for i in with_face]))
    return {i: motion.row(j) for j, i in enumerate(with_face)}


def _animate(engine: Engine, mode: str, todo: list[tuple[Job, DrivingStream, DrivingInput, Motion]]) -> None:
    states = [stream.source_state(engine, mode) for _, stream, _, _ in todo]
    ratios = _batch_ratios([driving.ratios for _, _, driving, _ in todo], engine.device)
    if len(todo) == 1:
        job, stream, _, motion = todo[0]
        job.image = engine.submit(states[0], motion, anchor=stream.anchor, options=stream.options, ratios=ratios)
        return
    images = engine.animate_batch(states, Motion.cat([motion for *_, motion in todo]),
                                  anchors=[stream.anchor for _, stream, _, _ in todo],
                                  options=[stream.options for _, stream, _, _ in todo], ratios=ratios)
    for (job, *_), image in zip(todo, images):
        job.image = PendingImage(image)


def _batch_ratios(ratios: list[Ratios | None], device: torch.device) -> Ratios | None:
    """One row per frame on `device`; None unless every frame has them (retargeting needs all rows)."""
    if any(r is None for r in ratios):
        return None
    if len(ratios) == 1:
        return ratios_to(ratios[0], device)
    return ratios_to(Ratios(eye=torch.cat([r.eye for r in ratios]), lip=torch.cat([r.lip for r in ratios])), device)


def finish(job: Job) -> np.ndarray:
    """The frame of a launched job (waits for the device): pasted back where asked, RGB uint8.
    Finish a stream's jobs in launch order: a held frame shows the image finished before it."""
    stream = job.stream
    if job.outcome is Outcome.STILL:
        return job.photo.still(job.paste_back)
    if job.outcome is Outcome.HELD:
        last = stream.last_output
        if last is not None and last.shape[:2] == job.photo.output_size(job.paste_back)[::-1]:
            return last
        return job.photo.still(job.paste_back)
    generated = job.image.result()
    image = job.photo.paster(generated) if job.paste_back else generated
    stream.last_output = image
    return image
