"""Options declared once: checked on load (one line, exit 2, before torch), derived files agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lp_live import __version__
from lp_live.core.config import Config, ConfigError, default_yaml, load_config, options_table

REPO = Path(__file__).resolve().parents[1]

BAD_FLAGS = [
    ["--input-size", "160"], ["--input-size", "192"], ["--input-size", "224"], ["--input-size", "100"],
    ["--input-size", "0"], ["--input-size", "-32"], ["--device", "tpu"], ["--device", "mps"], ["--device", ""],
    ["--size", "0"], ["--size", "100000"], ["--fps", "0", "--sink", "null"], ["--fps", "-1", "--sink", "null"],
    ["--fps", "nan", "--sink", "null"], ["--fps", "25"], ["--mode", "turbo"], ["--precision", "half"],
    ["--triton-kernels", "maybe"], ["--multiplier", "nan"], ["--max-frames", "0"], ["--no-such-flag"],
]
BAD_FILES = {
    "mode": "engine:\n  mode: turbo\n",
    "engine-mode-fast": "engine: {mode: fast}\n",
    "precision": "engine:\n  precision: fp64\n",
    "box_smoothing": "face:\n  box_smoothing: 7\n",
    "negative size": "stream:\n  size: -5\n",
    "negative input": "engine:\n  input_size: -256\n",
    "nan multiplier": "animation:\n  multiplier: .nan\n",
    "redetect_every": "face:\n  redetect_every: 0\n",
    "unknown key": "engine:\n  modes: optimized\n",
    "not a mapping": "- a\n- b\n",
    "yaml syntax": "engine:\n  mode: [\n  x: : y\n",
}


def test_every_bad_value_is_one_line_and_exit_2_before_torch(tmp_path):
    """The probe's values, each in a fresh `main` call in one process that never imports torch."""
    files = {}
    for name, text in BAD_FILES.items():
        files[name] = tmp_path / f"{name.replace(' ', '_')}.yaml"
        files[name].write_text(text)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    cases = [[*f, "--output", str(tmp_path / "o.mp4")] for f in BAD_FLAGS]
    cases += [["--config", str(p), "--output", str(tmp_path / "o.mp4")] for p in [*files.values(), binary]]
    script = f"""
import contextlib, io, json, sys
from lp_live.cli import main
out = []
for argv in {cases!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = main(argv + ["--weights", "synthetic", "--camera", "missing.mp4"])
        except SystemExit as e:
            rc = e.code
    out.append([argv, rc, err.getvalue()])
print(json.dumps({{"results": out, "torch": "torch" in sys.modules}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for argv, rc, err in report["results"]:
        assert rc == 2, (argv, rc, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("lp-live: error: "), (argv, err)
        assert "Traceback" not in err
    assert not report["torch"], "torch was imported before the options were checked"


def test_all_problems_of_a_file_and_flags_in_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("engine:\n  mode: turbo\n  precision: fp64\nface:\n  box_smoothing: 7\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, {"engine.input_size": 100, "stream.fps": float("nan")})
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("engine.mode", "turbo", "engine.precision", "face.box_smoothing", "--input-size", "--fps",
                 "128 | 256 | 384 | 512"):
        assert part in msg, msg


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("engine:\n  mode: [\n  x: : y\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:3:\d+: not valid YAML"):
        load_config(path)


def test_import_config_pulls_in_neither_torch_nor_engines():
    code = "import sys, lp_live.core.config; print(sorted(m for m in sys.modules if m == 'torch' or "\
           "m.startswith('lp_live.engine') or m.startswith('lp_live.models')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_packaged_default_yaml_is_generated_from_the_declarations():
    shipped = (REPO / "lp_live" / "data" / "default.yaml").read_text()
    assert shipped == default_yaml(), "run: python -m lp_live.core.config yaml > lp_live/data/default.yaml"
    assert load_config() == Config()


def test_readme_option_table_is_generated_from_the_declarations():
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- options:start -->\n", "<!-- options:end -->"
    assert start in readme and end in readme
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == options_table(), "run: python -m lp_live.core.config table (and paste it into README.md)"


def test_version_and_one_line_usage_error():
    proc = subprocess.run([sys.executable, "-m", "lp_live.cli", "--version"], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == f"lp-live {__version__}"
    for argv in (["--bogus"], ["bench", "--frames", "x"], ["doctor", "--nope"]):
        proc = subprocess.run([sys.executable, "-m", "lp_live.cli", *argv], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "--help" in proc.stderr  # the hint


def test_every_flag_has_a_description(monkeypatch):
    import argparse

    from lp_live import cli

    parsers = []
    real = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        parsers.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    for command in ([], ["bench"], ["download-weights"], ["doctor"]):
        with pytest.raises(SystemExit):
            cli.main(command)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", real)
    assert len(parsers) == 4
    for p in parsers:
        for action in p._actions:
            assert action.help and action.help.strip(), f"{p.prog} {action.option_strings or action.dest}"
    run_help = parsers[0].format_help()
    assert "--no-compile" in run_help and "{128,256,384,512}" in run_help
    bench_weights = next(a for a in parsers[1]._actions if "--weights" in a.option_strings)
    assert "default: synthetic" in bench_weights.help


def test_a_tiny_source_photo_is_one_line(tmp_path, capsys):
    import cv2
    import numpy as np

    from lp_live.cli import main

    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((1, 1, 3), np.uint8))
    assert main(["--source", str(tiny), "--weights", "synthetic", "--camera", "x.mp4", "--output",
                 str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err
    assert "1x1 pixels" in err and len(err.strip().splitlines()) == 1


def test_requests_that_cannot_be_honoured_warn_and_show_on_the_hud():
    import torch

    from lp_live.face.detector import HaarFaceDetector
    from lp_live.session import unmet_requests
    from lp_live.stream.hud import HudInfo, hud_lines

    cfg = Config()
    assert unmet_requests(cfg, torch.device("cpu"), HaarFaceDetector()) == []
    cfg.animation.eye_retargeting = True
    cfg.engine.kernels = "on"
    warnings = unmet_requests(cfg, torch.device("cpu"), HaarFaceDetector())
    assert len(warnings) == 2 and "landmark" in warnings[0] and "CUDA only" in warnings[1]
    info = HudInfo(mode="optimized", output_fps=None, inference_fps=None, latency_p50_ms=None, latency_p95_ms=None,
                   dropped=0, weights="synthetic", device="cpu", gpu=None, speed_ratio=None, modes=("optimized",),
                   paste_back=True, stitching=True, mirror=False, face_found=True, warnings=tuple(warnings))
    assert [line for line in hud_lines(info) if line.startswith("WARNING: ")] == [f"WARNING: {w}" for w in warnings]


def test_hotkeys_are_declared_once():
    from lp_live.stream.controls import KEYS
    from lp_live.stream.hotkeys import HOTKEYS, legend
    from lp_live.stream.hud import HELP_LINE

    assert legend() == HELP_LINE and set(KEYS) == {h.key for h in HOTKEYS}
    readme = (REPO / "README.md").read_text()
    for h in HOTKEYS:
        assert f"`{h.key}` {h.action}" in readme, h


def test_input_sizes_outside_the_working_set_are_refused_by_the_engine():
    from lp_live.engine.base import EngineBase

    with pytest.raises(ValueError, match="one of"):
        EngineBase(None, "cpu", input_size=192)


def test_the_device_and_retune_come_from_the_parsed_configuration(tmp_path, monkeypatch):
    """`engine.device` in a YAML file decides the CPU threading step as the flag does; bench's --retune reaches it."""
    from lp_live import cli
    from lp_live.core import cputune

    calls = []

    class Configured(Exception):
        pass

    def threading_step(*, retune=False, on_measure=None):
        calls.append(retune)
        raise Configured

    monkeypatch.setattr(cputune, "set_process_threading", threading_step)
    cuda, cpu = tmp_path / "cuda.yaml", tmp_path / "cpu.yaml"
    cuda.write_text("engine:\n  device: cuda\n")
    cpu.write_text("engine:\n  device: cpu\n")
    render = ["--weights", "synthetic", "--camera", str(tmp_path / "missing.mp4"), "--output", str(tmp_path / "o.mp4")]
    assert cli.main(["--config", str(cuda), *render]) == 2 and calls == []  # CUDA: no CPU threading step
    with pytest.raises(Configured):
        cli.main(["--config", str(cpu), *render])
    with pytest.raises(Configured):
        cli.main(["bench", "--config", str(cpu), "--retune"])
    with pytest.raises(Configured):
        cli.main(["bench", "--config", str(cuda), "--device", "cpu"])  # the flag overrides the file
    assert calls == [False, True, False]


def test_help_lists_the_commands_first_and_reads_plainly(capsys):
    """`lp-live --help` starts with the commands, one short line each; values read as PATH, N, PX."""
    from lp_live.cli import COMMANDS, main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    head = text.split("options:")[0]
    assert len(head.splitlines()) < 15
    for command in COMMANDS:
        assert any(line.strip().startswith(f"lp-live {command} ") for line in head.splitlines()), command
    assert "ENGINE." not in text and "STREAM." not in text and "SERVE." not in text
    assert "--weights PATH" in text and "--max-frames N" in text and "--size PX" in text
    for argv in (["serve", "--help"], ["bench", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "ENGINE." not in capsys.readouterr().out


def test_a_mistyped_command_gets_a_suggestion(capsys):
    from lp_live.cli import main

    assert main(["serv"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean `lp-live serve`?" in err
    assert main(["frobnicate"]) == 2 and "did you mean" not in capsys.readouterr().err
