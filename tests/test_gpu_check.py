"""scripts/gpu_check.sh and prepare_gpu_run.sh, rehearsed on the CPU so that no path, import or
argument error costs device time: the dry run takes the GPU run's steps (tiny, PyAV blocked as on
the GPU machine) and must write every file the GPU run writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lp_live.core import provenance
from lp_live.tools import bench

REPO = Path(__file__).resolve().parents[1]
STEPS = ["env", "bench-b1", "bench-batch", "cuda-tests", "kernels", "profile"]
JSON_FILES = ["env.json", "bench-b1.json", "bench-batch.json", "kernels.json", "summary.json"]
BATCH = 2  # the dry run's own default: batch > 1 goes through the script before a GPU's batch 8 does


@pytest.fixture(scope="module")
def dry_run(kit, assets, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Runs the dry run once (it needs the kit and assets, as the GPU run does)."""
    out = tmp_path_factory.mktemp("gpu-check")
    # the script stops itself within its budget; the timeout is only a backstop
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_BATCH=str(BATCH), GPU_CHECK_BUDGET="480")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", str(out)], env=env,
                          capture_output=True, text=True, timeout=560)
    return out, proc


def test_dry_run_passes_every_step(dry_run):
    out, proc = dry_run
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == STEPS, proc.stdout[-3000:]
    failed = [s for s in summary["steps"] if s["status"] != "ok"]
    assert not failed and proc.returncode == 0, (failed, proc.stdout[-6000:])
    assert summary["ok"] is True and summary["mode"] == "dry-run" and summary["batch"] == BATCH
    assert all(s["seconds"] > 0 for s in summary["steps"])


def test_dry_run_writes_every_file(dry_run):
    out, _ = dry_run
    for name in JSON_FILES:
        json.loads((out / name).read_text())
    suite = ET.parse(out / "cuda-tests.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) > 0 and int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0
    assert "one optimized step" in (out / "profile.txt").read_text()
    assert "== summary" in (out / "gpu_check.log").read_text()
    # a device run brings back at most 8 files
    assert sorted(p.name for p in out.iterdir()) == sorted([*JSON_FILES, "cuda-tests.xml", "profile.txt",
                                                            "gpu_check.log"])


def test_dry_run_records_the_environment_without_pyav(dry_run):
    out, _ = dry_run
    env = json.loads((out / "env.json").read_text())
    assert env["problems"] == [] and env["gpus"] == []
    assert env["packages"]["av"] is None and env["packages"]["pyvirtualcam"] is None  # blocked, as there
    assert env["torch"] and env["python"] and env["git_commit"] != "unknown"
    b1 = json.loads((out / "bench-b1.json").read_text())
    assert b1["meta"]["git_commit"] == env["git_commit"]
    assert "synthetic driving frames" in b1["meta"]["inputs"]  # no PyAV: d0.mp4 not read
    assert b1["meta"]["compiled"]["graphs"] == 0  # compile is off in the dry run
    assert set(b1["modes"]) == {"baseline", "optimized"} and b1["modes"]["optimized"]["stages_ms"]
    assert json.loads((out / "bench-batch.json").read_text())["meta"]["batch"] == BATCH


def test_missing_kit_stops_at_once(tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "scripts", checkout / "scripts")
    proc = subprocess.run(["bash", str(checkout / "scripts" / "gpu_check.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "scripts/prepare_gpu_run.sh" in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "summary.json").exists()  # nothing ran


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_prepare_copies_the_kit_and_records_the_commit(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    shared = tmp_path / "kit"
    for name in ("reference/weights.py", "assets/s6.jpg", "assets/d0.mp4"):
        (shared / name).parent.mkdir(parents=True, exist_ok=True)
        (shared / name).write_text(name)
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "scripts", checkout / "scripts")
    _git(checkout, "init", "-q")
    _git(checkout, "add", "scripts")
    _git(checkout, "commit", "-q", "-m", "scripts")
    head = _git(checkout, "rev-parse", "HEAD")

    def prepare() -> dict:
        subprocess.run(["bash", str(checkout / "scripts" / "prepare_gpu_run.sh"), str(shared)], check=True,
                       capture_output=True, text=True, timeout=60)
        return json.loads((checkout / "shared" / "commit.json").read_text())

    assert prepare()["commit"] == head and prepare()["dirty"] is False
    assert (checkout / "shared" / "assets" / "d0.mp4").read_text() == "assets/d0.mp4"
    (checkout / "scripts" / "gpu_env.py").write_text("# changed\n")
    recorded = prepare()
    assert recorded["dirty"] is True

    # where .git did not travel, the bench reads the commit from that file
    copied = tmp_path / "copied"
    shutil.copytree(checkout, copied, ignore=shutil.ignore_patterns(".git"))
    monkeypatch.setattr(provenance, "REPO", copied)
    monkeypatch.setattr(provenance, "COMMIT_FILE", copied / "shared" / "commit.json")
    assert bench.git_commit() == f"{head}-dirty"  # the bench's figures carry it
    (copied / "shared" / "commit.json").unlink()
    assert bench.git_commit() == "unknown"
