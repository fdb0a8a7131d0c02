"""Every network of the registry, with in-process synthetic weights: no ../shared needed.

The official key names and shapes are recorded here as one digest per network (taken from the
reference kit's manifest; `test_recorded_keys_match_the_kit` re-derives them where the kit is
present), so a checkout alone checks that `build(name)` has the released layout.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from lp_live.models import MODEL_NAMES, WeightsError, build, load_liveportrait
from lp_live.models.checkpoint import load_strict

# name -> (number of state-dict entries, sha256 of the sorted "key (shape) dtype\n" lines, first 16 hex digits)
OFFICIAL_KEYS = {
    "appearance_feature_extractor": (107, "357690249db0d99f"),
    "motion_extractor": (212, "29e2f404fdca5c1e"),
    "warping_module": (97, "ff198197dd7f283f"),
    "spade_generator": (182, "bb9e115c81e2c2f6"),
    "stitching": (8, "e2fafd0a3cf2f244"),
    "lip": (8, "e0f6015b96159546"),
    "eye": (12, "aa3d2b978bb74b00"),
}


def _keys_digest(entries: list[tuple[str, tuple[int, ...], str]]) -> tuple[int, str]:
    lines = "".join(sorted(f"{key} {shape} {dtype}\n" for key, shape, dtype in entries))  # order: not loaded
    return len(entries), hashlib.sha256(lines.encode()).hexdigest()[:16]


def _layout(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()]


def test_recorded_keys_match_the_kit(kit):
    weights, _ = kit
    manifest = weights.load_manifest()
    assert set(OFFICIAL_KEYS) == set(manifest["modules"])
    for name, entry in manifest["modules"].items():
        recorded = [(e["key"], tuple(e["shape"]), e["dtype"]) for e in entry["state_dict"]]
        assert _keys_digest(recorded) == OFFICIAL_KEYS[name], name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_network_has_the_official_keys_and_loads_them_strictly(synthetic_models, name):
    """The key names, shapes and dtypes of the released checkpoints; a state dict with those
    keys loads strictly; one renamed or missing key is refused, naming it."""
    assert set(MODEL_NAMES) == set(OFFICIAL_KEYS)
    net = build(name)
    assert _keys_digest(_layout(net)) == OFFICIAL_KEYS[name]
    sd = getattr(synthetic_models, name).state_dict()
    load_strict(net, sd, name)
    assert all(torch.equal(v, sd[k]) for k, v in net.state_dict().items())
    first = next(iter(sd))
    renamed = {("x" + k if k == first else k): v for k, v in sd.items()}
    with pytest.raises(WeightsError, match=rf"{name}: .*missing keys: {first}.*unexpected keys: x{first}"):
        load_strict(build(name), renamed, name)


def _finite(out: torch.Tensor) -> bool:
    return out.dtype == torch.float32 and bool(torch.isfinite(out).all()) and float(out.std()) > 0


def test_every_network_runs_forward(synthetic_models):
    """A forward of each network on small inputs: shapes, dtype float32, finite, not constant."""
    m = synthetic_models
    assert {n: getattr(m, n) for n in MODEL_NAMES}.keys() == set(MODEL_NAMES)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 128, 128, generator=gen)
    kp_s = 0.3 * torch.randn(2, 21, 3, generator=gen)
    kp_d = kp_s + 0.05 * torch.randn(2, 21, 3, generator=gen)
    with torch.no_grad():
        feature = m.appearance_feature_extractor(image)
        assert feature.shape == (2, 32, 16, 32, 32) and _finite(feature)

        motion = m.motion_extractor(image)
        shapes = {k: tuple(v.shape) for k, v in motion.items()}
        assert shapes == {"pitch": (2, 66), "yaw": (2, 66), "roll": (2, 66), "t": (2, 3), "exp": (2, 63),
                          "scale": (2, 1), "kp": (2, 63)}
        assert all(_finite(v) for k, v in motion.items() if k != "scale")  # scale: (2, 1), may be equal
        assert motion["scale"].dtype == torch.float32 and torch.isfinite(motion["scale"]).all()

        warped = m.warping_module(feature[:1], kp_driving=kp_d[:1], kp_source=kp_s[:1])
        assert {k: tuple(v.shape) for k, v in warped.items()} == {
            "out": (1, 256, 32, 32), "occlusion_map": (1, 1, 32, 32), "deformation": (1, 16, 32, 32, 3)}
        assert all(_finite(v) for v in warped.values())
        assert float(warped["occlusion_map"].min()) >= 0 and float(warped["occlusion_map"].max()) <= 1

        image_out = m.spade_generator(torch.randn(1, 256, 16, 16, generator=gen))
        assert image_out.shape == (1, 3, 128, 128) and _finite(image_out)
        assert float(image_out.min()) >= 0 and float(image_out.max()) <= 1  # a sigmoid

        x = torch.cat([kp_s, kp_d], 1).reshape(2, -1)  # (2, 126)
        for name, inputs, width in (("stitching", x, 65), ("lip", torch.cat([x[:, :63], x[:, :2]], 1), 63),
                                    ("eye", torch.cat([x[:, :63], x[:, :3]], 1), 63)):
            out = getattr(m, name)(inputs)
            assert out.shape == (2, width) and _finite(out), name


def test_official_files_load_strictly(synthetic_models, synthetic_weights_dir):
    """The five files as released (retargeting sub-dicts with `module.` keys) load with the real loader,
    found from the folder above `liveportrait/`, and give the same weights."""
    loaded = load_liveportrait(synthetic_weights_dir.parent)
    assert loaded.kind == "real" and loaded.source == str(synthetic_weights_dir)
    for name in MODEL_NAMES:
        ours, theirs = getattr(synthetic_models, name).state_dict(), getattr(loaded, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
