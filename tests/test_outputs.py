"""The files a run writes, checked before anything loads: one line, exit 2, inputs untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from lp_live import session as pipeline
from lp_live.cli import main
from lp_live.media.outputs import check_outputs

FAST = ["--weights", "synthetic", "--mode", "baseline", "--input-size", "128"]


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if a run gets as far as reading the photo or building the models."""
    def loaded(*args, **kwargs):
        raise AssertionError("the run went on to load the photo or the models")

    monkeypatch.setattr(pipeline, "build_animator", loaded)
    monkeypatch.setattr(pipeline, "read_image", loaded)


def _cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    camera = tmp_path / "drive.mp4"
    camera.write_bytes(b"the driving video")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"the photo")
    run = ["--camera", str(camera), "--source", str(photo)]
    out = str(tmp_path / "out.mp4")
    return {
        "output is a folder": ([*run, "--output", str(tmp_path)],
                               f"--output {tmp_path} is a folder; give a file name in it, e.g. --output "
                               f"{tmp_path / 'out.mp4'}"),
        "output folder missing": ([*run, "--output", str(tmp_path / "no" / "o.mp4")],
                                  f"cannot write --output {tmp_path / 'no' / 'o.mp4'}: the folder "
                                  f"{tmp_path / 'no'} does not exist; create it or choose another --output"),
        "output in /proc": ([*run, "--output", "/proc/out.mp4"], "cannot write --output /proc/out.mp4 ("),
        "output format": ([*run, "--output", str(tmp_path / "o.gif")],
                          f"cannot write --output {tmp_path / 'o.gif'}: .gif is not a video format lp-live can "
                          "write ("),
        "no extension": ([*run, "--output", str(tmp_path / "o")], "(no extension) is not a video format"),
        "output is the camera": ([*run, "--output", str(camera)],
                                 f"--output {camera} is the input {camera}: writing it would destroy it; "
                                 "choose another --output"),
        "output is the photo": ([*run, "--output", str(tmp_path / "." / "photo.jpg")], f"is the input {photo}"),
        "stats in /proc": ([*run, "--output", out, "--stats-json", "/proc/stats.json"],
                           "cannot write --stats-json /proc/stats.json ("),
        "stats is a folder": ([*run, "--output", out, "--stats-json", str(tmp_path)],
                              f"--stats-json {tmp_path} is a folder; give a file name in it, e.g. --stats-json "
                              f"{tmp_path / 'stats.json'}"),
        "stats is the output": ([*run, "--output", out, "--stats-json", out], "is also the --output video"),
        "stats is the camera": ([*run, "--output", out, "--stats-json", str(camera)], "is the input"),
        "live recording into a folder": ([*run, "--sink", "file", "--output", str(tmp_path)], "is a folder"),
        "live stats in /proc": ([*run, "--sink", "null", "--stats-json", "/proc/s.json"],
                                "cannot write --stats-json /proc/s.json"),
    }


@pytest.mark.parametrize("case", list(_cases(Path("/tmp"))))
def test_bad_output_is_one_line_before_anything_loads(case, tmp_path, no_models, capsys):
    argv, expected = _cases(tmp_path)[case]
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    assert main([*argv, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lp-live: error: "), err
    assert expected in err, err
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before  # inputs intact, no probe left


def test_max_frames_zero_is_refused_without_a_file(tmp_path, no_models, capsys):
    out = tmp_path / "out.mp4"
    with pytest.raises(SystemExit) as exit_:
        main(["--output", str(out), "--max-frames", "0", *FAST])
    assert exit_.value.code == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert err == "lp-live: error: argument --max-frames: must be at least 1, got 0 (see lp-live --help)"


def test_good_outputs_pass_and_leave_existing_files_as_they_are(tmp_path):
    old = tmp_path / "old.mkv"
    old.write_bytes(b"an earlier render")
    stats = tmp_path / "stats.json"
    check_outputs(old, stats, [tmp_path / "photo.jpg", "0", None])
    check_outputs(tmp_path / "new.mp4", None, [])
    check_outputs(None, stats, [])
    assert old.read_bytes() == b"an earlier render"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.mkv"]  # probes removed, nothing created
