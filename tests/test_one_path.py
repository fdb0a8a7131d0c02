"""One per-frame path: the desktop animator and the server's scheduler give the same frames for
the same driving clip (real networks, synthetic weights, 128 px), including frames without a
face, hotkeys and uncropped driving videos; and the no-face rule they share."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lp_live.core.config import Config
from lp_live.media.video import VideoReader
from lp_live.session import (
    DEFAULT_SOURCE,
    DrivingStream,
    Outcome,
    build_animator,
    create_driving_detector,
    create_smoother,
    engine_factory,
    finish,
    launch,
    load_photo,
    read_image,
)

FRAMES = 6
NO_FACE_AT = 3  # a black frame: no face in it


def _config(crop_driving: bool) -> Config:
    config = Config()
    config.engine.weights = "synthetic"
    config.engine.input_size = 128
    config.engine.mode = "baseline"
    config.face.crop_driving = crop_driving
    return config  # smoothing on: both paths filter with the same frame times


def _clip(video: str) -> list[np.ndarray]:
    with VideoReader(video) as reader:
        frames = [reader.read()[0] for _ in range(FRAMES)]
    frames[NO_FACE_AT] = np.zeros_like(frames[NO_FACE_AT])
    return frames


def _desktop(config: Config, models, frames: list[np.ndarray]) -> list[np.ndarray]:
    animator = build_animator(config, read_image(DEFAULT_SOURCE), models=models)
    out = []
    for i, frame in enumerate(frames):
        if i == NO_FACE_AT + 1:
            animator.set_stitching(False)  # a hotkey while no face is seen
        out.append(animator.process(frame, timestamp=i / 25).image)
    return out


def _server(config: Config, models, frames: list[np.ndarray]) -> list[np.ndarray]:
    """The server's step, driven directly: one session, its frames at the same times."""
    pytest.importorskip("aiortc")
    import av

    from lp_live.server.scheduler import Job, Scheduler
    from lp_live.server.sessions import Driving, Session
    from lp_live.session import EnginePool

    photo = load_photo(read_image(DEFAULT_SOURCE), create_driving_detector(config, models),
                       input_size=config.engine.input_size, device=torch.device("cpu"), name="default")
    stream = DrivingStream(photo, create_driving_detector(config, models), input_size=config.engine.input_size,
                           options=config.animation.options(), paste_back=True, crop_driving=config.face.crop_driving,
                           smoother=create_smoother(config))
    session = Session("s", stream, "baseline")
    scheduler = Scheduler(EnginePool(engine_factory(config, models, torch.device("cpu")), ("baseline",)))
    out = []
    try:
        for i, frame in enumerate(frames):
            if i == NO_FACE_AT + 1:
                assert session.control({"stitching": False}, ("baseline",)) is None
            driving = Driving(av.VideoFrame.from_ndarray(frame, format="rgb24"), t_received=i / 25)
            (result,) = scheduler.step([Job(session, driving)])
            out.append(result.image)
    finally:
        scheduler.worker.shutdown()
        scheduler.host.shutdown()
    return out


@pytest.mark.parametrize("crop_driving", [True, False], ids=["cropped", "whole-frames"])
def test_desktop_and_server_give_the_same_frames(synthetic_models, video, crop_driving):
    config = _config(crop_driving)
    frames = _clip(video)
    desktop = _desktop(config, synthetic_models, frames)
    server = _server(config, synthetic_models, frames)
    assert len(desktop) == len(server) == FRAMES
    for i, (a, b) in enumerate(zip(desktop, server)):
        assert a.shape == b.shape, i
        np.testing.assert_array_equal(a, b, err_msg=f"frame {i}")
    assert not np.array_equal(desktop[0], desktop[2])  # the driving motion shows
    if crop_driving:
        # the black frame holds the last image; the hotkey after it re-animates the held motion
        np.testing.assert_array_equal(desktop[NO_FACE_AT], desktop[NO_FACE_AT - 1])


def test_no_face_holds_the_image_until_something_changes(synthetic_models, video):
    """No face: the last image again without running the engine; after a change (options, paste-back)
    the engine runs once on the held motion; before any face, the still photo."""
    config = _config(True)
    config.animation.smoothing = False
    models = synthetic_models
    engine = engine_factory(config, models, torch.device("cpu"))("baseline")
    photo = load_photo(read_image(DEFAULT_SOURCE), create_driving_detector(config, models), input_size=128,
                       device=torch.device("cpu"))
    stream = DrivingStream(photo, create_driving_detector(config, models), input_size=128)
    blank = np.zeros((256, 256, 3), np.uint8)
    calls = []
    real = engine.submit
    engine.submit = lambda *a, **kw: calls.append(1) or real(*a, **kw)

    def step(frame: np.ndarray, t: float):
        job = launch(engine, "baseline", [(stream, stream.prepare(frame, t))])[0]
        return job.outcome, finish(job)

    outcome, image = step(blank, 0.0)
    assert outcome is Outcome.STILL and np.array_equal(image, photo.image) and calls == []
    outcome, first = step(_clip(video)[0], 0.04)
    assert outcome is Outcome.ANIMATED and calls == [1]
    outcome, held = step(blank, 0.08)
    assert outcome is Outcome.HELD and held is first and calls == [1]
    stream.set_options(stitching=False)
    outcome, changed = step(blank, 0.12)
    assert outcome is Outcome.ANIMATED and calls == [1, 1] and changed.shape == first.shape
    stream.paste_back = False
    outcome, crop = step(blank, 0.16)
    assert outcome is Outcome.ANIMATED and crop.shape == (256, 256, 3)
    assert stream.frames_without_face == 4 and stream.frames == 5


class LandmarkDetector:
    """Haar faces with the kit's 203-point landmarks attached, as the landmark model would give them."""

    def __init__(self, source_lmk: np.ndarray, driving_lmk: np.ndarray) -> None:
        from lp_live.face import HaarFaceDetector

        self.haar, self.source_lmk, self.driving_lmk, self.seen = HaarFaceDetector(), source_lmk, driving_lmk, 0

    def detect(self, image_rgb: np.ndarray):
        face = self.haar.detect(image_rgb)
        return None if face is None else dataclasses.replace(face, landmarks203=self.source_lmk)

    def track(self, image_rgb: np.ndarray):
        face = self.haar.track(image_rgb)
        self.seen += 1
        lmk = self.driving_lmk[self.seen % len(self.driving_lmk)]
        return None if face is None else dataclasses.replace(face, landmarks203=lmk)

    def reset(self) -> None:
        self.haar.reset()


def test_the_server_retargets_eyes_and_lips_per_stream(kit, synthetic_models, video):
    """With landmarks, each session's own eye/lip ratios reach the batched engine call, and the
    frames change with retargeting on."""
    pytest.importorskip("aiortc")
    import av

    from lp_live.server.scheduler import Job, Scheduler
    from lp_live.server.sessions import Driving, Session
    from lp_live.session import EnginePool

    fx = kit[1].load_fixture("math")
    source_lmk, driving_lmk = np.asarray(fx["lmk.source"]), np.asarray(fx["lmk.driving"])
    frames = _clip(video)[:2]

    def run(retarget: bool) -> tuple[list[np.ndarray], list]:
        config = _config(True)
        config.animation.eye_retargeting = config.animation.lip_retargeting = retarget
        config.animation.smoothing = False
        detector = LandmarkDetector(source_lmk, driving_lmk)
        photo = load_photo(read_image(DEFAULT_SOURCE), detector, input_size=128, device=torch.device("cpu"))
        assert photo.ratios is not None
        scheduler = Scheduler(EnginePool(engine_factory(config, synthetic_models, torch.device("cpu")), ("baseline",)))
        engine, seen = scheduler.pool.get("baseline"), []
        real = engine.animate_batch
        engine.animate_batch = lambda *a, **kw: seen.append(kw.get("ratios")) or real(*a, **kw)
        sessions = [Session(str(i), DrivingStream(photo, LandmarkDetector(source_lmk, driving_lmk), input_size=128,
                                                  options=config.animation.options(), paste_back=False), "baseline")
                    for i in range(2)]
        try:
            images = []
            for i, frame in enumerate(frames):
                jobs = [Job(s, Driving(av.VideoFrame.from_ndarray(frame, format="rgb24"), i / 25)) for s in sessions]
                images += [r.image for r in scheduler.step(jobs)]
        finally:
            scheduler.worker.shutdown()
            scheduler.host.shutdown()
        return images, seen

    plain, _ = run(False)
    retargeted, seen = run(True)
    assert len(seen) == 2 and all(r is not None and r.eye.shape == (2, 2) and r.lip.shape == (2, 1) for r in seen)
    assert any(not np.array_equal(a, b) for a, b in zip(plain, retargeted))
