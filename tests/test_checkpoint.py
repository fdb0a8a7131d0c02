"""Loading the official checkpoint layout (written by the kit), and its failure modes."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import torch

from lp_live.models import WeightsError, load_liveportrait
from lp_live.models.checkpoint import BASE_FILES, RETARGETING_FILE, verify_checkpoint
from lp_live.models.integrity import DamagedWeightsError, recorded_digest, sha256_file, write_digests


@pytest.fixture(scope="module")
def official_dir(kit, tmp_path_factory):
    """The five files under liveportrait/, as the hub repository lays them out."""
    weights, _ = kit
    root = tmp_path_factory.mktemp("weights")
    written = weights.save_checkpoints(str(root / "liveportrait" / "scratch"))
    # save_checkpoints writes flat files; place them in the official layout
    base = root / "liveportrait"
    for rel in (*BASE_FILES.values(), RETARGETING_FILE):
        src = written[rel.rsplit("/", 1)[1]]
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src, base / rel)
    shutil.rmtree(root / "liveportrait" / "scratch")
    return root


def test_loads_official_layout_and_matches_fixtures(kit, official_dir):
    _, K = kit
    models = load_liveportrait(official_dir)  # the hub's liveportrait/ subfolder is found
    assert models.kind == "real"
    for name in ("warping_module", "stitching", "eye", "appearance_feature_extractor"):
        args, expected = K.module_case(name)
        with torch.no_grad():
            out = getattr(models, name)(*args)
        out = out if isinstance(out, dict) else {next(iter(expected)): out}
        for key, ref in expected.items():
            assert K.rel_l2(out[key], ref) <= K.tol("float32", name), f"{name}.{key}"
    assert not any(p.requires_grad for p in models.spade_generator.parameters())
    assert not models.motion_extractor.training


def test_loads_without_metadata_and_without_module_prefix(kit, tmp_path):
    weights, _ = kit
    written = weights.save_checkpoints(str(tmp_path / "flat"), with_metadata=False)
    base = tmp_path / "w"
    for rel in (*BASE_FILES.values(), RETARGETING_FILE):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(written[rel.rsplit("/", 1)[1]], base / rel)
    retarget = torch.load(base / RETARGETING_FILE, weights_only=True)
    stripped = {k: {key.replace("module.", ""): v for key, v in sd.items()} for k, sd in retarget.items()}
    stripped["extra_top_level_entry"] = {"ignored": torch.zeros(1)}
    torch.save(stripped, base / RETARGETING_FILE)
    models = load_liveportrait(base)
    assert models.kind == "real"


@pytest.fixture(scope="module")
def flat_files(kit, tmp_path_factory) -> dict[str, str]:
    weights, _ = kit
    return weights.save_checkpoints(str(tmp_path_factory.mktemp("flat")))


def _layout(flat_files: dict[str, str], tmp_path):
    """The official layout as symlinks to the shared files: a test replaces (unlink + write) what it breaks."""
    base = tmp_path / "w"
    for rel in (*BASE_FILES.values(), RETARGETING_FILE):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).symlink_to(flat_files[rel.rsplit("/", 1)[1]])
    return base


def _replace(path, data: bytes | None = None, obj=None) -> None:
    path.unlink()
    if data is not None:
        path.write_bytes(data)
    else:
        torch.save(obj, path)


def test_missing_file_is_named(flat_files, tmp_path):
    base = _layout(flat_files, tmp_path)
    (base / BASE_FILES["spade_generator"]).unlink()
    with pytest.raises(WeightsError, match=r"spade_generator\.pth"):
        load_liveportrait(base)


def test_missing_directory(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_liveportrait(tmp_path / "nowhere")


def test_truncated_file_is_named(flat_files, tmp_path):
    base = _layout(flat_files, tmp_path)
    path = base / BASE_FILES["warping_module"]
    data = path.read_bytes()
    _replace(path, data=data[: len(data) // 3])
    with pytest.raises(WeightsError, match=r"warping_module\.pth: cannot be read.*truncated"):
        load_liveportrait(base)


def test_misshaped_key_is_named(flat_files, tmp_path):
    base = _layout(flat_files, tmp_path)
    path = base / BASE_FILES["appearance_feature_extractor"]
    sd = torch.load(path, weights_only=True)
    sd["second.weight"] = torch.zeros(512, 128, 1, 1)
    del sd["first.norm.running_var"]
    sd["first.extra"] = torch.zeros(1)
    _replace(path, obj=sd)
    with pytest.raises(WeightsError) as err:
        load_liveportrait(base)
    message = str(err.value)
    assert "appearance_feature_extractor.pth" in message
    assert "second.weight (512, 128, 1, 1) != (512, 256, 1, 1)" in message
    assert "missing keys: first.norm.running_var" in message
    assert "unexpected keys: first.extra" in message
    assert "\n" not in message


def test_missing_retargeting_entry(flat_files, tmp_path):
    base = _layout(flat_files, tmp_path)
    path = base / RETARGETING_FILE
    ckpt = torch.load(path, weights_only=True)
    del ckpt["retarget_eye"]
    _replace(path, obj=ckpt)
    with pytest.raises(WeightsError, match="retarget_eye"):
        load_liveportrait(base)


# ---------------------------------------------------------------------------------------------
# weights that are what they claim (no ../shared: the synthetic weights in the official layout)
# ---------------------------------------------------------------------------------------------
def test_damaged_file_is_refused_for_its_values(linked_weights, damage):
    """Without a digest manifest: random bytes inside make NaN/inf values, refused naming the file."""
    base = linked_weights
    damage(base / BASE_FILES["appearance_feature_extractor"])  # the first file read: fails at once
    with pytest.raises(DamagedWeightsError) as err:
        load_liveportrait(base)
    message = str(err.value)
    assert re.fullmatch(r".*appearance_feature_extractor\.pth: damaged \(\S+ has \d+ NaN or infinite values\); "
                        r"run `lp-live download-weights` to fetch it again", message)


def test_digests_are_checked_at_load(linked_weights, damage, tmp_path):
    """With the manifest a download writes (two levels above the files): the intact files load; 4 KB of
    finite garbage (zeros), which no value check could see, is refused by its digest, naming the file."""
    base = linked_weights
    digests = {f"liveportrait/{rel}": sha256_file(base / rel) for rel in (*BASE_FILES.values(), RETARGETING_FILE)}
    manifest = write_digests(tmp_path, digests)
    assert json.loads(manifest.read_text()) == {"algorithm": "sha256", "files": dict(sorted(digests.items()))}
    assert recorded_digest(base / RETARGETING_FILE) == (digests[f"liveportrait/{RETARGETING_FILE}"], manifest)
    assert verify_checkpoint(tmp_path) == (base, True)  # digests, keys, shapes, values; no networks built
    damage(base / BASE_FILES["appearance_feature_extractor"], bytes(4096))
    manifest.rename(tmp_path / "aside.json")
    assert verify_checkpoint(tmp_path) == (base, False)  # the zeros are finite: only the digest can tell
    (tmp_path / "aside.json").rename(manifest)
    with pytest.raises(DamagedWeightsError) as err:
        load_liveportrait(tmp_path)
    message = str(err.value)
    assert re.fullmatch(rf".*appearance_feature_extractor\.pth: damaged \(its SHA-256 [0-9a-f]{{12}}\.\.\. is not the "
                        rf"[0-9a-f]{{12}}\.\.\. recorded at download in {re.escape(str(manifest))}\); "
                        r"run `lp-live download-weights` to fetch it again", message)


def test_code_pickle_is_refused_plainly(linked_weights):
    base = linked_weights
    path = base / BASE_FILES["appearance_feature_extractor"]
    path.unlink()
    torch.save({"x": _Code()}, path)
    with pytest.raises(DamagedWeightsError) as err:
        load_liveportrait(base)
    message = str(err.value)
    assert re.search(r"appearance_feature_extractor\.pth: refused: the file contains code \(its pickle calls "
                     r"(posix|nt)\.system\)", message)
    assert "download-weights" in message and "\n" not in message
    assert "weights_only" not in message and "truncated" not in message


class _Code:
    def __reduce__(self):
        return os.system, ("echo this would run",)
