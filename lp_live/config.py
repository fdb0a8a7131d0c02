"""Run configuration: dataclasses loaded from one YAML file (configs/default.yaml); CLI flags override.

Each option is declared once, here. Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .engine.base import AnimateOptions
from .errors import UserError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


class ConfigError(UserError):
    """A configuration file or value that cannot be used."""


@dataclass
class EngineConfig:
    mode: str = "optimized"  # baseline | optimized
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (optimized engine only)
    input_size: int = 256  # network input side; LivePortrait was trained at 256
    weights: str | None = None  # directory of the official files, "synthetic", or None for the cache
    compile: bool = True  # torch.compile the optimized per-frame path
    cuda_graph: bool = True  # capture the optimized per-frame path as a CUDA graph (CUDA only)
    kernels: bool = True  # fused Triton warping kernels in the optimized engine (CUDA with triton only)

    def optimized_kwargs(self) -> dict:
        """Keyword arguments of `OptimizedEngine` from this configuration."""
        return {"precision": self.precision, "compile": self.compile, "cuda_graph": self.cuda_graph,
                "kernels": None if self.kernels else False}  # None: on wherever the kernels can run


@dataclass
class AnimationConfig(AnimateOptions):
    """The keypoint options (`AnimateOptions`: stitching, retargeting, ...) plus paste-back and smoothing."""

    paste_back: bool = True
    smoothing: bool = True  # One-Euro filter on the driving motion (live use)
    smoothing_min_cutoff: float = 1.0  # Hz; lower = smoother when still
    smoothing_beta: float = 0.5  # speed coefficient; higher = less lag when moving

    def options(self) -> AnimateOptions:
        return AnimateOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(AnimateOptions)})


@dataclass
class FaceConfig:
    redetect_every: int = 10  # full-frame detection at least every N driving frames
    box_smoothing: float = 0.5  # exponential smoothing of the driving face box (0 = none)
    crop_driving: bool = True  # crop the driving frame around the face (webcams are not face crops)


@dataclass
class StreamConfig:
    sink: list[str] = field(default_factory=lambda: ["auto"])  # auto | virtualcam | window | file | null
    size: int | None = None  # output frame side in pixels (None: the engine's output size)
    fps: float | None = None  # output/virtual camera frame rate (None: the input's)
    hud: bool = True
    hud_on_virtualcam: bool = False
    mirror: bool = False
    pace: bool = True  # play a video file used as a camera at its own frame rate
    calibrate_frames: int = 3  # frames per mode for the baseline/optimized speed ratio at start
    in_flight: int = 2  # frames between submit and finish: 2 overlaps host and device work, 1 runs one at a time


@dataclass
class Config:
    engine: EngineConfig = field(default_factory=EngineConfig)
    animation: AnimationConfig = field(default_factory=AnimationConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if origin is list:
        if not isinstance(value, list):
            value = [value]
        return [_coerce(args[0], v, where) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if tp is int and not float(value).is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return tp(value)
    if tp is str:
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value or {}, key)
        else:
            kwargs[name] = _coerce(tp, value, key)
    return cls(**kwargs)


def load_config(path: str | Path | None = None) -> Config:
    """Config from `path` (default: configs/default.yaml if present, else the built-in defaults)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        if path == DEFAULT_CONFIG:
            return Config()
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    return _build(Config, data, "")


def override(obj: Any, dotted: str, value: Any) -> None:
    """Set `section.key` on a Config (used by CLI flags), with the same type checks as the file."""
    section, _, name = dotted.partition(".")
    target = getattr(obj, section)
    hints = typing.get_type_hints(type(target))
    setattr(target, name, _coerce(hints[name], value, dotted))
