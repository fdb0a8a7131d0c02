"""Face detection for stills and video: the `Face` record, the detector interface and OpenCV's Haar cascade.

`detect()` finds the largest face in one image. `track()` is for a stream of frames: it searches a
small region around the last face (cheap), re-detects over the whole frame when that fails or every
`redetect_every` frames, and smooths the box (and landmarks) exponentially over time. A frame with
no face gives None; the caller keeps the last good motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
# Files of the official cropper, relative to the weights directory (as `lp-live download-weights` lays them out).
INSIGHTFACE_DETECTOR = "insightface/models/buffalo_l/det_10g.onnx"
INSIGHTFACE_LANDMARKS = "insightface/models/buffalo_l/2d106det.onnx"
LIVEPORTRAIT_LANDMARKS = "liveportrait/landmark.onnx"


@dataclass
class Face:
    """One face in image pixels.

    `box` is the detector's own box: a Haar box has a different extent than a landmark box, which
    `crop_face` accounts for. `score` is the detector's confidence (Haar: the last stage's sum, not a
    probability; InsightFace: a probability).
    """

    box: np.ndarray  # (4,) float x0, y0, x1, y1
    score: float
    landmarks: np.ndarray | None = None  # (106, 2) InsightFace 2d106det points, when a landmark model ran
    landmarks203: np.ndarray | None = None  # (203, 2) LivePortrait landmark.onnx points, for eye/lip ratios

    @property
    def side(self) -> float:
        """The larger side of the box."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def center(self) -> np.ndarray:
        return (self.box[:2] + self.box[2:]) / 2


@runtime_checkable
class FaceDetector(Protocol):
    """What the pipeline needs from a face detector. Images are RGB uint8 (H, W, 3)."""

    def detect(self, image_rgb: np.ndarray) -> Face | None:
        """The largest face of one still image, or None."""
        ...

    def track(self, image_rgb: np.ndarray) -> Face | None:
        """The face of the next video frame, smoothed over time, or None when this frame has none."""
        ...

    def reset(self) -> None:
        """Forget the tracked face (a new video, or a cut)."""
        ...


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _area(face: Face) -> float:
    return float((face.box[2] - face.box[0]) * (face.box[3] - face.box[1]))


class TrackingDetector:
    """The detect/track/reset policy over two searches that subclasses provide.

    Subclasses implement `_detect_all(image)` (every face in the whole image) and
    `_detect_near(image, last)` (the face near the last one, cheaper; may return None).

    Args:
        redetect_every: search the whole frame every this many tracked frames even when tracking
            holds, to pick up a larger face; 0 or 1 searches the whole frame every time.
        smoothing: weight of the previous smoothed face in the exponential smoothing (0: none).
        snap_iou: a new face overlapping the smoothed one less than this replaces it without
            smoothing (a re-detection elsewhere should not glide across the frame).
    """

    # whether a periodic whole-frame search that finds nothing may fall back to the near search
    # (right for a coarse whole-frame search; wrong where the near search cannot tell "no face")
    near_after_full_miss = True

    def __init__(self, *, redetect_every: int = 10, smoothing: float = 0.5, snap_iou: float = 0.3) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.redetect_every = redetect_every
        self.smoothing = smoothing
        self.snap_iou = snap_iou
        self.reset()

    def reset(self) -> None:
        self._last: Face | None = None  # the last raw face found, where the next search starts
        self._smoothed: Face | None = None
        self._since_full = 0
        self.full_searches = 0  # counters, for tests and logs
        self.near_searches = 0

    def _detect_all(self, image_rgb: np.ndarray, *, still: bool) -> list[Face]:
        raise NotImplementedError

    def _detect_near(self, image_rgb: np.ndarray, last: Face) -> Face | None:
        raise NotImplementedError

    def detect_all(self, image_rgb: np.ndarray) -> list[Face]:
        """Every face of one still image, in no particular order."""
        _check_image(image_rgb)
        return self._detect_all(image_rgb, still=True)

    def detect(self, image_rgb: np.ndarray) -> Face | None:
        faces = self.detect_all(image_rgb)
        return max(faces, key=_area) if faces else None

    def track(self, image_rgb: np.ndarray) -> Face | None:
        _check_image(image_rgb)
        face = None
        near_first = self._last is not None and self._since_full + 1 < max(self.redetect_every, 1)
        if near_first:
            self.near_searches += 1
            face = self._detect_near(image_rgb, self._last)
            self._since_full += 1
        if face is None:
            self.full_searches += 1
            self._since_full = 0
            face = self._pick(self._detect_all(image_rgb, still=False))
            if face is None and self._last is not None and not near_first and self.near_after_full_miss:
                self.near_searches += 1
                face = self._detect_near(image_rgb, self._last)
        if face is None:
            self._last = None  # lost: the next frame searches the whole frame
            return None
        self._last = face
        self._smoothed = self._smooth(face)
        return self._smoothed

    def _pick(self, faces: list[Face]) -> Face | None:
        """The tracked face if it is still there, else the largest."""
        if not faces:
            return None
        if self._smoothed is not None:
            overlap = max(faces, key=lambda f: box_iou(f.box, self._smoothed.box))
            if box_iou(overlap.box, self._smoothed.box) >= self.snap_iou:
                return overlap
        return max(faces, key=_area)

    def _smooth(self, face: Face) -> Face:
        prev = self._smoothed
        if prev is None or self.smoothing == 0.0 or box_iou(prev.box, face.box) < self.snap_iou:
            return Face(face.box.copy(), face.score, _copy(face.landmarks), _copy(face.landmarks203))
        a = self.smoothing
        return Face(
            box=a * prev.box + (1 - a) * face.box,
            score=face.score,
            landmarks=_blend(prev.landmarks, face.landmarks, a),
            landmarks203=_blend(prev.landmarks203, face.landmarks203, a),
        )


def _copy(x: np.ndarray | None) -> np.ndarray | None:
    return None if x is None else x.copy()


def _blend(prev: np.ndarray | None, new: np.ndarray | None, a: float) -> np.ndarray | None:
    if new is None or prev is None or prev.shape != new.shape:
        return _copy(new)
    return a * prev + (1 - a) * new


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")


def haar_cascade_path() -> Path:
    """OpenCV's shipped frontal-face cascade; a clear error where this OpenCV has none."""
    if not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError(
            f"OpenCV {cv2.__version__} has no cv2.CascadeClassifier (OpenCV 5 moved the Haar cascades to "
            "opencv-contrib and ships no cascade files); install `opencv-python>=4.8,<5`"
        )
    data = getattr(cv2, "data", None)
    path = Path(getattr(data, "haarcascades", "")) / HAAR_CASCADE
    if not path.is_file():
        raise RuntimeError(
            f"OpenCV {cv2.__version__} ships no {HAAR_CASCADE} (looked in {path.parent}); "
            "install `opencv-python>=4.8,<5`, whose wheels include cv2/data/"
        )
    return path


class HaarFaceDetector(TrackingDetector):
    """OpenCV's frontal-face Haar cascade (no landmarks, so crops are not roll-corrected).

    The whole-frame search runs on a grey image downscaled to at most `max_side` pixels on its
    longer side (`still_max_side` for `detect`). The near search looks in a window `near_margin`
    face sides around the last face, scaled so that face is about `near_face_px` pixels, for faces
    `near_sizes` times its size. Measured on d0.mp4 (512x512, face ~300 px) on this workplace's
    2-core CPU under load: whole frame ~50 ms, near search ~12 ms; 64 px and (0.8, 1.25) were as
    steady as 96 px and (0.7, 1.4) at about half the time, and a scale factor of 1.1 instead of
    1.05 halves it again but doubles the size jitter (box side std 4 -> 8 px over the clip).

    Args:
        min_face: smallest face to find over the whole frame, as a fraction of the shorter image side.
        scale_factor, min_neighbors: `detectMultiScale` settings of the whole-frame search. 1.1 and 5
            are OpenCV's defaults; 1.05 found false faces on astronaut.png and s6.jpg.
    """

    def __init__(
        self,
        *,
        redetect_every: int = 10,
        smoothing: float = 0.5,
        max_side: int = 480,
        still_max_side: int = 800,
        min_face: float = 0.08,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        near_face_px: int = 64,
        near_margin: float = 0.6,
        near_sizes: tuple[float, float] = (0.8, 1.25),
        near_scale_factor: float = 1.05,
    ) -> None:
        super().__init__(redetect_every=redetect_every, smoothing=smoothing)
        path = haar_cascade_path()
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV could not load {path}")
        self.max_side, self.still_max_side = max_side, still_max_side
        self.min_face, self.scale_factor, self.min_neighbors = min_face, scale_factor, min_neighbors
        self.near_face_px, self.near_margin, self.near_sizes = near_face_px, near_margin, near_sizes
        self.near_scale_factor = near_scale_factor

    def _run(self, gray: np.ndarray, f: float, offset: tuple[float, float], **kwargs) -> list[Face]:
        """detectMultiScale3 on `gray` (the image scaled by `f`, cropped at `offset`) -> faces in image pixels."""
        boxes, _, weights = self.cascade.detectMultiScale3(gray, outputRejectLevels=True, **kwargs)
        faces = []
        for (x, y, w, h), score in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            box = np.array([x, y, x + w, y + h], dtype=np.float64) / f
            box += np.array([*offset, *offset])
            faces.append(Face(box=box, score=float(score)))
        return faces

    def _detect_all(self, image_rgb: np.ndarray, *, still: bool) -> list[Face]:
        h, w = image_rgb.shape[:2]
        f = min(1.0, (self.still_max_side if still else self.max_side) / max(h, w))
        gray = _gray(image_rgb, f)
        min_px = max(24, round(self.min_face * min(gray.shape)))
        return self._run(
            gray,
            f,
            (0.0, 0.0),
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_px, min_px),
        )

    def _detect_near(self, image_rgb: np.ndarray, last: Face) -> Face | None:
        h, w = image_rgb.shape[:2]
        side = last.side
        cx, cy = last.center
        half = side * (0.5 + self.near_margin)
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
        if x1 - x0 < 24 or y1 - y0 < 24:
            return None
        f = min(1.0, self.near_face_px / side)
        gray = _gray(image_rgb[y0:y1, x0:x1], f)
        lo, hi = max(24, int(self.near_sizes[0] * side * f)), int(np.ceil(self.near_sizes[1] * side * f))
        if hi > min(gray.shape):
            hi = min(gray.shape)
        if lo > hi:
            return None
        # finer scale steps than the whole-frame search (less size jitter) are cheap in this small window
        faces = self._run(
            gray, f, (x0, y0), scaleFactor=self.near_scale_factor, minNeighbors=3, minSize=(lo, lo), maxSize=(hi, hi)
        )
        if not faces:
            return None
        return min(faces, key=lambda face: float(np.linalg.norm(face.center - last.center)))


def _gray(image_rgb: np.ndarray, f: float) -> np.ndarray:
    gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    if f < 1.0:
        size = (max(1, round(gray.shape[1] * f)), max(1, round(gray.shape[0] * f)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray
