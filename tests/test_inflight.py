"""Two frames in flight: the host part of one frame overlaps the device part of the other.

The timing tests drive the real `Animator`, `InFlight` and live threads with test parts of
known cost: a face tracker that sleeps (the host part) and an engine that sleeps (the device
part, on the worker thread). The last test runs the real networks (synthetic weights, 128 px,
baseline engine) on the driving video and checks that two frames in flight give the same frames
as one.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import torch
from livefakes import FakeAnimator, RecordingSink, stream_config

from lp_live.core.config import Config, ConfigError
from lp_live.engine import EngineBase, SourceState
from lp_live.face import Face
from lp_live.session import Animator
from lp_live.stream import CaptureError, Controls, run_live
from lp_live.stream.capture import FrameSource
from lp_live.stream.inflight import InFlight

HOST_S = 0.04  # the host part of a test frame (face tracking)
DEVICE_S = 0.04  # its device part
FRAME = 256  # side of the test driving frames
FACE = Face(box=np.array([96.0, 96.0, 160.0, 160.0]), score=1.0)  # the driving crop stays inside the frame


def frame_value(seq: int) -> int:
    """The grey level of test frame `seq`: the output of the test engine tells which frame it saw."""
    return 10 + seq % 200


class SleepyTracker:
    """Finds the same face everywhere; tracking a driving frame takes `host_s`."""

    def __init__(self, host_s: float = HOST_S) -> None:
        self.host_s = host_s
        self.threads: set[str] = set()

    def detect(self, image_rgb: np.ndarray) -> Face:
        return FACE

    def track(self, image_rgb: np.ndarray) -> Face:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.host_s)
        return FACE

    def reset(self) -> None:
        pass


class SleepyEngine(EngineBase):
    """No network: the "motion" is the driving crop's mean, and `animate` sleeps `device_s`, then
    returns a (2S, 2S, 3) image of that grey level. `running` counts frames inside `animate`."""

    name = "sleepy"

    def __init__(self, device_s: float = DEVICE_S) -> None:
        super().__init__(None, "cpu", input_size=128)
        self.device_s = device_s
        self.threads: set[str] = set()
        self.running = 0

    def prepare_source(self, image, *, ratios=None) -> SourceState:
        return SourceState(feature_3d=torch.zeros(1), motion=None, x_s=torch.zeros(1))

    def extract_motion(self, image: np.ndarray) -> float:
        return float(image.mean())

    def animate(self, source, driving, *, anchor, options, ratios=None) -> np.ndarray:
        self.running += 1
        self.threads.add(threading.current_thread().name)
        time.sleep(self.device_s)
        self.running -= 1
        return np.full((2 * self.input_size, 2 * self.input_size, 3), round(driving), np.uint8)


class CheckedAnimator(Animator):
    """Records whether a device part was running whenever the mode changes or re-anchors."""

    def __init__(self, *args, **kwargs) -> None:
        self.busy_at_change: list[bool] = []
        super().__init__(*args, **kwargs)

    def _busy(self) -> bool:
        return any(e.running for e in self.pool.built().values())

    def set_mode(self, mode: str) -> None:
        self.busy_at_change.append(self._busy())
        super().set_mode(mode)

    def reanchor(self) -> None:
        self.busy_at_change.append(self._busy())
        super().reanchor()


def sleepy_animator(modes: tuple[str, ...] = ("sleepy",), *, host_s: float = HOST_S,
                    device_s: float = DEVICE_S) -> CheckedAnimator:
    engines = {m: SleepyEngine(device_s) for m in modes}
    source = np.full((FRAME, FRAME, 3), 128, np.uint8)
    return CheckedAnimator(source, engines.__getitem__, SleepyTracker(host_s), mode=modes[0], modes=modes,
                           paste_back=False, input_size=128)


class FastCamera(FrameSource):
    """A 200 fps camera of grey frames (`frame_value`): always a new frame for the engine."""

    description, fps, is_file = "fast camera", 200.0, False

    def __init__(self) -> None:
        self.seq = 0

    def read(self):
        time.sleep(1 / self.fps)
        image = np.full((FRAME, FRAME, 3), frame_value(self.seq), np.uint8)
        self.seq += 1
        return image, None

    def close(self) -> None:
        pass


def test_in_flight_holds_at_most_depth_frames_and_finishes_in_order():
    flight = InFlight(sleepy_animator(host_s=0.0, device_s=0.01), depth=2)
    try:
        for seq in range(2):
            flight.submit(np.full((FRAME, FRAME, 3), frame_value(seq), np.uint8), float(seq), seq)
        assert flight.full and len(flight) == 2
        with pytest.raises(RuntimeError, match="already in flight"):
            flight.submit(np.zeros((FRAME, FRAME, 3), np.uint8), 2.0, 2)
        done = [flight.finish() for _ in range(2)]
        assert [tag for _, tag in done] == [0, 1]
        assert [int(r.image[0, 0, 0]) for r, _ in done] == [frame_value(0), frame_value(1)]
        assert not flight.ready() and len(flight) == 0
    finally:
        flight.close()
        flight.close()  # idempotent
    with pytest.raises(ValueError, match="must be 1 or 2"):
        InFlight(FakeAnimator(), depth=3)
    assert InFlight(FakeAnimator(), depth=2).depth == 2  # every animator has submit and finish


def test_in_flight_setting_is_checked_before_anything_starts():
    with pytest.raises(ConfigError, match="expected 1 or 2, got 3"):
        run_live(FakeAnimator(), FastCamera(), stream_config(in_flight=3), keyboard=False)


def _run(depth: int, frames: int):
    animator = sleepy_animator()
    sink = RecordingSink()
    got = []
    stats = run_live(animator, FastCamera(), stream_config(pace=False, in_flight=depth), sinks=[sink],
                     max_frames=frames, keyboard=False, on_frame=got.append)
    return stats, got, animator


def test_two_in_flight_overlap_host_and_device_in_order_with_bounded_latency():
    one, got1, anim1 = _run(1, 12)
    two, got2, anim2 = _run(2, 16)
    for stats, got in ((one, got1), (two, got2)):
        assert stats.stop_reason == "frame limit" and stats.frames["processed"] == len(got)
        assert stats.frames["dropped"]["capture"] > 0  # the camera outran the engine: stale frames dropped
        seqs = [f.seq for f in got]
        assert seqs == sorted(set(seqs))  # in capture order, each once
        assert [int(f.image[0, 0, 0]) for f in got] == [frame_value(s) for s in seqs]  # each its own frame
    assert (one.in_flight, two.in_flight) == (1, 2)
    # one at a time the device part runs in the inference thread, after the host part;
    # two in flight, it runs on the worker while the inference thread tracks the next frame
    assert anim1.detector.threads == anim2.detector.threads == {"lp-live-inference"}
    assert anim1.engine("sleepy").threads == {"lp-live-inference"}
    assert {t.rsplit("_", 1)[0] for t in anim2.engine("sleepy").threads} == {"lp-live-device"}
    # about host + device (80 ms) per frame against max(host, device) (40 ms)
    assert two.fps > 1.5 * one.fps
    assert two.inference_fps > 1.5 * one.inference_fps  # the busy time per frame shrank with it
    # latency: at most one frame waits behind the one on the device, so it stays near
    # host + device + one step, and does not grow
    step = HOST_S + DEVICE_S
    assert two.latency_ms["p95"] < 4 * step * 1e3
    latency = np.array(two.latency_series_ms["rec"])
    assert np.median(latency[-5:]) < np.median(latency[:5]) + step * 1e3


def test_hotkeys_finish_the_frames_in_flight_then_apply_from_the_next_frame():
    animator = sleepy_animator(("baseline", "optimized"), host_s=0.01, device_s=0.02)
    controls = Controls()
    presses = []

    def presser():
        for key in "brbr":
            time.sleep(0.25)
            presses.append(controls.press(key))

    frames = []
    threading.Thread(target=presser, daemon=True).start()
    run_live(animator, FastCamera(), stream_config(pace=False, in_flight=2), controls=controls, max_frames=80,
             keyboard=False, on_frame=frames.append)
    assert len(presses) == 4 and controls.mode_switches == 2
    switches = [t for t, key in zip(presses, "brbr") if key == "b"]
    for f in frames:
        n = sum(t < f.t_controls for t in switches)  # switches applied before this frame was submitted
        assert f.mode == ("baseline", "optimized")[n % 2]
    assert {f.mode for f in frames} == {"baseline", "optimized"}
    # no device part was running when the mode changed or the anchor was reset
    assert len(animator.busy_at_change) == 1 + 4 and not any(animator.busy_at_change)


class GatedVideo(FrameSource):
    """The first `frames` frames of a video, each read only once the Animator has taken the one
    before: no frame is dropped, so every run animates the same sequence."""

    description, fps, is_file = "gated video", 25.0, False

    def __init__(self, video: str, frames: int) -> None:
        capture = cv2.VideoCapture(video)  # OpenCV's FFmpeg: the GPU machine has no PyAV
        try:
            self.images = []
            for i in range(frames):
                ok, bgr = capture.read()
                if not ok:
                    raise CaptureError(f"{video}: frame {i} could not be decoded")
                self.images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            capture.release()
        self.taken = threading.Semaphore(0)
        self.read_count = 0

    def read(self):
        if self.read_count == len(self.images):
            return None
        if self.read_count and not self.taken.acquire(timeout=60):
            raise CaptureError("the previous frame was never taken")
        self.read_count += 1
        return self.images[self.read_count - 1], None

    def close(self) -> None:
        pass


def _gated_runs(config: Config, source_rgb: np.ndarray, models, video: str) -> dict[int, tuple[list, set[str]]]:
    """For depth 1 and 2: the frames of a live run over the first 3 frames of `video`, and the
    threads the engine's `submit` ran in. One Animator (the same engine, the same CUDA graphs)
    serves both runs, reset in between."""
    from lp_live.session import build_animator

    animator = build_animator(config, source_rgb, models=models)
    engine = animator.engine(config.engine.mode)
    submit, engine_submit = animator.submit, engine.submit
    runs = {}
    for depth in (1, 2):
        animator.detector.reset()  # forget the tracked face
        animator.reanchor()  # the first frame is the neutral pose again
        source, device_threads = GatedVideo(video, frames=3), set()

        def take(*args, source=source, **kwargs):
            source.taken.release()
            return submit(*args, **kwargs)

        def on_device(*args, threads=device_threads, **kwargs):
            threads.add(threading.current_thread().name.rsplit("_", 1)[0])
            return engine_submit(*args, **kwargs)

        animator.submit, engine.submit = take, on_device
        frames = []
        stats = run_live(animator, source, stream_config(pace=False, in_flight=depth), keyboard=False,
                         on_frame=frames.append)
        assert stats.stop_reason == "end of input" and stats.in_flight == depth
        assert [f.seq for f in frames] == [0, 1, 2] and stats.frames["dropped"]["capture"] == 0
        assert all(f.face_found for f in frames)
        runs[depth] = frames, device_threads
    return runs


def _real_config(device: str, mode: str) -> Config:
    config = Config()
    config.engine.weights = "synthetic"
    config.engine.input_size = 128
    config.engine.device = device
    config.engine.mode = mode
    config.engine.compile = False
    config.animation.smoothing = False  # the motion filter follows capture times, which differ between runs
    return config


def test_real_networks_give_the_same_frames_with_two_in_flight(assets, synthetic_models):
    from lp_live.session import read_image

    runs = _gated_runs(_real_config("cpu", "baseline"), read_image(assets / "s6.jpg"), synthetic_models,
                       str(assets / "d0.mp4"))
    # on the CPU the engine computes in `submit`: on the worker thread when two are in flight
    assert runs[1][1] == {"lp-live-inference"} and runs[2][1] == {"lp-live-device"}
    one, two = runs[1][0], runs[2][0]
    assert one[0].image.shape == (724, 724, 3)  # pasted back into the photo
    assert not np.array_equal(one[0].image, one[2].image)  # the driving motion shows
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.image, b.image)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_optimized_engine_queues_frames_and_gives_the_same_frames_with_two_in_flight(assets):
    """The asynchronous path: the engine's stream, CUDA graphs, a pinned buffer per frame in flight."""
    from lp_live.models import synthetic_liveportrait
    from lp_live.session import read_image

    runs = _gated_runs(_real_config("cuda", "optimized"), read_image(assets / "s6.jpg"),
                       synthetic_liveportrait("cuda"), str(assets / "d0.mp4"))
    # `submit` only queues the work: it runs in the inference thread, never on a worker
    assert runs[1][1] == runs[2][1] == {"lp-live-inference"}
    one, two = runs[1][0], runs[2][0]
    assert not np.array_equal(one[0].image, one[2].image)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.image, b.image)
