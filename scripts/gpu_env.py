"""What a GPU check runs on, as JSON: GPU, driver, torch, triton, CUDA, python, commit, packages.

    python scripts/gpu_env.py OUT.json [--require-cuda]

Exits 2 when a package the check needs is missing, or (with --require-cuda) when torch sees
no CUDA device, so that scripts/gpu_check.sh stops before spending device time. The JSON is
written either way. Part of scripts/gpu_check.sh; run from the checkout with PYTHONPATH=.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

# what `lp-live bench` and the CUDA tests import (scipy: the anchor's hull volume in kinematics)
NEEDED = ("torch", "numpy", "cv2", "yaml", "scipy")
OPTIONAL = ("pytest", "av", "pyvirtualcam", "pynvml", "tqdm", "huggingface_hub")  # the benches run without these


def module_version(name: str) -> str | None:
    """The module's version string; None when it cannot be imported."""
    try:
        module = importlib.import_module(name)
    except Exception:  # a broken install fails in many ways; all mean "not usable here"
        return None
    return str(getattr(module, "__version__", "present"))


def nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML library, no driver, no GPU: ask nvidia-smi instead
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return smi.stdout.strip().splitlines()[0] if smi.stdout.strip() else None


def collect() -> dict[str, Any]:
    """The environment as a JSON-ready dict (nothing here raises for a missing part)."""
    import torch

    try:
        from lp_live.core.provenance import COMMIT_FILE, git_commit

        commit = git_commit()
        recorded = json.loads(COMMIT_FILE.read_text()) if COMMIT_FILE.is_file() else None
    except ImportError as e:  # a missing package, reported under "problems"
        commit, recorded = f"unknown (lp_live.tools.bench does not import: {e})", None
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}", "sms": props.multi_processor_count})
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": module_version("triton"),
        "driver": nvidia_driver(),
        "gpus": gpus,
        "git_commit": commit,
        "commit_file": recorded,
        "packages": {name: module_version(name) for name in (*NEEDED, *OPTIONAL) if name != "torch"},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="JSON file to write")
    p.add_argument("--require-cuda", action="store_true", help="exit 2 without a CUDA device (and triton)")
    args = p.parse_args(argv)
    missing = [name for name in NEEDED if module_version(name) is None]
    if "torch" in missing:
        env: dict[str, Any] = {"packages": {"torch": None}}
        problems = ["torch cannot be imported"]
    else:
        env = collect()
        problems = [f"missing package(s): {', '.join(missing)}"] if missing else []
        if args.require_cuda and not env["gpus"]:
            problems.append("torch sees no CUDA device")
        if args.require_cuda and env["triton"] is None:
            problems.append("triton is missing (the optimized engine's kernels need it on CUDA)")
    env["problems"] = problems
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(env, indent=2) + "\n")
    print(json.dumps(env, indent=2))
    for problem in problems:
        print(f"gpu_env: {problem}", file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
