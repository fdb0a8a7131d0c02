"""The face detector a run uses: InsightFace with the landmark models where their files and
onnxruntime are there, else OpenCV's Haar cascade."""

from __future__ import annotations

import logging
from pathlib import Path

from .detector import (
    INSIGHTFACE_DETECTOR,
    INSIGHTFACE_LANDMARKS,
    LIVEPORTRAIT_LANDMARKS,
    FaceDetector,
    HaarFaceDetector,
)
from .insightface import InsightFaceDetector

log = logging.getLogger(__name__)


def create_detector(
    weights_dir: str | Path | None = None, *, redetect_every: int = 10, smoothing: float = 0.5
) -> FaceDetector:
    """InsightFace + landmark models when their three files are under `weights_dir` (or its
    `pretrained_weights/`, the official repository's layout) and onnxruntime is installed, else
    OpenCV's Haar cascade.
    """
    if weights_dir is not None:
        root = Path(weights_dir).expanduser()
        names = (INSIGHTFACE_DETECTOR, INSIGHTFACE_LANDMARKS, LIVEPORTRAIT_LANDMARKS)
        for base in (root, root / "pretrained_weights"):
            files = [base / name for name in names]
            if all(p.is_file() for p in files):
                break
        else:
            missing = [name for name in names if not (root / name).is_file()]
            log.info(
                "no face landmark models in %s (missing %s); using OpenCV's Haar cascade", root, ", ".join(missing)
            )
            return HaarFaceDetector(redetect_every=redetect_every, smoothing=smoothing)
        try:
            import onnxruntime  # noqa: F401  (the optional extra: `pip install lp-live[onnx]`)
        except ImportError:
            log.warning(
                "the InsightFace and landmark models are in %s but onnxruntime is not installed "
                "(pip install onnxruntime); using OpenCV's Haar cascade, without landmarks",
                base,
            )
        else:
            return InsightFaceDetector(*files, redetect_every=redetect_every, smoothing=smoothing)
    return HaarFaceDetector(redetect_every=redetect_every, smoothing=smoothing)
