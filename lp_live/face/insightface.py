"""The official cropper's models through onnxruntime: InsightFace buffalo_l + LivePortrait's landmark.onnx.

* det_10g.onnx (SCRFD): the image resized into a 512x512 canvas (aspect kept, zero padding at the
  bottom/right), RGB, (x - 127.5) / 128; outputs scores, box distances and 5 keypoints at strides
  8, 16, 32 with 2 anchors per cell; score threshold 0.15 (the CLI's), NMS at IoU 0.4.
* 2d106det.onnx: a 192x192 crop centred on the detector box, 1.5 times its larger side, no
  rotation; RGB 0..255 unnormalised (the graph normalises); output (1, 212) in [-1, 1] crop units.
* landmark.onnx: a 224x224 crop around the 106 (or previous 203) points with scale 1.5,
  vy_ratio -0.1 and roll correction, RGB / 255; its third output is 203 points in [0, 1].

Written from the official sources (InsightFace `scrfd.py`/`retinaface.py`, `landmark.py`,
`face_align.transform`; LivePortrait `face_analysis_diy.py`, `human_landmark_runner.py`) and not
run against the real model files, which this workplace does not have.

Stills (`detect`) get both point sets and are cropped from the 106, as the official source crop.
Video (`track`) follows the official video path: after a detection, each frame re-runs
landmark.onnx around the previous frame's 203 points, and crops come from the 203 points.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from .crop import CropConfig, crop_transform
from .detector import Face, TrackingDetector

log = logging.getLogger(__name__)

DET_SIZE = 512  # the official cropper's det_size
DET_THRESH = 0.15  # the official CLI's det_thresh
NMS_IOU = 0.4
STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
LMK106_SIZE = 192
LMK203_CROP = CropConfig(dsize=224, scale=1.5, vy_ratio=-0.1, rotate=True)


def _session(path: Path, providers: list[str] | None):
    import onnxruntime as ort

    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), providers=providers)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression, InsightFace's variant (areas with the +1 pixel convention)."""
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x1[i], x1[order[1:]]) - np.maximum(x0[i], x0[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[order[1:]]) - np.maximum(y0[i], y0[order[1:]]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][overlap <= iou]
    return keep


class InsightFaceDetector(TrackingDetector):
    """SCRFD boxes, 106 InsightFace points and 203 LivePortrait points, via onnxruntime.

    Args:
        det_path, lmk106_path, lmk203_path: det_10g.onnx, 2d106det.onnx, landmark.onnx.
        providers: onnxruntime execution providers; default CUDA when available, else CPU.
        max_jump: a tracked 203-point box whose centre moved more than this many box sides, or
            whose side changed by more than this fraction, counts as lost (landmark.onnx always
            returns points, face or not).
    """

    near_after_full_miss = False  # landmark.onnx returns points whether or not there is a face

    def __init__(
        self,
        det_path: str | Path,
        lmk106_path: str | Path,
        lmk203_path: str | Path,
        *,
        redetect_every: int = 10,
        smoothing: float = 0.5,
        providers: list[str] | None = None,
        det_thresh: float = DET_THRESH,
        max_jump: float = 0.4,
    ) -> None:
        super().__init__(redetect_every=redetect_every, smoothing=smoothing)
        self.det = _session(Path(det_path), providers)
        self.lmk106 = _session(Path(lmk106_path), providers)
        self.lmk203 = _session(Path(lmk203_path), providers)
        self.det_thresh = det_thresh
        self.max_jump = max_jump
        outputs = self.det.get_outputs()
        if len(outputs) != 9:
            raise ValueError(f"{det_path}: expected SCRFD with keypoints (9 outputs), got {len(outputs)}")
        self._det_input = self.det.get_inputs()[0].name
        self._lmk106_input = self.lmk106.get_inputs()[0].name
        self._lmk203_input = self.lmk203.get_inputs()[0].name
        self._anchor_centers = {
            s: np.repeat(np.stack(np.mgrid[: DET_SIZE // s, : DET_SIZE // s][::-1], axis=-1).reshape(-1, 2) * s,
                         ANCHORS_PER_CELL, axis=0).astype(np.float32)
            for s in STRIDES
        }  # fmt: skip

    # -- the three models -------------------------------------------------------------------------

    def boxes(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SCRFD: (N, 4) boxes and (N,) scores in image pixels, after NMS."""
        h, w = image_rgb.shape[:2]
        ratio = h / w  # the official expressions, for the same integer sizes
        new_h, new_w = (DET_SIZE, int(DET_SIZE / ratio)) if ratio > 1 else (int(DET_SIZE * ratio), DET_SIZE)
        f = new_h / h
        canvas = np.zeros((DET_SIZE, DET_SIZE, 3), np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(image_rgb, (new_w, new_h))
        blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outs = self.det.run(None, {self._det_input: blob})
        boxes, scores = [], []
        for i, stride in enumerate(STRIDES):
            score = outs[i].reshape(-1)
            dist = outs[i + 3].reshape(-1, 4) * stride
            keep = score >= self.det_thresh
            centers = self._anchor_centers[stride][keep]
            d = dist[keep]
            boxes.append(np.concatenate([centers - d[:, :2], centers + d[:, 2:]], axis=1))
            scores.append(score[keep])
        boxes_all = np.concatenate(boxes) / f
        scores_all = np.concatenate(scores)
        keep = nms(boxes_all, scores_all, NMS_IOU)
        return boxes_all[keep].astype(np.float64), scores_all[keep].astype(np.float64)

    def landmarks106(self, image_rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """2d106det around a detector box -> (106, 2) image pixels."""
        side = max(box[2] - box[0], box[3] - box[1])
        s = LMK106_SIZE / (side * 1.5)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        M = np.array([[s, 0, LMK106_SIZE / 2 - s * cx], [0, s, LMK106_SIZE / 2 - s * cy]])
        crop = cv2.warpAffine(image_rgb, M, (LMK106_SIZE, LMK106_SIZE), borderValue=0.0)
        blob = crop.astype(np.float32).transpose(2, 0, 1)[None]
        pred = self.lmk106.run(None, {self._lmk106_input: blob})[0].reshape(-1, 2)[-106:].astype(np.float64)
        pred = (pred + 1) * (LMK106_SIZE // 2)
        return (pred - M[:, 2]) / s  # invert the crop (scale and shift only)

    def landmarks203(self, image_rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        """landmark.onnx around 106 or 203 points -> (203, 2) image pixels."""
        M = crop_transform(Face(box=np.zeros(4), score=0.0, landmarks=points), LMK203_CROP)
        size = LMK203_CROP.dsize
        crop = cv2.warpAffine(image_rgb, M, (size, size), flags=cv2.INTER_LINEAR)
        blob = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        pred = self.lmk203.run(None, {self._lmk203_input: blob})[2].reshape(-1, 2).astype(np.float64) * size
        M_c2o = np.linalg.inv(np.vstack([M, [0.0, 0.0, 1.0]]))
        return pred @ M_c2o[:2, :2].T + M_c2o[:2, 2]

    # -- the tracking policy's two searches --------------------------------------------------------

    def _detect_all(self, image_rgb: np.ndarray, *, still: bool) -> list[Face]:
        boxes, scores = self.boxes(image_rgb)
        faces = []
        for box, score in zip(boxes, scores):
            lmk106 = self.landmarks106(image_rgb, box)
            lmk203 = self.landmarks203(image_rgb, lmk106)
            if still:  # crops from the 106 points, as the official source crop
                faces.append(Face(box=box, score=float(score), landmarks=lmk106, landmarks203=lmk203))
            else:  # crops from the 203 points, as the official video path; the same box as near searches
                faces.append(Face(box=_points_box(lmk203), score=float(score), landmarks203=lmk203))
        return faces

    def _detect_near(self, image_rgb: np.ndarray, last: Face) -> Face | None:
        if last.landmarks203 is None:
            return None
        lmk203 = self.landmarks203(image_rgb, last.landmarks203)
        box, prev = _points_box(lmk203), _points_box(last.landmarks203)
        side, prev_side = max(box[2:] - box[:2]), max(prev[2:] - prev[:2])
        moved = np.linalg.norm((box[:2] + box[2:]) / 2 - (prev[:2] + prev[2:]) / 2) / prev_side
        if moved > self.max_jump or abs(side / prev_side - 1) > self.max_jump:
            return None
        return Face(box=box, score=last.score, landmarks=None, landmarks203=lmk203)


def _points_box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)])
