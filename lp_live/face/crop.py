"""Square face crops with the official LivePortrait geometry (`src/utils/crop.py`).

The crop side is `scale` times the larger side of the face's landmark box, measured in a frame whose
y axis runs from the eyes' midpoint to the lip centre; the centre is that box's centre moved by
`vy_ratio * side` along y (negative: towards the forehead). With `rotate`, the crop is turned so that
axis is vertical. The official code ignores vx_ratio (crop_image never passes it on), so it has no
field here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .detector import Face

# A Haar box is not the landmark box the official scale and vy_ratio were tuned for: it starts at
# mid-forehead, reaches about the chin and spans ear to ear, while the 106-point box runs from the
# brow tops to the chin bottom and from cheek to cheek. We estimated the landmark box by hand (brow
# top, chin bottom, cheek contour at eye level; the landmark models are not available here) on three
# images and compared it with the Haar box (haarcascade_frontalface_default, OpenCV 4.14):
#
#   image                 Haar box side / centre    landmark box (w x h), centre   side ratio  centre dy / Haar side
#   s6.jpg (725x725)      202 / (358, 329)          160 x 156, (362, 365)          0.79        +0.18
#   d0.mp4 frame 0 (512)  301 / (256.5, 283.5)      220 x 224, (259, 324)          0.74        +0.13
#   astronaut.png (512)   95 / (224.5, 113.5)       82 x 91, (228, 133.5)          0.96        +0.21
#
# The ratio is max(w, h) of the landmark box over the Haar side; dy is the landmark-box centre below
# the Haar centre. dx was under 0.04 everywhere, so there is no x offset. We take 0.80 and +0.17,
# about the mean and close to s6.jpg's numbers: with them the s6.jpg source crop is 372 px centred at
# (358, 317) against 368 px at (362, 319) from the hand-measured landmark box.
HAAR_TO_LANDMARK_SIDE = 0.80
HAAR_TO_LANDMARK_DY = 0.17


@dataclass(frozen=True)
class CropConfig:
    """A crop's settings (official `crop_config.py` names).

    Args:
        dsize: side of the crop in pixels.
        scale: crop side over the larger side of the landmark box (larger: smaller face).
        vy_ratio: centre shift along the eye-to-mouth axis, in crop sides (negative: up).
        rotate: cancel the head roll (needs landmarks; a Haar face has none).
    """

    dsize: int = 512
    scale: float = 2.3
    vy_ratio: float = -0.125
    rotate: bool = True


SOURCE_CROP = CropConfig()
DRIVING_CROP = CropConfig(scale=2.2, vy_ratio=-0.1, rotate=False)


@dataclass
class Crop:
    """A face crop and its transforms (pixel centres at integer coordinates, as in OpenCV)."""

    image: np.ndarray  # (dsize, dsize, 3) RGB uint8
    input: np.ndarray  # (input_size, input_size, 3) RGB uint8, INTER_AREA from image
    M_o2c: np.ndarray  # (2, 3) float64 original -> crop
    M_c2o: np.ndarray  # (3, 3) float64 crop -> original

    @property
    def dsize(self) -> int:
        return self.image.shape[0]


def eye_lip_axis(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eyes' midpoint, lip centre) of 106 (InsightFace) or 203 (LivePortrait) landmarks."""
    if len(landmarks) == 106:
        eyes, lip = (33, 35, 40, 39, 87, 89, 94, 93), (52, 61)
    elif len(landmarks) == 203:
        eyes, lip = (0, 6, 12, 18, 24, 30, 36, 42), (48, 66)
    else:
        raise ValueError(f"expected 106 or 203 landmarks, got {landmarks.shape}")
    return landmarks[list(eyes)].mean(axis=0), landmarks[list(lip)].mean(axis=0)


def landmark_box(landmarks: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(centre, larger side, unit y axis) of the landmarks' box in the eye-to-mouth frame.

    As the official `parse_rect_from_landmark` with need_square: y runs from the eyes' midpoint to
    the lip centre, x = (y_y, -y_x) is perpendicular to it.
    """
    pts = landmarks.astype(np.float64)
    eyes, lip = eye_lip_axis(pts)
    uy = lip - eyes
    norm = np.linalg.norm(uy)
    uy = uy / norm if norm > 1e-3 else np.array([0.0, 1.0])
    ux = np.array([uy[1], -uy[0]])
    rot = np.stack([ux, uy])  # rows: the crop frame's axes in image coordinates
    mean = pts.mean(axis=0)
    local = (pts - mean) @ rot.T
    lo, hi = local.min(axis=0), local.max(axis=0)
    center = mean + ((lo + hi) / 2) @ rot
    return center, float((hi - lo).max()), uy


def haar_box(box: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre, side) of the landmark box that a Haar box stands for (see HAAR_TO_LANDMARK_*)."""
    w, h = box[2] - box[0], box[3] - box[1]
    side = float(max(w, h))
    center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2 + HAAR_TO_LANDMARK_DY * side])
    return center, HAAR_TO_LANDMARK_SIDE * side


def crop_transform(face: Face, config: CropConfig = SOURCE_CROP) -> np.ndarray:
    """The (2, 3) similarity transform from the original image to the crop.

    Uses the 106 landmarks when there are, else the 203, else the (Haar-calibrated) box.
    """
    landmarks = face.landmarks if face.landmarks is not None else face.landmarks203
    if landmarks is not None:
        center, side, uy = landmark_box(landmarks)
    else:
        center, side = haar_box(np.asarray(face.box, dtype=np.float64))
        uy = np.array([0.0, 1.0])
    size = config.scale * side
    center = center + uy * (config.vy_ratio * size)
    rot = np.stack([np.array([uy[1], -uy[0]]), uy]) if config.rotate else np.eye(2)
    s = config.dsize / size
    M = np.empty((2, 3))
    M[:, :2] = s * rot
    M[:, 2] = config.dsize / 2 - s * rot @ center
    return M


def crop_face(image_rgb: np.ndarray, face: Face, config: CropConfig = SOURCE_CROP, *, input_size: int = 256) -> Crop:
    """Crop `face` out of an RGB uint8 image: bilinear warp with a zero border, then INTER_AREA to `input_size`."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image_rgb.dtype} {image_rgb.shape}")
    M_o2c = crop_transform(face, config)
    image = cv2.warpAffine(
        image_rgb,
        M_o2c,
        (config.dsize, config.dsize),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    if input_size == config.dsize:
        net_input = image.copy()
    else:
        net_input = cv2.resize(image, (input_size, input_size), interpolation=cv2.INTER_AREA)
    M_c2o = np.linalg.inv(np.vstack([M_o2c, [0.0, 0.0, 1.0]]))
    return Crop(image=image, input=net_input, M_o2c=M_o2c, M_c2o=M_c2o)
