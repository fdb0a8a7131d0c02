"""The offline render through the CLI: real video in, real H.264 file out, decoded back; bad inputs."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lp_live.cli import main
from lp_live.media.video import VideoReader, VideoWriter

FAST = ["--weights", "synthetic", "--mode", "baseline", "--input-size", "128"]


def decode(path: Path) -> tuple[list[np.ndarray], float]:
    with VideoReader(path) as reader:
        return [f for f, _ in reader.frames()], float(reader.fps)


def test_render_with_paste_back_has_photo_size(assets, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    rc = main(["--source", str(assets / "s6.jpg"), "--camera", str(assets / "d0.mp4"), "--output", str(out),
               "--max-frames", "4", *FAST])
    assert rc == 0
    frames, fps = decode(out)
    assert len(frames) == 4
    assert frames[0].shape == (724, 724, 3)  # 725x725 trimmed to even sides, as the official pipeline
    assert fps == 25
    summary = capsys.readouterr().out
    assert "4 frames" in summary and "synthetic weights" in summary and "0 frames without a face" in summary


def test_render_crop_side_by_side_and_size(assets, tmp_path):
    out = tmp_path / "sbs.mp4"
    rc = main(["--source", str(assets / "s6.jpg"), "--camera", str(assets / "d0.mp4"), "--output", str(out),
               "--max-frames", "2", "--no-paste-back", "--side-by-side", "--size", "320", *FAST])
    assert rc == 0
    frames, _ = decode(out)
    assert len(frames) == 2
    assert frames[0].shape == (160, 320, 3)  # driving 256 | output 256, scaled to 320 wide


def test_default_source_is_the_shipped_portrait(assets, tmp_path):
    out = tmp_path / "astronaut.mp4"
    assert main(["--camera", str(assets / "d0.mp4"), "--output", str(out), "--max-frames", "1", *FAST]) == 0
    frames, _ = decode(out)
    assert frames[0].shape == (512, 512, 3)


def _bad_inputs(tmp_path: Path, assets: Path) -> dict[str, tuple[list[str], str]]:
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    gray = tmp_path / "gray.png"
    import cv2

    cv2.imwrite(str(gray), np.full((300, 300, 3), 128, np.uint8))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(50_000))
    weights = tmp_path / "weights"
    (weights / "base_models").mkdir(parents=True)
    (weights / "base_models" / "appearance_feature_extractor.pth").write_bytes(b"")
    src, drv, out = str(assets / "s6.jpg"), str(assets / "d0.mp4"), str(tmp_path / "o.mp4")
    return {
        "missing photo": (["--source", str(tmp_path / "nope.jpg"), "--camera", drv, "--output", out],
                          "not found"),
        "not an image": (["--source", str(not_image), "--camera", drv, "--output", out], "not an image"),
        "no face": (["--source", str(gray), "--camera", drv, "--output", out], "no face found"),
        "missing video": (["--source", src, "--camera", str(tmp_path / "nope.mp4"), "--output", out],
                          "not found"),
        "empty video": (["--source", src, "--camera", str(empty), "--output", out], "empty"),
        "corrupt video": (["--source", src, "--camera", str(corrupt), "--output", out], "video"),
        "not a video": (["--source", src, "--camera", str(not_image), "--output", out], "video"),
        "unwritable output": (["--source", src, "--camera", drv, "--output", str(tmp_path / "no" / "o.mp4")],
                              "cannot write"),
        "weights missing a file": (["--source", src, "--camera", drv, "--output", out, "--weights",
                                    str(weights)], "missing"),
    }


@pytest.mark.parametrize("case", ["missing photo", "not an image", "no face", "missing video", "empty video",
                                  "corrupt video", "not a video", "unwritable output", "weights missing a file"])
def test_bad_input_is_one_line_and_exit_2(case, assets, tmp_path, capsys):
    argv, expected = _bad_inputs(tmp_path, assets)[case]
    if "--weights" not in argv:
        argv += ["--weights", "synthetic"]
    rc = main([*argv, "--input-size", "128", "--mode", "baseline"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lp-live: error: ") and expected in err, err
    assert "Traceback" not in err


def test_bad_input_subprocess_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lp_live.cli", "--source", str(tmp_path / "x.jpg"),
                           "--output", str(tmp_path / "o.mp4")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_sigint_leaves_a_playable_partial_file(assets, tmp_path):
    """Ctrl-C midway through a long render: the file decodes and holds the frames written so far."""
    long_video = tmp_path / "long.mp4"
    with VideoReader(assets / "d0.mp4") as reader:
        frames = [f for f, _ in reader.frames()]
    with VideoWriter(long_video, 25) as writer:
        for i in range(200):
            writer.write(frames[i % len(frames)])
    out = tmp_path / "partial.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lp_live.cli", "--source", str(assets / "s6.jpg"), "--camera", str(long_video),
         "--output", str(out), "-v", *FAST], stderr=subprocess.PIPE, text=True)
    done = 0
    deadline = time.monotonic() + 240
    assert proc.stderr is not None
    for line in proc.stderr:
        if "rendered" in line:
            done += 1
            if done >= 3:
                proc.send_signal(signal.SIGINT)
                break
        assert time.monotonic() < deadline, "render too slow"
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, rest
    assert "interrupted" in rest
    frames_out, _ = decode(out)
    assert 3 <= len(frames_out) < 200


@pytest.mark.slow
def test_render_all_78_frames_with_the_default_engine(assets, tmp_path, capsys):
    """s6.jpg driven by d0.mp4 with the default (optimized, compiled) engine: every frame, in order."""
    out = tmp_path / "all.mp4"
    rc = main(["--source", str(assets / "s6.jpg"), "--camera", str(assets / "d0.mp4"), "--output", str(out),
               "--weights", "synthetic", "--input-size", "128", "--no-paste-back", "--size", "256"])
    assert rc == 0
    frames, fps = decode(out)
    assert len(frames) == 78
    assert all(f.shape == (256, 256, 3) for f in frames)
    assert fps == 25
    # baseline first while optimized compiles in the background; the summary names who rendered what
    out = capsys.readouterr().out
    assert re.search(r"(baseline|optimized) engine on cpu|baseline \(\d+\) then optimized \(\d+\) on cpu", out), out
    # the face moves: consecutive output frames differ
    assert np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in itertools.pairwise(frames)]) > 0.1


def test_no_weights_offline_says_how_to_run(assets, tmp_path, monkeypatch, capsys):
    """No --weights, an empty cache and no hub: one line naming --weights synthetic, at once."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    t0 = time.monotonic()
    rc = main(["--source", str(assets / "s6.jpg"), "--camera", str(assets / "d0.mp4"), "--output",
               str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--weights synthetic" in err, err
    assert time.monotonic() - t0 < 30
