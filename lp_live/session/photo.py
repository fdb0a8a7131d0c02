"""Source photos: read, fitted, their face found and cropped once, for the desktop app and the server alike.

    photo = load_photo(read_image("me.jpg"), detector, input_size=256, device=device)
    state = photo.state(engine, "optimized")  # the engine's SourceState, prepared on first use

A photo without a face raises `NoFaceError` (exit 2 in the CLI, 422 in the server).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from ..core.errors import UserError
from ..engine import Engine, Ratios, SourceState
from ..face import SOURCE_CROP, Crop, Face, FaceDetector, PasteBack, crop_face
from ..motion.kinematics import eye_ratios, lip_ratio

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

DEFAULT_SOURCE: Traversable = resources.files("lp_live") / "data" / "astronaut.png"  # package data
MIN_SOURCE_SIDE = 64  # pixels; a face crop needs at least this much photo
MAX_SOURCE_SIDE = 1280  # the official source preparation's longer side


class InputError(UserError):
    """An input the user gave cannot be used; the message says what to do."""


class NoFaceError(InputError):
    """A source photo in which the face detector finds no face."""


def read_image(path: str | Path | Traversable) -> np.ndarray:
    """An image file (or package resource) as RGB uint8, or InputError naming the problem."""
    path = Path(path) if isinstance(path, str) else path
    if not path.is_file():
        raise InputError(f"source photo {path} not found; pass an existing image file with --source")
    try:
        data = np.frombuffer(path.read_bytes(), np.uint8)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"{path} is not an image OpenCV can read; use a JPEG or PNG photo")
    if min(image.shape[:2]) < MIN_SOURCE_SIDE:
        h, w = image.shape[:2]
        raise InputError(f"{path} is {w}x{h} pixels; a photo needs at least {MIN_SOURCE_SIDE} pixels on each side")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def fit_source(image: np.ndarray, max_side: int = MAX_SOURCE_SIDE) -> np.ndarray:
    """The official source preparation: longer side at most `max_side`, then even sides (for H.264)."""
    h, w = image.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        image = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_LINEAR)
        h, w = image.shape[:2]
    return np.ascontiguousarray(image[: h - h % 2, : w - w % 2])


def face_ratios(face: Face | None) -> Ratios | None:
    """Eye and lip openness (CPU tensors) from a face's 203-point landmarks, when the landmark model ran."""
    if face is None or face.landmarks203 is None:
        return None
    lmk = torch.as_tensor(face.landmarks203, dtype=torch.float32)[None]
    return Ratios(eye=eye_ratios(lmk), lip=lip_ratio(lmk))


def ratios_to(ratios: Ratios | None, device: torch.device) -> Ratios | None:
    """`ratios` on `device`, copied from pinned memory without blocking on CUDA: a blocking copy
    onto a busy CUDA stream would wait for the frames queued on it."""
    if ratios is None or ratios.eye.device == device:
        return ratios
    eye, lip = ratios.eye, ratios.lip
    if device.type == "cuda":
        eye, lip = eye.pin_memory(), lip.pin_memory()
    return Ratios(eye=eye.to(device, non_blocking=True), lip=lip.to(device, non_blocking=True))


# The face in a crop, as fractions of its side: the crop is 2.3 face boxes wide (`CropConfig.scale`),
# its centre 0.125 of a side above the face's (`vy_ratio`), so the face box is its central 1/2.3,
# shifted down by 0.125.
FACE_IN_CROP = (0.5 - 0.5 / 2.3, 0.625 - 0.5 / 2.3, 0.5 + 0.5 / 2.3, min(1.0, 0.625 + 0.5 / 2.3))


@dataclass(eq=False)
class SourcePhoto:
    """A source photo ready to animate: the fitted photo, its face crop (the engine input), its
    landmark ratios, its paste-back (built on first use) and its `SourceState` per engine mode.

    One photo may be animated by several driving streams (server sessions): what is prepared
    from it is shared by all of them; what belongs to a stream (its anchor) is not kept here.
    """

    image: np.ndarray  # RGB uint8, fitted by `fit_source`
    crop: Crop
    ratios: Ratios | None  # on `device`
    generated_size: int
    device: torch.device
    name: str = ""  # the server's id for it
    states: dict[str, SourceState] = field(default_factory=dict, repr=False)

    @property
    def input(self) -> np.ndarray:
        """The (S, S, 3) RGB uint8 face crop the engines take."""
        return self.crop.input

    @functools.cached_property
    def paster(self) -> PasteBack:
        """Built when a stream first pastes back: its tensors are tens of MB for a large photo."""
        return PasteBack(self.image, self.crop, generated_size=self.generated_size, device=self.device)

    def state(self, engine: Engine, mode: str) -> SourceState:
        """This photo prepared by `engine` (the engine of `mode`), once per mode."""
        state = self.states.get(mode)
        if state is None:
            state = self.states[mode] = engine.prepare_source(self.input, ratios=self.ratios)
        return state

    def still(self, paste_back: bool) -> np.ndarray:
        """The un-animated output: the photo (paste-back) or its crop at the generated size."""
        if paste_back:
            return self.image.copy()  # the sinks may draw on what they are given
        size = (self.generated_size, self.generated_size)
        return cv2.resize(self.crop.image, size, interpolation=cv2.INTER_AREA)

    def face_box(self, paste_back: bool) -> tuple[float, float, float, float]:
        """Where the face is in the output, (x0, y0, x1, y1) as fractions of its width and height:
        the crop's central part (`FACE_IN_CROP`), mapped into the photo with paste-back."""
        x0, y0, x1, y1 = FACE_IN_CROP
        if not paste_back:
            return FACE_IN_CROP
        side = self.crop.dsize
        corners = np.array([[x0 * side, y0 * side, 1], [x1 * side, y0 * side, 1], [x0 * side, y1 * side, 1],
                            [x1 * side, y1 * side, 1]]) @ self.crop.M_c2o[:2].T
        h, w = self.image.shape[:2]
        (px0, py0), (px1, py1) = corners.min(axis=0), corners.max(axis=0)
        return (max(0.0, px0 / w), max(0.0, py0 / h), min(1.0, px1 / w), min(1.0, py1 / h))

    def output_size(self, paste_back: bool) -> tuple[int, int]:
        """(width, height) of the frames animated from this photo."""
        if paste_back:
            return self.image.shape[1], self.image.shape[0]
        return self.generated_size, self.generated_size


def load_photo(image: np.ndarray, detector: FaceDetector, *, input_size: int, device: torch.device,
               max_side: int = MAX_SOURCE_SIDE, name: str = "") -> SourcePhoto:
    """A SourcePhoto from an RGB uint8 photo: fitted, its face found and cropped; NoFaceError without a face."""
    fitted = fit_source(image, max_side=max_side)
    face = detector.detect(fitted)
    if face is None:
        raise NoFaceError("no face found in the source photo; use a photo with one clear, frontal face")
    crop = crop_face(fitted, face, SOURCE_CROP, input_size=input_size)
    device = torch.device(device)
    return SourcePhoto(fitted, crop, ratios_to(face_ratios(face), device), 2 * input_size, device, name)
