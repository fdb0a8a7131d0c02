"""The run configuration's declarations: every option once, as a dataclass field made with `opt`.

A field carries its default, its allowed values (a `Literal` type, or `low`/`high` bounds, or a
`check`), its help text and its command-line flag. `config.py` checks and loads values against
these declarations and derives the CLI flags, the packaged default.yaml and the README's option
table from them. This module imports neither torch nor the engines.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .modes import Mode, Precision

# Multiples of 128 only: F downsamples 4x and W's hourglass halves the feature grid 5 times
# (160, 192, 224 and 320 fail there). 256 is what LivePortrait was trained at.
InputSize = Literal[128, 256, 384, 512]
INPUT_SIZES: tuple[int, ...] = typing.get_args(InputSize)
Sink = Literal["auto", "virtualcam", "window", "file", "null"]
SINKS: tuple[str, ...] = typing.get_args(Sink)


def opt(default: Any, help: str, *, flag: str | None = "", low: float | None = None, high: float | None = None,
        check: Callable[[Any], str | None] | None = None, const: Any = None, allowed: str = "",
        metavar: str = "") -> Any:
    """A declared option: `default`, one-line `help`, CLI `flag` ("" for --field-name, None for none),
    inclusive bounds `low`/`high`, and `check` (value -> problem or None). `const`: the value of a
    Literal flag given without a value; `allowed`: the allowed values in words, where `check` decides;
    `metavar`: the flag's value in the help ("PATH"; default: N for numbers, the key's name else)."""
    meta = {"help": help, "flag": flag, "low": low, "high": high, "check": check, "const": const, "allowed": allowed,
            "metavar": metavar}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _device(value: str) -> str | None:
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return None
    return f"{value!r} is not a device; use auto, cpu, cuda or cuda:N"


def _not_empty(value: str | None) -> str | None:
    return "empty; pass a directory, 'synthetic', or leave it unset" if value == "" else None


@dataclass
class EngineConfig:
    mode: Mode = opt(
        "optimized", "engine to start with (baseline: eager, as the official code); `b` toggles live")
    device: str = opt("auto", "torch device; auto is cuda when PyTorch sees a GPU, else cpu", check=_device,
                      allowed="auto | cpu | cuda | cuda:N")
    precision: Precision = opt("auto", "optimized engine precision of W and G")
    force_precision: bool = opt(False, "run an explicit bf16/fp16 precision even on a CPU that only emulates it "
                                "(hundreds of times slower; refused otherwise)")
    input_size: InputSize = opt(
        256, "network input side; LivePortrait was trained at 256 (the output is twice this)")
    weights: str | None = opt(None, "official weights directory, 'synthetic' (no download, not a trained face), "
                              "or null for the download cache", check=_not_empty, metavar="PATH")
    wait_for_optimized: bool = opt(
        False, "mode optimized: wait for it to compile before the first frame (default: animate with the baseline "
        "engine meanwhile and switch when it is ready)")
    compile: bool = opt(True, "torch.compile the optimized per-frame path")
    cuda_graph: bool = opt(True, "replay the optimized per-frame path as CUDA graphs (CUDA only)")
    kernels: Literal["auto", "on", "off"] = opt(
        "auto", "fused Triton warping kernels: auto uses them on CUDA with triton; on warns where they cannot run",
        flag="--triton-kernels", const="on")
    rewrite_plan: Literal["measured", "default"] = opt(
        "measured", "optimized engine's CPU rewrites: measured keeps each only where it beats its absence on this "
        "CPU's instruction set (seconds, once; cached); default takes the committed table")

    def optimized_kwargs(self) -> dict:
        """Keyword arguments of `OptimizedEngine` from this configuration."""
        return {"precision": self.precision, "compile": self.compile, "cuda_graph": self.cuda_graph,
                "kernels": None if self.kernels == "auto" else self.kernels == "on",  # None: wherever they can run
                "rewrite_plan": self.rewrite_plan}


@dataclass
class AnimateOptions:
    """How driving motion maps onto the source; may be changed between frames (hotkeys).

    The defaults are the official CLI's: relative motion, stitching, expression-friendly
    rescaling, no lip normalisation, no eye/lip retargeting, multiplier 1.
    """

    stitching: bool = opt(True, "stitching MLP: keeps the shoulders still under head motion; `s` toggles live")
    expression_friendly: bool = opt(True, "rescale the driving expression to the source's (the official default)")
    normalize_lip: bool = opt(False, "close the source's open mouth before animating")
    eye_retargeting: bool = opt(False, "drive the eyes from landmark ratios (needs landmark.onnx and onnxruntime)")
    lip_retargeting: bool = opt(False, "drive the lips from landmark ratios (needs landmark.onnx and onnxruntime)")
    multiplier: float = opt(1.0, "scale of the driving motion", low=0.0, high=10.0)


@dataclass
class AnimationConfig(AnimateOptions):
    """The keypoint options (`AnimateOptions`: stitching, retargeting, ...) plus paste-back and smoothing."""

    paste_back: bool = opt(True, "paste the animated face back into the full photo; `p` toggles live")
    smoothing: bool = opt(True, "One-Euro filter on the driving motion")
    smoothing_min_cutoff: float = opt(1.0, "One-Euro minimum cutoff in Hz; lower is smoother when still",
                                      low=0.01, high=100.0)
    smoothing_beta: float = opt(0.5, "One-Euro speed coefficient; higher is less lag when moving", low=0.0, high=100.0)

    def options(self) -> AnimateOptions:
        return AnimateOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(AnimateOptions)})


@dataclass
class FaceConfig:
    redetect_every: int = opt(10, "full-frame face detection at least every N driving frames", low=1, high=10000)
    box_smoothing: float = opt(0.5, "exponential smoothing of the driving face box (0 = none)", low=0.0, high=0.99)
    crop_driving: bool = opt(True, "crop driving frames around the face (off for videos that are already face crops)")


@dataclass
class StreamConfig:
    sink: list[Sink] = opt(
        ["auto"], "live outputs, several allowed; auto = virtual camera and preview window where they exist")
    size: int | None = opt(None, "output frame side in pixels (longer side); null = the engine's output",
                           low=64, high=4096)
    fps: float | None = opt(None, "live output frame rate; null = the input's", low=1.0, high=240.0)
    hud: bool = opt(True, "draw the HUD (FPS, latency, engine) on the preview; `h` toggles live")
    hud_on_virtualcam: bool = opt(False, "draw the HUD on the virtual camera too")
    mirror: bool = opt(False, "mirror the camera (selfie view); `m` toggles live")
    pace: bool = opt(True, "play a video file used as a camera at its own frame rate")
    calibrate_frames: int = opt(0, "frames per engine timed after the first animated frame for the live speed "
                                "ratio (0: measured as you toggle with `b`)", low=0, high=100)
    in_flight: int = opt(2, "frames between submit and finish: 2 prepares the next frame while the device runs "
                         "this one, 1 runs one frame at a time", low=1, high=2)
    reconnect_s: float = opt(30.0, "a camera or live stream that stops is opened again (backoff 0.5 s to 5 s) for "
                             "up to this many seconds, then the run ends as 'camera lost'; 0: end at once",
                             low=0.0, high=3600.0)


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else f"{value} is not a TCP port; use 1..65535 (0: any free port)"


@dataclass
class ServeConfig:
    """`lp-live serve`: the browser page, its HTTP API and its limits (see the README's "Serve" section)."""

    host: str = opt("127.0.0.1", "address to listen on; anything but loopback needs an access token")
    port: int = opt(8080, "TCP port to listen on (0: any free port)", check=_port, allowed="0..65535")
    token: str | None = opt(None, "access token for the page, the API and the offer; null on a non-loopback "
                            "host: one is generated and printed once")
    cert: str | None = opt(None, "TLS certificate (PEM) for HTTPS; browsers give the camera only to HTTPS "
                           "pages or localhost", metavar="PATH")
    key: str | None = opt(None, "TLS private key (PEM) matching --cert", metavar="PATH")
    max_sessions: int = opt(4, "most streams animated at once; more get 'server full' (503)", low=1, high=256)
    max_upload_mb: float = opt(10.0, "largest source photo upload in MB", low=0.01, high=200.0)
    max_pixels: int = opt(25_000_000, "largest source photo in pixels (width x height), checked before decoding",
                          low=4096, high=200_000_000)
    max_sdp_kb: int = opt(64, "largest WebRTC offer in KB", low=1, high=1024)
    max_sources: int = opt(64, "uploaded photos kept (the oldest unused one is forgotten first)", low=1, high=10000)
    idle_timeout_s: float = opt(30.0, "close a stream that sent no frame for this many seconds",
                                low=1.0, high=86400.0)
    photo_side: int = opt(1280, "longer side of a source photo after upload (the output size with paste-back)",
                          low=128, high=4096)


@dataclass
class Config:
    engine: EngineConfig = field(default_factory=EngineConfig)
    animation: AnimationConfig = field(default_factory=AnimationConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config))
RUN_SECTIONS: tuple[str, ...] = tuple(s for s in SECTIONS if s != "serve")  # the flags of `lp-live` itself
