"""Batches: B driving frames for one source, and one source per slot, against single frames.

Real networks with synthetic weights at input 128. The keypoint math is checked for every
option combination (cheap); whole frames once per engine (W and G are the cost).

Why not bit-exact: a batch of B runs the same ops as B single frames, but CPU GEMM and conv
kernels pick their blocking by the row count, so results differ in the last float32 bit
(the stitching MLP: 1.2e-7 between 3 rows and 1 row, measured here; M and W alike). What
the batch semantics fix exactly (anchors, expression scale) is compared with torch.equal;
keypoints within 1e-6; float32 frames within one uint8 level (truncation flips).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from lp_live.engine import Anchor, AnimateOptions, BaselineEngine, Ratios
from lp_live.engine.optimized import OptimizedEngine
from lp_live.engine.precision import cpu_supports_bf16

SIZE = 128
OPTIONS = {
    "default": {},
    "plain": dict(stitching=False, expression_friendly=False),
    "retargeting": dict(eye_retargeting=True, lip_retargeting=True),
    "retargeting_unstitched": dict(eye_retargeting=True, lip_retargeting=True, stitching=False),
    "eye_only": dict(eye_retargeting=True),
    "lip_normalised": dict(normalize_lip=True, multiplier=0.7),
}
# made-up landmark ratios: the source's (1 row; lip open enough for lip normalisation) and the
# three driving frames'
SOURCE_RATIOS = Ratios(eye=torch.tensor([[0.30, 0.32]]), lip=torch.tensor([[0.05]]))
DRIVING_RATIOS = Ratios(eye=torch.tensor([[0.10, 0.12], [0.35, 0.30], [0.25, 0.20]]),
                        lip=torch.tensor([[0.00], [0.20], [0.10]]))


def image(seed: int) -> np.ndarray:
    coarse = np.random.default_rng(seed).integers(0, 256, (SIZE // 8, SIZE // 8, 3)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    return {"A": image(1), "B": image(2), "frames": np.stack([image(10 + i) for i in range(3)])}


@pytest.fixture(scope="module")
def baseline(synthetic_models) -> BaselineEngine:
    return BaselineEngine(synthetic_models, "cpu", input_size=SIZE)


@pytest.fixture(scope="module")
def prepared(baseline, images):
    """Source states of A and B (with ratios) and the motion of the three driving frames."""
    with torch.no_grad():
        return {"A": baseline.prepare_source(images["A"], ratios=SOURCE_RATIOS),
                "B": baseline.prepare_source(images["B"], ratios=SOURCE_RATIOS),
                "motion": baseline.extract_motion(images["frames"])}




def rows(ratios: Ratios, indices: list[int]) -> Ratios:
    return Ratios(eye=ratios.eye[indices], lip=ratios.lip[indices])


def assert_same_anchor(a: Anchor, b: Anchor) -> None:
    for f in dataclasses.fields(a.motion):
        assert torch.equal(getattr(a.motion, f.name), getattr(b.motion, f.name)), f.name
    assert a.motion.kp.shape[0] == 1
    assert torch.equal(a.x, b.x) and a.expression_scale == b.expression_scale


# ---------------------------------------------------------------------------------------------
# keypoints: every option combination
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(OPTIONS))
def test_one_source_batch_keypoints_equal_single_frames(baseline, prepared, name):
    motion, source, options = prepared["motion"], prepared["A"], AnimateOptions(**OPTIONS[name])
    single, batched = Anchor(), Anchor()
    with torch.no_grad():
        expected = torch.cat([baseline.driving_keypoints(source, motion.map(lambda t, i=i: t[i : i + 1]),
                                                         anchors=single, options=options,
                                                         ratios=rows(DRIVING_RATIOS, [i])) for i in range(3)])
        got = baseline.driving_keypoints(source, motion, anchors=batched, options=options, ratios=DRIVING_RATIOS)
    assert got.shape == (3, 21, 3)
    assert_same_anchor(batched, single)  # the batch's first frame, as the first single call
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert (got[1] - got[2]).abs().max() > 1e-4  # the frames really differ (well beyond the tolerance)


def test_mixed_batch_keypoints_equal_per_source_calls(baseline, prepared):
    """Slots [A, B, A], each source with its own options, anchor and lip delta."""
    motion, a, b = prepared["motion"], prepared["A"], prepared["B"]
    a_opts, b_opts = AnimateOptions(**OPTIONS["lip_normalised"]), AnimateOptions(**OPTIONS["retargeting"])
    a1, b1, a3, b3 = Anchor(), Anchor(), Anchor(), Anchor()
    with torch.no_grad():
        expected = torch.cat([baseline.driving_keypoints(s, motion.map(lambda t, i=i: t[i : i + 1]), anchors=anchor,
                                                         options=opts, ratios=rows(DRIVING_RATIOS, [i]))
                              for i, (s, anchor, opts) in enumerate([(a, a1, a_opts), (b, b1, b_opts),
                                                                     (a, a1, a_opts)])])
        got = baseline.driving_keypoints([a, b, a], motion, anchors=[a3, b3, a3], options=[a_opts, b_opts, a_opts],
                                         ratios=DRIVING_RATIOS)
    assert_same_anchor(a3, a1)  # A: frame 0; B: frame 1
    assert_same_anchor(b3, b1)
    assert torch.equal(b3.motion.kp, motion.kp[1:2])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_a_state_per_slot_must_match_the_batch(baseline, prepared):
    with pytest.raises(ValueError, match="2 source states for a batch of 3"):
        baseline.driving_keypoints([prepared["A"], prepared["B"]], prepared["motion"], anchors=Anchor(),
                                   options=AnimateOptions())


def test_the_callers_anchor_is_filled_once_and_reset(baseline, prepared):
    """The engine fills an empty anchor from the first frame and keeps it; after `reset()` the
    next frame is the neutral pose (the source's own keypoints, stitched). The source is immutable."""
    motion, source, options = prepared["motion"], prepared["A"], AnimateOptions()
    anchor = Anchor()
    with torch.no_grad():
        neutral = baseline.driving_keypoints(source, motion.map(lambda t: t[:1]), anchors=anchor, options=options)
        filled = anchor.motion
        moved = baseline.driving_keypoints(source, motion.map(lambda t: t[1:2]), anchors=anchor, options=options)
        assert anchor.motion is filled and torch.equal(filled.kp, motion.kp[:1])
        anchor.reset()
        again = baseline.driving_keypoints(source, motion.map(lambda t: t[1:2]), anchors=anchor, options=options)
    assert torch.equal(anchor.motion.kp, motion.kp[1:2])
    assert (moved - neutral).abs().max() > 1e-4
    torch.testing.assert_close(again, neutral, rtol=0, atol=1e-6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        source.lip_delta = None


# ---------------------------------------------------------------------------------------------
# whole frames: baseline (float32) and optimized (eager; bf16 where native, else float32)
# ---------------------------------------------------------------------------------------------
def frames_three_ways(engine, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(singles A f0, B f1, A f2 in order; the mixed batch [A, B, A]; A alone with [f0, f2])."""
    frames = images["frames"]
    with torch.no_grad():
        a, b = engine.prepare_source(images["A"]), engine.prepare_source(images["B"])
        opts = AnimateOptions()
        anchor_a, anchor_b = Anchor(), Anchor()
        singles = np.stack([engine.animate(a, frames[0], anchor=anchor_a, options=opts),
                            engine.animate(b, frames[1], anchor=anchor_b, options=opts),
                            engine.animate(a, frames[2], anchor=anchor_a, options=opts)])
        anchor_a, anchor_b = Anchor(), Anchor()
        mixed = engine.animate_batch([a, b, a], frames, anchors=[anchor_a, anchor_b, anchor_a], options=opts)
        one_source = engine.animate_batch(a, frames[[0, 2]], anchors=Anchor(), options=opts)
    assert mixed.shape == (3, 2 * SIZE, 2 * SIZE, 3) and one_source.shape == (2, 2 * SIZE, 2 * SIZE, 3)
    return singles, mixed, one_source


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_baseline_batches_equal_single_frames(baseline, images):
    singles, mixed, one_source = frames_three_ways(baseline, images)
    for got, expected in ((mixed, singles), (one_source, singles[[0, 2]])):
        diff = np.abs(got.astype(int) - expected.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    assert rel_l2(singles[0], singles[1]) > 0.1  # A and B really differ


def test_optimized_batches_equal_single_frames(synthetic_models, images):
    """bf16 W and G where this CPU has native bf16, eager: the batched convs round differently from
    the single ones, so the frames agree within bf16's envelope (G alone: rel L2 1e-2 against
    float32). Where bf16 is emulated (hundreds of times slower; `auto` picks float32 there) in float32."""
    precision = "bf16" if cpu_supports_bf16() else "fp32"
    engine = OptimizedEngine(synthetic_models, "cpu", input_size=SIZE, precision=precision, compile=False)
    singles, mixed, one_source = frames_three_ways(engine, images)
    for got, expected in ((mixed, singles), (one_source, singles[[0, 2]])):
        for g, e in zip(got, expected):
            assert rel_l2(g, e) < 2e-2, rel_l2(g, e)
            assert np.percentile(np.abs(g.astype(int) - e.astype(int)), 99) <= 8
    assert rel_l2(singles[0], singles[1]) > 0.1
