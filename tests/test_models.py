"""The networks against the reference kit: strict loading and fixture parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lp_live.models import MODEL_NAMES, build
from lp_live.models.checkpoint import synthetic_state_dict

FIXTURE_OUTPUTS = {
    "appearance_feature_extractor": "out",
    "spade_generator": "out",
    "stitching": "output",
    "lip": "output",
    "eye": "output",
}


def test_registry_matches_manifest(kit):
    weights, _ = kit
    manifest = weights.load_manifest()
    assert set(MODEL_NAMES) == set(manifest["modules"])
    for name in MODEL_NAMES:
        sd = build(name).state_dict()
        expected = {e["key"]: tuple(e["shape"]) for e in manifest["modules"][name]["state_dict"]}
        assert {k: tuple(v.shape) for k, v in sd.items()} == expected, name
        params = sum(p.numel() for p in build(name).parameters())
        assert params == manifest["modules"][name]["num_parameters"], name


def test_unknown_model_lists_valid_names():
    with pytest.raises(KeyError, match="warping_module"):
        build("warp")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fixture_parity(kit, kit_models, name):
    """Each network reproduces the official module's output on the kit's weights (fp32, CPU)."""
    _, K = kit
    net = getattr(kit_models, name)
    args, expected = K.module_case(name)
    with torch.no_grad():
        out = net(*args)
    if not isinstance(out, dict):
        out = {FIXTURE_OUTPUTS[name]: out}
    for key, ref in expected.items():
        assert K.rel_l2(out[key], ref) <= K.tol("float32", name), f"{name}.{key}"


def test_generator_uint8_matches_fixture(kit, kit_models):
    _, K = kit
    spade = K.load_fixture("spade")
    warp = K.load_fixture("warping")
    with torch.no_grad():
        image = kit_models.spade_generator(torch.from_numpy(warp["out"]))
    u8 = (np.clip(np.clip(image[0].permute(1, 2, 0).numpy(), 0, 1) * 255, 0, 255)).astype(np.uint8)
    assert np.abs(u8.astype(int) - spade["image_uint8"].astype(int)).max() <= 1


@pytest.mark.parametrize("name", ["motion_extractor", "stitching", "eye"])
def test_batch_matches_single(kit_models, name):
    net = getattr(kit_models, name)
    torch.manual_seed(0)
    x = torch.rand(3, 3, 128, 128) if name == "motion_extractor" else torch.rand(3, net.mlp[0].in_features)
    with torch.no_grad():
        batched = net(x)
        single = [net(x[i : i + 1]) for i in range(3)]
    if isinstance(batched, dict):
        for key in batched:
            torch.testing.assert_close(batched[key], torch.cat([s[key] for s in single]), rtol=1e-4, atol=1e-5)
    else:
        torch.testing.assert_close(batched, torch.cat(single), rtol=1e-5, atol=1e-6)


def test_warping_batch_and_small_volume(kit_models):
    """Batch 2 on a small (16, 32, 32) volume equals two batch-1 runs; shapes follow the input."""
    w = kit_models.warping_module
    torch.manual_seed(1)
    feature = torch.randn(2, 32, 16, 32, 32)
    kp_s = 0.3 * torch.randn(2, 21, 3)
    kp_d = kp_s + 0.05 * torch.randn(2, 21, 3)
    with torch.no_grad():
        both = w(feature, kp_driving=kp_d, kp_source=kp_s)
        ones = [w(feature[i : i + 1], kp_driving=kp_d[i : i + 1], kp_source=kp_s[i : i + 1]) for i in range(2)]
    assert both["out"].shape == (2, 256, 32, 32)
    assert both["deformation"].shape == (2, 16, 32, 32, 3)
    for key in ("out", "occlusion_map", "deformation"):
        torch.testing.assert_close(both[key], torch.cat([o[key] for o in ones]), rtol=1e-4, atol=1e-5)


def test_synthetic_weights_are_deterministic_and_sane():
    a = synthetic_state_dict("spade_generator")
    b = synthetic_state_dict("spade_generator")
    assert all(torch.equal(a[k], b[k]) for k in a)
    g = build("spade_generator")
    g.load_state_dict(a, strict=True)
    with torch.no_grad():
        image = g(torch.randn(1, 256, 16, 16))
    assert image.shape == (1, 3, 128, 128)
    # not saturated: the synthetic gains keep the sigmoid in its working range
    assert 0.3 < float(image.mean()) < 0.7
    assert 0.05 < float(image.std()) < 0.35


def test_parity_on_fresh_inputs_against_float64(kit_models, assets):
    """Inputs not in the kit (a real photo crop, real video frames, random keypoints): float32 stays within
    the parity tolerances of the same networks evaluated in float64."""
    import copy

    import cv2

    from lp_live.media.video import VideoReader

    photo = cv2.cvtColor(cv2.imread(str(assets / "s6.jpg")), cv2.COLOR_BGR2RGB)
    with VideoReader(assets / "d0.mp4") as reader:
        frame = next(reader.frames())[0]
    images = np.stack([cv2.resize(photo, (128, 128), interpolation=cv2.INTER_AREA), cv2.resize(frame, (128, 128))])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    torch.manual_seed(3)
    kp_s = 0.4 * torch.rand(1, 21, 3) - 0.2
    kp_d = kp_s + 0.03 * torch.randn(1, 21, 3)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.double() - b).norm() / b.norm())

    with torch.no_grad():
        for name, args, tol in (
            ("appearance_feature_extractor", (x,), 2e-5),
            ("motion_extractor", (x,), 5e-5),
            ("stitching", (torch.cat([kp_s, kp_d], 1).reshape(1, -1),), 2e-5),
        ):
            net = getattr(kit_models, name)
            net64 = copy.deepcopy(net).double()
            out, ref = net(*args), net64(*(a.double() for a in args))
            for key in out if isinstance(out, dict) else [None]:
                a, b = (out[key], ref[key]) if key else (out, ref)
                assert rel(a, b) <= tol, (name, key)
        feature = kit_models.appearance_feature_extractor(x[:1])  # (1, 32, 16, 32, 32)
        w64 = copy.deepcopy(kit_models.warping_module).double()
        out = kit_models.warping_module(feature, kp_driving=kp_d, kp_source=kp_s)
        ref = w64(feature.double(), kp_driving=kp_d.double(), kp_source=kp_s.double())
        for key in ("out", "occlusion_map", "deformation"):
            assert rel(out[key], ref[key]) <= 2e-5, key
        g64 = copy.deepcopy(kit_models.spade_generator).double()
        assert rel(kit_models.spade_generator(out["out"]), g64(out["out"].double())) <= 2e-5
