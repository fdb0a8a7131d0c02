"""`lp-live doctor`: what this machine has for lp-live, and what to do about what it lacks.

`run_checks()` returns one `Check` per item (the package's own data files, torch, CUDA/GPU,
NVML, CPU threading, compile cache, weights, face models, video encoder, virtual camera,
display, cameras); `print_report()` prints them. Nothing here raises: a check that fails, even
unexpectedly, is reported as a failed check.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

TORCH_INSTALL = "https://pytorch.org/get-started/locally/"


@dataclass
class Check:
    """One line of the report. `required`: lp-live cannot run (or record) without it."""

    name: str
    ok: bool
    detail: str
    hint: str = ""
    required: bool = False


def check_torch() -> Check:
    try:
        import torch
    except ImportError as e:
        return Check("torch", False, f"not importable ({e})", f"pip install torch (see {TORCH_INSTALL})", True)
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    return Check("torch", True, f"{torch.__version__} ({build}), Python {sys.version.split()[0]}", required=True)


def _nvml_gpus() -> list[str] | None:
    """GPU names NVML sees, or None when NVML is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # ImportError or NVMLError (no driver): no NVML
        return None
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else name)
        return names
    finally:
        pynvml.nvmlShutdown()


def check_cuda() -> Check:
    import torch

    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(f"cuda:{i} {p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB)")
        return Check("cuda", True, "; ".join(gpus))
    nvml = _nvml_gpus()
    if torch.version.cuda is None and nvml:
        return Check("cuda", False, f"PyTorch is a CPU-only build but NVIDIA GPU(s) are present: {', '.join(nvml)}",
                     f"install a CUDA build of PyTorch ({TORCH_INSTALL}), e.g. pip install torch --index-url "
                     "https://download.pytorch.org/whl/cu128")
    if torch.version.cuda is not None:
        return Check("cuda", False, f"PyTorch is built for CUDA {torch.version.cuda} but sees no GPU",
                     "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES")
    return Check("cuda", False, "no CUDA GPU: lp-live runs on the CPU, far below real time",
                 f"on a machine with an NVIDIA GPU, install a CUDA build of PyTorch ({TORCH_INSTALL})")


def check_nvml() -> Check:
    try:
        import pynvml
    except ImportError:
        return Check("nvml", False, "pynvml not installed (the HUD shows no GPU memory/utilisation)",
                     "pip install nvidia-ml-py")
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return Check("nvml", False, f"NVML unavailable ({e}); the HUD shows no GPU memory/utilisation",
                     "install the NVIDIA driver (NVML comes with it); not needed without an NVIDIA GPU")
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        return Check("nvml", True, f"driver {driver}, {pynvml.nvmlDeviceGetCount()} GPU(s)")
    finally:
        pynvml.nvmlShutdown()


def check_weights(weights: str | os.PathLike | None = None) -> Check:
    from .models import SYNTHETIC, default_cache_dir
    from .models.checkpoint import CHECKPOINT_FILES, WeightsError, find_checkpoint_root, verify_checkpoint
    from .models.integrity import DamagedWeightsError

    if weights is not None and str(weights) == SYNTHETIC:
        return Check("weights", True, "synthetic (random; for tests, not a trained model)")
    where = Path(weights) if weights is not None else default_cache_dir()
    hint = "lp-live download-weights" if weights is None else f"lp-live download-weights {where}"
    try:
        root = find_checkpoint_root(where)
    except WeightsError as e:
        return Check("weights", False, str(e).split(";")[0],
                     f"{hint} (about 500 MB), or pass --weights DIR with the official files; "
                     "--weights synthetic runs without them (random output)")
    try:
        _, digests = verify_checkpoint(root)
    except WeightsError as e:  # damaged, truncated, code inside, wrong keys
        what = "fetches the damaged file again" if isinstance(e, DamagedWeightsError) else "fetches the official files"
        return Check("weights", False, str(e).split(";")[0], f"{hint} ({what}), or pass --weights DIR with "
                     "the official files; --weights synthetic runs without them (random output)")
    size = sum((root / f).stat().st_size for f in CHECKPOINT_FILES if (root / f).is_file())
    checked = "SHA-256 as downloaded" if digests else "no digest manifest, so shapes and values only"
    return Check("weights", True, f"{root} ({size / 1e6:.0f} MB, official layout, checked: {checked})")


def check_package_data() -> Check:
    """The package's own files: the default config (loaded and checked) and the default portrait."""
    from .core.config import DEFAULT_CONFIG, load_config
    from .session import DEFAULT_SOURCE, read_image

    try:
        load_config()
        h, w = read_image(DEFAULT_SOURCE).shape[:2]
    except Exception as e:  # ConfigError, InputError: a broken install
        return Check("package data", False, " ".join(str(e).split()),
                     "reinstall lp-live (pip install --force-reinstall lp-live)", True)
    return Check("package data", True, f"{DEFAULT_CONFIG.name} valid, {DEFAULT_SOURCE.name} {w}x{h}", required=True)


def check_face_models(weights: str | os.PathLike | None = None) -> Check:
    from .face.detector import INSIGHTFACE_DETECTOR, INSIGHTFACE_LANDMARKS, LIVEPORTRAIT_LANDMARKS
    from .models import SYNTHETIC, default_cache_dir
    from .models.checkpoint import WeightsError, find_checkpoint_root

    if weights is not None and str(weights) == SYNTHETIC:
        return Check("face models", True, "not used with synthetic weights (OpenCV's detector)")
    try:
        base = find_checkpoint_root(weights if weights is not None else default_cache_dir()).parent
    except WeightsError:
        return Check("face models", False, "no weights folder, so OpenCV's detector (no landmarks)",
                     "lp-live download-weights also fetches the InsightFace and landmark models")
    missing = [f for f in (INSIGHTFACE_DETECTOR, INSIGHTFACE_LANDMARKS, LIVEPORTRAIT_LANDMARKS)
               if not (base / f).is_file()]
    if missing:
        return Check("face models", False, f"missing {', '.join(missing)} in {base}: OpenCV's detector, no landmarks",
                     "lp-live download-weights fetches them")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return Check("face models", False, f"found in {base} but onnxruntime is not installed",
                     "pip install 'lp-live[onnx]' (or pip install onnxruntime-gpu on CUDA)")
    return Check("face models", True, f"InsightFace + 203-point landmarks in {base}")


def check_face_detector() -> Check:
    from .face import create_detector

    try:
        detector = create_detector(None)
    except Exception as e:  # e.g. an OpenCV build without the Haar cascade
        return Check("face detector", False, f"OpenCV's face detector cannot be created ({type(e).__name__}: {e})",
                     "pip install opencv-python (an OpenCV build with objdetect's CascadeClassifier)", True)
    return Check("face detector", True, f"{type(detector).__name__} (the fallback when the face models are absent)",
                 required=True)


def check_cpu_threading() -> Check:
    """The measured CPU threading and per-network precision for this machine (informational)."""
    from .core import cputune, usercache

    cached = cputune.read_cache(cputune.machine_key())
    if cached is None:
        return Check("cpu threading", True, "not measured yet: the first lp-live run or bench measures it "
                     "(a few seconds, cached)")
    choice, entry = cached
    user = ", ".join(f"{k}={v}" for k, v in cputune.threading_env().items())
    detail = f"{choice.label} (measured {entry.get('measured', '?')}" + (f"; your {user} wins" if user else "") + ")"
    precisions = [e["precisions"] for k, e in (usercache.cache_entries(cputune.PRECISION_CACHE_NAME) or {}).items()
                  if k.startswith(cputune.machine_key()) and isinstance(e, dict) and "precisions" in e]
    if precisions:
        detail += "; CPU precision " + ", ".join(f"{n} {p}" for n, p in precisions[-1].items())
    return Check("cpu threading", True, detail + "; re-measure: lp-live bench --retune")


def check_compile_cache() -> Check:
    """The compiled engines kept between runs: inductor's cache folders, one per machine and torch
    version (count of compiled graphs, size, keys; informational: the first optimized run fills them)."""
    from .engine import persist

    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    found = [e for e in persist.entries(Path(env).parent) if e["path"] == Path(env)] if env else persist.entries()
    where = Path(env) if env else persist.cache_root()
    if not any(e["bytes"] for e in found):
        return Check("compile cache", True, f"{where} (empty: the first optimized run compiles, about a minute "
                     "on a CPU; later runs load what it compiled)")
    total = sum(e["bytes"] for e in found)
    parts = []
    for e in reversed(found):  # most recently used first
        key = e["key"]
        device = (key.get("gpu") and f"{key['gpu']} (sm {key.get('capability', '?')})") or key.get("cpu", "?")
        used = datetime.date.fromtimestamp(e["used"]).isoformat()
        parts.append(f"{e['path'].name}: {e['graphs']} graphs, {e['bytes'] / 1e6:.0f} MB, torch "
                     f"{key.get('torch', '?')}, {device} [{key.get('features', '')}], used {used}")
    bound = "" if env else f" of at most {persist.max_bytes() / 1e9:.1f} GB"
    return Check("compile cache", True, f"{where} ({total / 1e6:.0f} MB{bound}; delete it to compile afresh): "
                 + "; ".join(parts))


def check_encoder() -> Check:
    import av

    try:
        av.Codec("libx264", "w")
    except Exception as e:  # av raises UnknownCodecError (a ValueError) or FFmpegError
        return Check("video encoder", False, f"PyAV has no libx264 encoder ({e}); --output and rendering fail",
                     "pip install --force-reinstall av (the PyPI wheels include libx264)", True)
    return Check("video encoder", True, f"PyAV {av.__version__} with libx264 (H.264)", required=True)


def check_virtual_camera() -> Check:
    from .stream import platform

    ok, detail = platform.virtual_camera_status()
    if ok:
        return Check("virtual camera", True, detail)
    if not sys.platform.startswith("linux"):
        return Check("virtual camera", False, detail, platform.OBS_HINT)
    if platform.v4l2loopback_devices():  # devices exist but cannot be opened for writing
        what, _, todo = detail.partition("; ")
        return Check("virtual camera", False, what, todo)
    state = "the v4l2loopback module is loaded but has no device" if platform.v4l2loopback_loaded() \
        else "the v4l2loopback module is not loaded"
    return Check("virtual camera", False, f"no v4l2loopback device: {state}",
                 f"{platform.MODPROBE} (Debian/Ubuntu: sudo apt install v4l2loopback-dkms first); "
                 "without it use the preview window or --output")


def check_display() -> Check:
    from .stream import platform

    ok, detail = platform.display_status()
    return Check("display", ok, detail, "" if ok else
                 "no preview window: hotkeys are read from the terminal; use the virtual camera or --output")


def check_cameras() -> Check:
    from .stream import platform

    found = platform.list_cameras()
    if found:
        return Check("cameras", True, "OpenCV camera index(es) " + ", ".join(map(str, found)))
    return Check("cameras", False, f"no camera answers at indices 0..{platform.MAX_CAMERA_INDEX - 1}",
                 "connect a webcam (and close programs using it), or drive from a file: --camera video.mp4")


def run_checks(weights: str | os.PathLike | None = None, *, cameras: bool = True) -> list[Check]:
    """Every check, in report order. `weights`: as --weights (None: the download cache)."""
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("package data", check_package_data),
        ("torch", check_torch),
        ("cuda", check_cuda),
        ("nvml", check_nvml),
        ("cpu threading", check_cpu_threading),
        ("compile cache", check_compile_cache),
        ("weights", lambda: check_weights(weights)),
        ("face models", lambda: check_face_models(weights)),
        ("face detector", check_face_detector),
        ("video encoder", check_encoder),
        ("virtual camera", check_virtual_camera),
        ("display", check_display),
    ]
    if cameras:
        checks.append(("cameras", check_cameras))
    results = []
    for name, fn in checks:
        try:
            results.append(fn())
        except Exception as e:  # a check must never take the report down with it
            results.append(Check(name, False, f"check failed: {type(e).__name__}: {e}", "please report this"))
    return results


def print_report(checks: list[Check], file: TextIO | None = None) -> bool:
    """Print the report; returns True when every required check passed."""
    out = file if file is not None else sys.stdout
    width = max((len(c.name) for c in checks), default=0)
    for c in checks:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "--  ")
        out.write(f"{mark}  {c.name:<{width}}  {c.detail}\n")
        if not c.ok and c.hint:
            out.write(f"      {'':<{width}}  -> {c.hint}\n")
    ok = all(c.ok for c in checks if c.required)
    weights = next((c for c in checks if c.name == "weights"), None)
    if not ok:
        out.write("lp-live cannot run yet: fix the FAIL lines\n")
    elif weights is not None and not weights.ok:
        out.write("lp-live can run now with --weights synthetic (no download; not a trained face); "
                  "lp-live download-weights for real output\n")
    else:
        out.write("lp-live can run\n")
    return ok
