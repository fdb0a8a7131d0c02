"""Face detection, tracking, crop and paste-back on the shared assets (real images, no mocks).

PyAV is imported only by the test that decodes the driving video, so that a machine without it
(the GPU machine) still runs the rest, the CUDA paste-back test among them.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lp_live.face import (
    DRIVING_CROP,
    SOURCE_CROP,
    CropConfig,
    Face,
    FaceDetector,
    HaarFaceDetector,
    PasteBack,
    create_detector,
    crop_face,
    feather_mask,
)
from lp_live.face.detector import box_iou

REPO = Path(__file__).resolve().parents[1]


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def detector() -> HaarFaceDetector:
    return HaarFaceDetector()


@pytest.fixture(scope="module")
def s6(assets) -> np.ndarray:
    return _read_rgb(assets / "s6.jpg")


@pytest.fixture(scope="module")
def s6_face(detector, s6) -> Face:
    face = detector.detect(s6)
    assert face is not None
    return face


@pytest.fixture(scope="module")
def d0_frames(assets) -> list[np.ndarray]:
    pytest.importorskip("av")
    from lp_live.media.video import VideoReader

    with VideoReader(assets / "d0.mp4") as reader:
        return [reader.read()[0] for _ in range(20)]


def test_create_detector_defaults_to_haar(tmp_path):
    det = create_detector(tmp_path)  # no model files there
    assert isinstance(det, HaarFaceDetector)
    assert isinstance(det, FaceDetector)


def test_one_face_in_s6(detector, s6, s6_face):
    assert len(detector.detect_all(s6)) == 1
    # the statue's face is at about x 257..459, y 228..430 (checked by eye on a drawing of the box)
    assert box_iou(s6_face.box, np.array([257, 228, 459, 430])) > 0.7
    assert s6_face.landmarks is None and s6_face.score > 0


def test_astronaut_asset_found(detector):
    image = _read_rgb(REPO / "lp_live" / "data" / "astronaut.png")
    face = detector.detect(image)
    assert face is not None
    assert box_iou(face.box, np.array([177, 66, 272, 161])) > 0.6


@pytest.mark.parametrize(
    "image",
    [np.full((480, 640, 3), 128, np.uint8), np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)],
    ids=["gray", "noise"],
)
def test_no_face_gives_none(image):
    det = HaarFaceDetector()
    assert det.detect(image) is None
    assert det.track(image) is None


def test_source_crop_contains_face(s6, s6_face):
    crop = crop_face(s6, s6_face)
    assert crop.image.shape == (512, 512, 3) and crop.image.dtype == np.uint8
    assert crop.input.shape == (256, 256, 3) and crop.input.dtype == np.uint8
    np.testing.assert_array_equal(crop.input, cv2.resize(crop.image, (256, 256), interpolation=cv2.INTER_AREA))
    assert crop.M_o2c.shape == (2, 3) and crop.M_c2o.shape == (3, 3)
    np.testing.assert_allclose(crop.M_c2o @ np.vstack([crop.M_o2c, [0, 0, 1]]), np.eye(3), atol=1e-9)

    corners = np.array([[s6_face.box[0], s6_face.box[1], 1], [s6_face.box[2], s6_face.box[3], 1]]) @ crop.M_o2c.T
    assert (corners >= 0).all() and (corners <= 512).all(), corners
    side = corners[1] - corners[0]
    assert 0.25 * 512 < side.max() < 0.6 * 512, side
    # the face sits below the crop centre (vy_ratio moves the crop up to take in the forehead)
    assert corners[:, 1].mean() > 256


def test_driving_crop_is_tighter(s6, s6_face):
    source = crop_face(s6, s6_face, SOURCE_CROP)
    driving = crop_face(s6, s6_face, DRIVING_CROP, input_size=128)
    assert driving.input.shape == (128, 128, 3)
    assert driving.M_o2c[0, 0] == pytest.approx(source.M_o2c[0, 0] * 2.3 / 2.2)


def test_landmark_crop_cancels_roll():
    """With landmarks, the crop follows the official rotated box: eye->lip axis vertical, side = scale x box."""
    rng = np.random.default_rng(1)
    pts = rng.uniform(-60, 60, (106, 2))
    pts[[33, 35, 40, 39]] = [-30, -20]  # left eye
    pts[[87, 89, 94, 93]] = [30, -20]  # right eye
    pts[[52, 61]] = [0, 40]  # lip centre
    roll = math.radians(20)
    rot = np.array([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    landmarks = pts @ rot.T + [300, 250]
    face = Face(box=np.array([200.0, 150, 400, 350]), score=1.0, landmarks=landmarks)
    image = np.zeros((600, 600, 3), np.uint8)

    crop = crop_face(image, face, CropConfig(scale=2.0, vy_ratio=0.0))
    local = landmarks @ crop.M_o2c[:, :2].T + crop.M_o2c[:, 2]
    eyes, lip = local[[33, 35, 40, 39, 87, 89, 94, 93]].mean(0), local[[52, 61]].mean(0)
    assert eyes[0] == pytest.approx(lip[0], abs=1e-6) and lip[1] > eyes[1]  # roll removed
    # the un-rotated points span 120 (up to the random ones), so the box side is their extent
    extent = (local.max(0) - local.min(0)).max()
    assert extent == pytest.approx(512 / 2.0, rel=1e-6)
    np.testing.assert_allclose((local.max(0) + local.min(0)) / 2, [256, 256], atol=1e-6)

    flat = crop_face(image, face, CropConfig(scale=2.0, vy_ratio=0.0, rotate=False))
    assert flat.M_o2c[0, 1] == 0 and flat.M_o2c[1, 0] == 0


def test_mask_is_feathered_and_local(s6, s6_face):
    paste = PasteBack(s6, crop_face(s6, s6_face))
    m = paste.mask
    assert m.shape == s6.shape[:2] and m.dtype == np.float32
    assert m.min() == 0 and m.max() == pytest.approx(1.0)
    assert m[:40].max() == 0 and m[:, :40].max() == 0 and m[-40:].max() == 0  # far from the face
    cx, cy = s6_face.center.astype(int)
    assert m[cy, cx] == pytest.approx(1.0)
    assert ((m > 0.05) & (m < 0.95)).sum() > 1000  # a real feather band, not a hard edge
    crop_mask = feather_mask(512)
    assert crop_mask[0, 0] == 0 and crop_mask[256, 256] == 1


@pytest.mark.parametrize("generated_size", [512, 256])
def test_paste_round_trip(s6, s6_face, generated_size):
    crop = crop_face(s6, s6_face)
    generated = cv2.resize(crop.image, (generated_size,) * 2, interpolation=cv2.INTER_AREA)
    paste = PasteBack(s6, crop, generated_size=generated_size)
    out = paste(generated)
    assert out.shape == s6.shape and out.dtype == np.uint8
    m = paste.mask
    np.testing.assert_array_equal(out[m == 0], s6[m == 0])
    err = np.abs(out.astype(np.int16) - s6.astype(np.int16))[m > 0.99]
    # two bilinear resamplings (plus a downscale to 256) blur edges a little; nothing moves
    assert err.mean() < (1.5 if generated_size == 512 else 3.0), err.mean()
    assert np.percentile(err, 99) < (16 if generated_size == 512 else 32)


def test_paste_matches_official_formula(s6, s6_face):
    """Same as the official numpy path (cv2.warpAffine with M_c2o) given the same crop mask."""
    crop = crop_face(s6, s6_face)
    generated = np.ascontiguousarray(np.flip(crop.image, axis=1))  # anything different from the photo
    paste = PasteBack(s6, crop)
    h, w = s6.shape[:2]
    m = cv2.warpAffine(feather_mask(512), crop.M_c2o[:2], (w, h), flags=cv2.INTER_LINEAR)[..., None]
    pasted = cv2.warpAffine(generated, crop.M_c2o[:2], (w, h), flags=cv2.INTER_LINEAR)
    expected = np.clip(m * pasted + (1 - m) * s6, 0, 255).astype(np.uint8)
    diff = np.abs(paste(generated).astype(np.int16) - expected)
    # OpenCV samples at 1/32 pixel with fixed-point weights, grid_sample in float: off by a level or two
    assert diff.mean() < 0.05 and diff.max() <= 3, (diff.mean(), diff.max())
    np.testing.assert_allclose(paste.mask, m[..., 0], atol=0.005)


def test_paste_accepts_engine_output(s6, s6_face):
    crop = crop_face(s6, s6_face)
    paste = PasteBack(s6, crop, generated_size=256)
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    as_uint8 = (x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # official parse_output truncation
    np.testing.assert_array_equal(paste(x), paste(as_uint8))
    with pytest.raises(ValueError, match="shape"):
        paste(np.zeros((512, 512, 3), np.uint8))


def test_tracking_d0(d0_frames):
    det = HaarFaceDetector(redetect_every=10, smoothing=0.5)
    faces = [det.track(frame) for frame in d0_frames]
    assert all(face is not None for face in faces)
    assert det.full_searches == 2  # frames 0 and 10; the others searched near the last face
    for prev, face in itertools.pairwise(faces):
        # a talking head: the smoothed box moves a few pixels a frame at most
        assert np.abs(face.box - prev.box).max() < 0.04 * prev.side
    det.reset()
    assert det.track(d0_frames[0]) is not None and det.full_searches == 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_paste_on_cuda_matches_cpu(s6, s6_face):
    crop = crop_face(s6, s6_face)
    generated = np.ascontiguousarray(np.flip(crop.image, axis=1))
    cpu = PasteBack(s6, crop)(generated)
    gpu_paste = PasteBack(s6, crop, device="cuda")
    gpu = gpu_paste(generated)
    assert np.abs(cpu.astype(np.int16) - gpu).max() <= 1
    x = torch.rand(1, 3, 512, 512, device="cuda")
    assert gpu_paste(x).shape == s6.shape
