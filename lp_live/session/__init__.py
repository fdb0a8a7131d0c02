"""The per-frame path shared by the desktop app and the server, and the desktop animator built on it.

    photo.py    source photos: read, fitted, face found and cropped, prepared once per engine
    driving.py  one driving stream: tracker, filter, anchor, options, mirror, paste-back, counters
    step.py     the frames of N streams through one engine: one motion extraction, one engine call
    engines.py  one engine per mode, built on first use
    animator.py the desktop animator: one stream, its photos, the engines, submit/finish
    build.py    all of it from a run configuration
"""

from .animator import AnimatedFrame, Animator, PendingFrame
from .build import (
    build_animator,
    create_driving_detector,
    create_smoother,
    engine_factory,
    load_models,
    resolve_device,
    unmet_requests,
)
from .driving import DrivingInput, DrivingStream
from .engines import EnginePool, warm_frame, warm_up
from .photo import (
    DEFAULT_SOURCE,
    MIN_SOURCE_SIDE,
    InputError,
    NoFaceError,
    SourcePhoto,
    face_ratios,
    fit_source,
    load_photo,
    read_image,
)
from .step import Job, Outcome, finish, launch

__all__ = [
    "DEFAULT_SOURCE",
    "MIN_SOURCE_SIDE",
    "AnimatedFrame",
    "Animator",
    "DrivingInput",
    "DrivingStream",
    "EnginePool",
    "InputError",
    "Job",
    "NoFaceError",
    "Outcome",
    "PendingFrame",
    "SourcePhoto",
    "build_animator",
    "create_driving_detector",
    "create_smoother",
    "engine_factory",
    "face_ratios",
    "finish",
    "fit_source",
    "launch",
    "load_models",
    "load_photo",
    "read_image",
    "resolve_device",
    "unmet_requests",
    "warm_frame",
    "warm_up",
]
