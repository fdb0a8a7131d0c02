"""The live path's contract with the animator: the real `Animator` and the test fakes have every
member `LiveAnimator` declares (the real one built on a stub engine, not the networks)."""

from __future__ import annotations

import inspect

import numpy as np
import torch
from livefakes import FakeAnimator

from lp_live.engine import EngineBase, SourceState
from lp_live.face import Face
from lp_live.session.animator import Animator
from lp_live.stream import LiveAnimator
from lp_live.stream.contract import contract_members

MEMBERS = {"modes", "mode", "paste_back", "mirror", "stitching", "source_count", "source_index", "warnings",
           "weights_kind", "device", "set_mode", "reanchor", "select_source", "set_paste_back", "set_mirror",
           "set_stitching", "compiles", "submit", "finish", "process", "face_box", "background_status",
           "background_ready", "adopt_background"}
METHODS = {n for n in MEMBERS if inspect.isfunction(vars(LiveAnimator)[n])}


class StubEngine(EngineBase):
    """No network: prepares an empty source state (only `Animator.__init__` runs here)."""

    name = "stub"

    def __init__(self) -> None:
        super().__init__(None, "cpu", input_size=128)

    def prepare_source(self, image, *, ratios=None) -> SourceState:
        return SourceState(feature_3d=torch.zeros(1), motion=None, x_s=torch.zeros(1))


class StubDetector:
    """Finds the same face in every picture."""

    def detect(self, image_rgb: np.ndarray) -> Face:
        return Face(box=np.array([96.0, 96.0, 160.0, 160.0]), score=1.0)

    track = detect


def stub_animator() -> Animator:
    return Animator(np.full((256, 256, 3), 128, np.uint8), lambda mode: StubEngine(), StubDetector(), mode="stub",
                    modes=("stub",), paste_back=False, input_size=128)


def test_the_contract_lists_what_the_live_path_uses():
    assert set(contract_members()) == MEMBERS
    assert sorted(METHODS) == ["adopt_background", "background_ready", "background_status", "compiles",
                               "face_box", "finish", "process", "reanchor", "select_source", "set_mirror",
                               "set_mode", "set_paste_back", "set_stitching", "submit"]


def test_the_real_animator_class_has_every_method_and_an_instance_every_member():
    missing = [n for n in METHODS | {"stitching", "source_count"} if not callable(getattr(Animator, n, None))
               and not isinstance(getattr(Animator, n, None), property)]
    assert not missing, f"Animator lacks {missing}"
    animator = stub_animator()
    assert isinstance(animator, LiveAnimator)
    assert [n for n in MEMBERS if not hasattr(animator, n)] == []
    assert animator.compiles("stub") is False and animator.source_count == 1 and animator.warnings == ()
    options = animator.options
    animator.set_stitching(not animator.stitching)
    assert animator.stitching is not options.stitching and animator.options is not options  # replaced, not mutated
    animator.set_paste_back(True)
    assert animator.paste_back is True


def test_the_fakes_have_every_member():
    fake = FakeAnimator(compiled=("optimized",))
    assert isinstance(fake, LiveAnimator) and [n for n in MEMBERS if not hasattr(fake, n)] == []
    assert [n for n in METHODS if not callable(getattr(FakeAnimator, n, None))] == []
    assert fake.compiles("optimized") and not fake.compiles("baseline")
    result = fake.finish(fake.submit(np.zeros((512, 512, 3), np.uint8), 0.0))
    assert result.image.shape == (256, 256, 3) and result.mode == "optimized"
