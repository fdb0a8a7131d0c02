"""The per-frame keypoint math against the kit's fx_math fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lp_live.motion import kinematics as kin

RAW = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


def T(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.fixture(scope="module")
def fx(kit):
    _, K = kit
    return K.load_fixture("math")


def motion(fx, prefix: str) -> kin.Motion:
    return kin.motion_from_raw({k: T(fx[f"{prefix}.raw.{k}"]) for k in RAW})


def test_degrees_and_rotation(kit, fx):
    _, K = kit
    deg = kin.bins_to_degrees(T(fx["headpose.logits"]))
    assert np.abs(deg.numpy() - fx["headpose.degrees"]).max() <= 1e-4  # absolute: see the kit's README
    ang = T(fx["rotation.pitch_yaw_roll_deg"])
    assert K.rel_l2(kin.rotation_matrix(ang[:, 0], ang[:, 1], ang[:, 2]), fx["rotation.R"]) <= 1e-6
    assert kin.bins_to_degrees(torch.ones(2, 1)).shape == (2, 1)  # already degrees: unchanged


def test_source_and_driving_keypoints(kit, fx):
    _, K = kit
    s = motion(fx, "source")
    for name in ("pitch", "yaw", "roll"):
        assert np.abs(getattr(s, name).numpy() - fx[f"source.{name}_deg"]).max() <= 1e-4
    assert K.rel_l2(s.R, fx["source.R"]) <= 1e-6
    assert K.rel_l2(kin.transform_keypoints(s), fx["source.x_s"]) <= 1e-6
    for i in range(3):
        d = motion(fx, f"driving{i}")
        assert K.rel_l2(kin.transform_keypoints(d), fx[f"driving{i}.x_d"]) <= 1e-6


def test_relative_motion_stitching_and_lip_normalisation(kit, fx, kit_models):
    _, K = kit
    s = motion(fx, "source")
    x_s = kin.transform_keypoints(s)
    drv = [motion(fx, f"driving{i}") for i in range(3)]
    lip_src = kin.lip_ratio(T(fx["lmk.source"])[None])
    with torch.no_grad():
        lip_delta = kin.retarget(kit_models.lip, x_s, torch.cat([lip_src, torch.zeros_like(lip_src)], 1))
        assert K.rel_l2(lip_delta, fx["lipnorm.lip_delta"]) <= 2e-5
        x0 = kin.relative_keypoints(s, drv[0], drv[0])
        mult = kin.expression_multiplier(x_s, x0)
        assert mult == pytest.approx(float(fx["ef.motion_multiplier"]), abs=1e-6)
        for i in range(3):
            x = kin.relative_keypoints(s, drv[i], drv[0])
            assert K.rel_l2(x, fx[f"pf.frame{i}.x_d_motion"]) <= 2e-6
            scaled = (x - x0) * mult + x_s
            assert K.rel_l2(scaled, fx[f"ef.frame{i}.x_d_scaled"]) <= 2e-6
            stitched = kin.stitch(kit_models.stitching, x_s, T(fx[f"pf.frame{i}.x_d_motion"]))
            assert K.rel_l2(stitched, fx[f"pf.frame{i}.x_d_stitched"]) <= 2e-5
            final = kin.apply_multiplier(x_s, stitched + lip_delta, 1.0)
            assert K.rel_l2(final, fx[f"pf.frame{i}.x_d_final"]) <= 2e-5


def test_eye_lip_retargeting_and_ratios(kit, fx, kit_models):
    _, K = kit
    x_s = T(fx["source.x_s"])
    src_eye = kin.eye_ratios(T(fx["lmk.source"])[None])
    src_lip = kin.lip_ratio(T(fx["lmk.source"])[None])
    assert K.rel_l2(src_eye, fx["ratio.source_eye"]) <= 1e-6
    assert K.rel_l2(src_lip, fx["ratio.source_lip"]) <= 1e-6
    drv_eye = kin.eye_ratios(T(fx["lmk.driving"]))
    drv_lip = kin.lip_ratio(T(fx["lmk.driving"]))
    assert K.rel_l2(drv_eye, fx["ratio.driving_eye"]) <= 1e-6
    with torch.no_grad():
        for i in range(3):
            eye = torch.cat([src_eye, drv_eye[i : i + 1, :1]], 1)  # the driving LEFT eye only
            lip = torch.cat([src_lip, drv_lip[i : i + 1]], 1)
            d_eye = kin.retarget(kit_models.eye, x_s, eye)
            d_lip = kin.retarget(kit_models.lip, x_s, lip)
            assert K.rel_l2(d_eye, fx[f"rt.frame{i}.eyes_delta"]) <= 2e-5
            assert K.rel_l2(d_lip, fx[f"rt.frame{i}.lip_delta"]) <= 2e-5
            x = kin.stitch(kit_models.stitching, x_s, x_s + d_eye + d_lip)
            assert K.rel_l2(x, fx[f"rt.frame{i}.x_d_final"]) <= 2e-5


def test_batched_math_matches_per_sample():
    torch.manual_seed(0)
    b = 4
    m = kin.motion_from_raw({
        "pitch": torch.randn(b, 66), "yaw": torch.randn(b, 66), "roll": torch.randn(b, 66),
        "t": 0.1 * torch.randn(b, 3), "exp": 0.02 * torch.randn(b, 63), "scale": 1.4 + 0.1 * torch.rand(b, 1),
        "kp": 0.5 * torch.randn(b, 63),
    })
    x = kin.transform_keypoints(m)
    one = torch.cat([kin.transform_keypoints(m.map(lambda v, i=i: v[i : i + 1])) for i in range(b)])
    torch.testing.assert_close(x, one)
    rel = kin.relative_keypoints(m, m, m)
    torch.testing.assert_close(rel[:, :, :2], x[:, :, :2], atol=1e-5, rtol=1e-5)  # frame 0 gives back x_s


def test_hull_volume_of_a_cube():
    cube = np.array([[i, j, k] for i in (0, 2) for j in (0, 2) for k in (0, 2)], float)
    inner = np.random.default_rng(0).uniform(0.2, 1.8, size=(13, 3))
    assert kin.hull_volume(np.concatenate([cube, inner])) == pytest.approx(8.0)
