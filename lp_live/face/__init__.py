"""Face detection, tracking, cropping and paste-back, offline from what pip installed."""

from .crop import DRIVING_CROP, SOURCE_CROP, Crop, CropConfig, crop_face, crop_transform
from .detector import Face, FaceDetector, HaarFaceDetector
from .factory import create_detector
from .paste import PasteBack, feather_mask

__all__ = [
    "DRIVING_CROP",
    "SOURCE_CROP",
    "Crop",
    "CropConfig",
    "Face",
    "FaceDetector",
    "HaarFaceDetector",
    "PasteBack",
    "create_detector",
    "crop_face",
    "crop_transform",
    "feather_mask",
]
